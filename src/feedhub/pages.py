"""Stored items -> HTML pages, one beside each Atom document, through Jinja2
templates an operator can override.

The templates ship in the package (feedhub/templates); `[hub] templates`
names a directory whose files shadow them one by one (Venus's template
search path), so a site changes its header without copying the rest.
Every template is compiled when the config is loaded (miniflux does so at
start): a syntax error is refused then, naming the file and the line.
Autoescaping is on; the article HTML, sanitized when it was stored, and
the credit line, built from escaped values, are the only Markup, marked in
page_entry. This module renders bytes; publish.py writes them.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from importlib.resources.abc import Traversable
from pathlib import Path
from types import TracebackType

import jinja2
from markupsafe import Markup

from feedhub import __version__
from feedhub.models import Config, FeedInfo, Link, StoredItem, is_rtl, primary_subtag
from feedhub.publish import ALL, ARCHIVE_DIR, SOURCES_DIR, archive_path, feed_title

PAGE = "page.html"  # a language, an archive page, all languages, a source
INDEX = "index.html"  # every page and every feed
# The templates feedhub ships; `page.html` and `index.html` are rendered,
# the others are included by them (an operator usually overrides those).
SHIPPED = (PAGE, INDEX, "base.html", "entry.html", "header.html", "footer.html", "style.css")

# The words of the pages' own frame, in the languages feedhub has credit
# lines for; others get English. A template may ignore them.
LABELS: dict[str, dict[str, str]] = {
    "en": {"older": "Older articles", "newer": "Newer articles", "feed": "Atom feed",
           "home": "All feeds and pages", "all": "All languages", "sources": "By source",
           "languages": "By language", "page": "Page", "opml": "All feeds as OPML",
           "empty": "No articles yet."},
    "de": {"older": "Ältere Artikel", "newer": "Neuere Artikel", "feed": "Atom-Feed",
           "home": "Alle Feeds und Seiten", "all": "Alle Sprachen", "sources": "Nach Quelle",
           "languages": "Nach Sprache", "page": "Seite", "opml": "Alle Feeds als OPML",
           "empty": "Noch keine Artikel."},
    "fr": {"older": "Articles plus anciens", "newer": "Articles plus récents", "feed": "Flux Atom",
           "home": "Tous les flux et pages", "all": "Toutes les langues", "sources": "Par source",
           "languages": "Par langue", "page": "Page", "opml": "Tous les flux en OPML",
           "empty": "Pas encore d’articles."},
    "es": {"older": "Artículos anteriores", "newer": "Artículos más recientes",
           "feed": "Canal Atom", "home": "Todos los canales y páginas",
           "all": "Todos los idiomas", "sources": "Por fuente", "languages": "Por idioma",
           "page": "Página", "opml": "Todos los canales en OPML",
           "empty": "Todavía no hay artículos."},
    "fa": {"older": "مطالب قدیمی‌تر", "newer": "مطالب جدیدتر", "feed": "خوراک اتم",
           "home": "همهٔ خوراک‌ها و صفحه‌ها", "all": "همهٔ زبان‌ها", "sources": "بر پایهٔ منبع",
           "languages": "بر پایهٔ زبان", "page": "صفحه", "opml": "همهٔ خوراک‌ها به صورت OPML",
           "empty": "هنوز مطلبی نیست."},
    "ps": {"older": "پخواني لیکنې", "newer": "نوې لیکنې", "feed": "اټم فیډ",
           "home": "ټول فیډونه او پاڼې", "all": "ټولې ژبې", "sources": "د سرچینې له مخې",
           "languages": "د ژبې له مخې", "page": "پاڼه", "opml": "ټول فیډونه د OPML په بڼه",
           "empty": "لا تر اوسه کومه لیکنه نشته."},
    "ar": {"older": "مقالات أقدم", "newer": "مقالات أحدث", "feed": "موجز Atom",
           "home": "كل الموجزات والصفحات", "all": "كل اللغات", "sources": "حسب المصدر",
           "languages": "حسب اللغة", "page": "صفحة", "opml": "كل الموجزات بصيغة OPML",
           "empty": "لا مقالات بعد."},
}


def labels_for(language: str | None) -> dict[str, str]:
    return LABELS.get(primary_subtag(language or "en"), LABELS["en"])


class TemplateError(Exception):
    """A template that cannot be compiled or rendered: names the file and
    the line, for the operator who edited it."""


# --- what the templates get (documented in README, "Web pages") -------------


@dataclass(frozen=True)
class PageSource:
    """Where an entry comes from."""

    name: str  # the source's name in config.toml
    site: str | None  # the upstream site (its feed's alternate link)
    title: str | None  # the upstream feed's own title
    page: str | None  # this hub's page of the source, relative to the page


@dataclass(frozen=True)
class PageEntry:
    anchor: str  # the article element's id: stable, so #anchor links keep working
    id: str  # the Atom entry's id
    title: str
    link: str | None  # the original article
    author: str  # the item's author, else the source's name
    published: datetime  # the original date (the item's own, or when first seen)
    updated: datetime
    language: str
    dir: str  # "rtl" or "ltr"
    content: Markup  # the article as the source's policy publishes it (sanitized HTML)
    credit: Markup  # the credit line, in the page's language (or the item's)
    source: PageSource
    categories: tuple[str, ...]
    enclosures: tuple[Link, ...]


@dataclass(frozen=True)
class Page:
    kind: str  # "language", "archive", "all", "source" or "index"
    title: str
    subtitle: str | None
    language: str  # the page's own language (a mixed page: the hub's default)
    dir: str  # "rtl" or "ltr"
    path: str  # where it is, relative to the output directory
    root: str  # the relative path from the page to the output directory ("", "../")
    feed: str | None  # the Atom document beside it, relative to the page
    feed_title: str | None
    url: str  # its public address (base_url + path)
    older: str | None = None  # the next older page, relative; None: none
    newer: str | None = None
    number: int | None = None  # an archive page's number
    updated: datetime | None = None  # the newest entry's update
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class IndexFeed:
    """One feed and its page, for index.html."""

    title: str
    language: str | None  # None: a source's own (mixed) feed
    dir: str
    feed: str  # relative to the output directory
    page: str | None  # its HTML page, when there is one on disk


# --- templates ---------------------------------------------------------------


@dataclass(frozen=True)
class Templates:
    environment: jinja2.Environment
    digest: str  # of every template's source and feedhub's version: what pages depend on


_lock = threading.Lock()
_compiled: dict[tuple[Path | None, str], Templates] = {}


def _shipped() -> Traversable:
    return importlib.resources.files("feedhub") / "templates"


def _sources(directory: Path | None) -> dict[str, bytes]:
    """Every template by name, the operator's shadowing the shipped ones."""
    found = {entry.name: entry.read_bytes() for entry in _shipped().iterdir()
             if entry.is_file() and not entry.name.startswith(".")}
    if directory is not None:
        if not directory.is_dir():
            raise TemplateError(f"{directory}: the templates directory is not there "
                                "([hub] templates)")
        for path in sorted(directory.rglob("*")):
            if path.is_file() and not path.name.startswith("."):
                found[path.relative_to(directory).as_posix()] = path.read_bytes()
    return found


def load_templates(directory: Path | None) -> Templates:
    """The templates, every one compiled (compiled once per content: a
    daemon picks up an edited template at its next publish). Raises
    TemplateError naming the file and line of the first that does not
    compile."""
    try:
        sources = _sources(directory)
    except OSError as exc:
        raise TemplateError(f"cannot read the templates: {exc}") from None
    digest = hashlib.sha256(repr((sorted(sources.items()), __version__)).encode()).hexdigest()
    with _lock:
        if (cached := _compiled.get((directory, digest))) is not None:
            return cached
    loaders: list[jinja2.BaseLoader] = [jinja2.PackageLoader("feedhub", "templates")]
    if directory is not None:
        loaders.insert(0, jinja2.FileSystemLoader(directory))
    environment = jinja2.Environment(
        # auto_reload off: no stat of every template on every include; an
        # edited template makes another digest, hence another environment
        loader=jinja2.ChoiceLoader(loaders), autoescape=True, undefined=jinja2.StrictUndefined,
        auto_reload=False,
        keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)
    environment.filters["date"] = _format_date
    for name in sorted(sources):
        if name.endswith((".html", ".css", ".txt", ".xml", ".svg", ".js")):
            try:
                environment.get_template(name)
            except jinja2.TemplateSyntaxError as exc:
                raise TemplateError(
                    f"{_where(exc.filename or name, directory)} line {exc.lineno}: {exc.message}"
                ) from None
            except UnicodeDecodeError as exc:
                raise TemplateError(f"{_where(name, directory)}: not UTF-8 ({exc})") from None
    templates = Templates(environment, digest)
    with _lock:
        _compiled[(directory, digest)] = templates
    return templates


def check_templates(directory: Path | None) -> None:
    """Compile every template (config loading refuses what does not)."""
    load_templates(directory)


def _where(filename: str, directory: Path | None) -> str:
    """A template's file as the operator knows it."""
    path = Path(filename)
    if directory is not None and not path.is_absolute() and (directory / path).exists():
        return str(directory / path)
    return str(path)


def _format_date(value: datetime, spec: str = "%Y-%m-%d") -> str:
    return value.strftime(spec)


def render(templates: Templates, name: str, **context: object) -> bytes:
    """A template rendered to UTF-8; a failure while rendering (an unknown
    variable, a filter that raised) is a TemplateError naming the template
    file and line where it happened."""
    try:
        return templates.environment.get_template(name).render(**context).encode("utf-8")
    except jinja2.TemplateSyntaxError as exc:  # compiled at load; kept for safety
        raise TemplateError(f"{exc.filename or name} line {exc.lineno}: {exc.message}") from None
    except Exception as exc:  # the template's own error, whatever it is
        raise TemplateError(f"{_template_frame(exc.__traceback__) or name}: "
                            f"{type(exc).__name__}: {exc}") from None


def _template_frame(trace: TracebackType | None) -> str | None:
    """The innermost frame of a template in a traceback ("file line N"):
    Jinja rewrites tracebacks so that template code appears with its
    file and line."""
    where = None
    while trace is not None:
        filename = trace.tb_frame.f_code.co_filename
        if not filename.endswith(".py") and not filename.startswith("<"):
            where = f"{filename} line {trace.tb_lineno}"
        trace = trace.tb_next
    return where


# --- building what the templates get ------------------------------------------


def anchor(atom_id: str) -> str:
    """An article's element id, the same on every page it appears on."""
    return "a-" + hashlib.sha1(atom_id.encode()).hexdigest()[:12]


def page_entry(config: Config, item: StoredItem, credit_language: str, body: str, credit: str,
               source_page: str | None) -> PageEntry:
    """`body` and `credit`: the article HTML as the source's policy publishes
    it and the credit line, as the Atom entry carries them (publish.py)."""
    feed: FeedInfo = item.feed
    return PageEntry(
        anchor=anchor(item.atom_id), id=item.atom_id, title=item.title or "(untitled)",
        link=item.link, author=item.author or item.source, published=item.published,
        updated=item.updated, language=item.language,
        dir="rtl" if is_rtl(item.language) else "ltr",
        content=Markup(body),  # sanitized when stored (enrich.sanitize_html)
        credit=Markup(credit),  # its values were escaped (credits.render_credit)
        source=PageSource(item.source, feed.alternate, feed.title, source_page),
        categories=item.categories,
        enclosures=tuple(link for link in item.enclosures if link.rel == "enclosure"))


def render_page(templates: Templates, config: Config, page: Page,
                entries: Sequence[PageEntry]) -> bytes:
    return render(templates, PAGE, hub=config.hub, page=page, entries=entries,
                  generator=f"feedhub {__version__}")


def render_index(templates: Templates, config: Config, page: Page,
                 languages: Sequence[IndexFeed], sources: Sequence[IndexFeed]) -> bytes:
    return render(templates, INDEX, hub=config.hub, page=page, languages=languages,
                  sources=sources, generator=f"feedhub {__version__}")


# --- the pages, one beside each Atom document ----------------------------------


def _page(config: Config, kind: str, path: str, title: str, language: str | None,
          feed: str | None, *, subtitle: str | None = None, older: str | None = None,
          newer: str | None = None, number: int | None = None) -> Page:
    language = language or config.hub.default_language
    return Page(kind=kind, title=title, subtitle=subtitle, language=language,
                dir="rtl" if is_rtl(language) else "ltr", path=path, root="../" * path.count("/"),
                feed=feed, feed_title=title if feed else None, url=config.hub.base_url + path,
                older=older, newer=newer, number=number, labels=labels_for(language))


def language_page(config: Config, language: str, archived_pages: int = 0) -> Page:
    """`<lang>.html` beside `<lang>.atom` (ALL: all.html, every language)."""
    settings = config.languages.get(language)
    older = f"{ARCHIVE_DIR}/{language}/{archived_pages}.html" if archived_pages else None
    return _page(config, "all" if language == ALL else "language", f"{language}.html",
                 feed_title(config, language), None if language == ALL else language,
                 f"{language}.atom", subtitle=settings.subtitle if settings else None,
                 older=older)


def archive_page(config: Config, language: str, number: int, last: int) -> Page:
    """`archive/<lang>/<n>.html` beside `<n>.atom`: older is n-1, newer is
    n+1, or the language's own page from the newest archive page."""
    settings = config.languages.get(language)
    return _page(config, "archive", page_path(language, number), feed_title(config, language),
                 language, f"{number}.atom", subtitle=settings.subtitle if settings else None,
                 older=f"{number - 1}.html" if number > 1 else None,
                 newer=f"{number + 1}.html" if number < last else f"../../{language}.html",
                 number=number)


def source_page(config: Config, name: str, slug: str) -> Page:
    """`sources/<slug>.html` beside the source's own feed."""
    source = config.find_source(name)
    return _page(config, "source", f"{SOURCES_DIR}/{slug}.html", f"{config.hub.title}: {name}",
                 source.language if source else None, f"{slug}.atom")


def index_page(config: Config) -> Page:
    return _page(config, "index", "index.html", config.hub.title, None, None)


def page_path(language: str, number: int) -> str:
    """Where an archive page's HTML lives, relative to the output directory."""
    return archive_path(language, number)[:-len(".atom")] + ".html"
