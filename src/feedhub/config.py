"""config.toml in and out.

config.toml is the operator's intent. It is read with tomllib and checked key
by key, so that a mistake is reported with the file and line that hold it; it
is edited with tomlkit, so that `feedhub add/remove` keep the operator's
comments and layout, under a lock and by atomic replace.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import tomlkit
import tomlkit.items

from feedhub import __version__
from feedhub._files import atomic_write, create_new, locked
from feedhub.models import (
    Config,
    HubConfig,
    LanguageConfig,
    SourceConfig,
    normalize_language,
)
from feedhub.store import DATABASE_ENV, is_database_url

DEFAULT_CONFIG = "config.toml"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


class ConfigError(Exception):
    """A config problem a person can fix: names the file, the line and the key."""

    def __init__(self, message: str, path: Path | None = None, line: int | None = None):
        self.message = message
        self.path = path
        self.line = line
        where = f"{path}:{line}: " if path and line else (f"{path}: " if path else "")
        super().__init__(where + message)


class InvalidValue(ValueError):
    """A value error whose message helps: it is shown after the expected form."""


def parse_duration(value: object) -> int:
    """'90s', '15m', '2h', '1d' or a number of seconds -> whole seconds, at least 1."""
    seconds = parse_delay(value)
    if seconds < 1:
        raise ValueError(value)
    return int(seconds)


def parse_delay(value: object) -> float:
    """Like parse_duration, but fractions and zero are fine: '0.5s', 0."""
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    else:
        raise ValueError(value)
    if seconds < 0:
        raise ValueError(value)
    return seconds


def format_duration(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def default_user_agent(hub: HubConfig) -> str:
    return f"feedhub/{__version__} (+{hub.contact or hub.base_url})"


# --- reading -----------------------------------------------------------------


def load_config(path: Path | str) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            "config file not found (give one with --config or FEEDHUB_CONFIG)", path
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file: {exc}", path) from None
    return parse_config(text, path)


def parse_config(text: str, path: Path) -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = re.search(r"line (\d+)", str(exc))
        raise ConfigError(
            f"not valid TOML: {exc}", path, int(line.group(1)) if line else None
        ) from None
    return _Reader(text, path).config(data)


class _Reader:
    """Turns the parsed TOML into a Config, raising ConfigError at the first
    bad key with the line it stands on."""

    def __init__(self, text: str, path: Path):
        self.lines = text.splitlines()
        self.path = path

    def fail(self, section: str, index: int | None, key: str | None, message: str) -> ConfigError:
        return ConfigError(message, self.path, self._locate(section, index, key))

    def _locate(self, section: str, index: int | None, key: str | None) -> int | None:
        """Line of `key` in table `section` (the `index`-th one for arrays of
        tables), else of the table's header."""
        current: str | None = ""  # "": the top level, before any [table]
        seen, header_line = -1, None
        for number, raw in enumerate(self.lines, 1):
            line = raw.strip()
            if match := re.match(r"^\[\[\s*([^\]]+?)\s*\]\]", line):
                current = match.group(1)
                if current == section:
                    seen += 1
            elif match := re.match(r"^\[\s*([^\]]+?)\s*\]", line):
                current = match.group(1).replace('"', "").replace(" ", "")
            else:
                if (
                    current == section
                    and (index is None or seen == index)
                    and key
                    and re.match(rf"^\"?{re.escape(key)}\"?\s*=", line)
                ):
                    return number
                continue
            if current == section and (index is None or seen == index) and header_line is None:
                header_line = number
        return header_line

    def config(self, data: dict[str, Any]) -> Config:
        for key in data:
            if key not in ("hub", "languages", "sources"):
                raise self._unknown(key, ("hub", "languages", "sources"), "", None, "the top level")
        hub = self.hub(self._table(data, "hub"))
        languages = {}
        for tag, table in self._table(data, "languages").items():
            section = f"languages.{tag}"
            if normalize_language(tag) is None:
                raise self.fail(section, None, None, f"[{section}]: {tag!r} is not a language tag")
            if "-" in tag:
                raise self.fail(section, None, None,
                                f"[{section}]: feeds are per primary language, "
                                f"use [languages.{tag.split('-')[0].lower()}]")
            if not isinstance(table, dict):
                raise self.fail(section, None, None, f"[{section}] must be a table")
            languages[tag.lower()] = self.language(section, table)
        raw_sources = data.get("sources", [])
        if not isinstance(raw_sources, list):
            raise self.fail("sources", None, None, "'sources' must be an array of tables: [[sources]]")
        sources = tuple(self.source(i, table) for i, table in enumerate(raw_sources))
        self._no_duplicates(sources)
        return Config(self.path, hub, languages, sources)

    def _table(self, data: dict[str, Any], name: str) -> dict[str, Any]:
        table = data.get(name, {})
        if not isinstance(table, dict):
            raise self.fail(name, None, None, f"'{name}' must be a table: [{name}]")
        return table

    def _unknown(self, key: str, allowed: tuple[str, ...], section: str, index: int | None,
                 where: str) -> ConfigError:
        hint = difflib.get_close_matches(key, allowed, n=1)
        suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
        return self.fail(
            section, index, key,
            f"unknown key {key!r} in {where}{suggestion}; known keys: {', '.join(allowed)}",
        )

    def _get(self, table: dict[str, Any], key: str, convert: Callable[[Any], Any], expected: str,
             section: str, where: str, index: int | None = None, default: Any = None) -> Any:
        if key not in table:
            return default
        value = table[key]
        try:
            return convert(value)
        except (TypeError, ValueError) as exc:
            detail = f" ({exc})" if isinstance(exc, InvalidValue) else ""
            raise self.fail(
                section, index, key, f"{where} {key!r}: expected {expected}, got {value!r}{detail}"
            ) from None

    def hub(self, table: dict[str, Any]) -> HubConfig:
        defaults = HubConfig()
        allowed = tuple(f for f in HubConfig.__dataclass_fields__)
        for key in table:
            if key not in allowed:
                raise self._unknown(key, allowed, "hub", None, "[hub]")
        base = self.path.parent

        def get(key: str, convert: Callable[[Any], Any], expected: str) -> Any:
            return self._get(table, key, convert, expected, "hub", "[hub]",
                             default=getattr(defaults, key))

        return HubConfig(
            title=get("title", _text, "a non-empty string"),
            base_url=get("base_url", normalize_base_url, "an absolute http(s) URL"),
            output_dir=base / get("output_dir", _text, "a path"),
            database=_database(os.environ.get(DATABASE_ENV, "").strip()
                               or get("database", _text, "a path or a postgresql:// URL"), base),
            local_base=base / HubConfig.local_base,
            items_per_feed=get("items_per_feed", _positive_int, "a whole number above 0"),
            archive_page_size=get("archive_page_size", _count, "a whole number (0: no archives)"),
            default_interval=get("default_interval", parse_duration, "a duration like '30m'"),
            default_language=get("default_language", _language, "a language tag like 'en'"),
            user_agent=get("user_agent", _text, "a non-empty string"),
            contact=get("contact", _text, "a URL or mailto: address"),
            allow_private_networks=get("allow_private_networks", _bool, "true or false"),
            timeout=get("timeout", parse_duration, "a duration like '30s'"),
            max_response_bytes=get("max_response_bytes", _positive_int, "a number of bytes"),
            max_connections=get("max_connections", _positive_int, "a whole number above 0"),
            max_per_host=get("max_per_host", _positive_int, "a whole number above 0"),
            host_spacing=get("host_spacing", parse_delay, "a duration like '1s' (0 for none)"),
            claim_lease=get("claim_lease", parse_duration, "a duration like '2m'"),
            websub_hubs=get("websub_hubs", _hub_urls,
                            'a list of absolute http(s) URLs, like ["https://pubsubhubbub.appspot.com/"]'),
            pages=get("pages", _bool, "true or false"),
            templates=self._templates(table),
        )

    def _templates(self, table: dict[str, Any]) -> Path | None:
        """[hub] templates, every template in it compiled now: a broken one
        is refused like any bad setting (a daemon keeps its old config)."""
        if "templates" not in table:
            return None
        directory = self.path.parent / self._get(table, "templates", _text, "a directory",
                                                 "hub", "[hub]", default=None)
        from feedhub.pages import TemplateError, check_templates  # Jinja2: only when asked

        try:
            check_templates(directory)
        except TemplateError as exc:
            raise self.fail("hub", None, "templates", f"[hub] templates: {exc}") from None
        return directory

    def language(self, section: str, table: dict[str, Any]) -> LanguageConfig:
        allowed = ("title", "subtitle", "credit")
        for key in table:
            if key not in allowed:
                raise self._unknown(key, allowed, section, None, f"[{section}]")
        where = f"[{section}]"
        credit = self._get(table, "credit", _credit_template, "a credit template using "
                           "{source}, {source_name}, {link}, {author}, {date}", section, where)
        return LanguageConfig(
            title=self._get(table, "title", _text, "a non-empty string", section, where),
            subtitle=self._get(table, "subtitle", _text, "a non-empty string", section, where),
            credit=credit,
        )

    def source(self, index: int, table: Any) -> SourceConfig:
        where = f"[[sources]] #{index + 1}"
        if not isinstance(table, dict):
            raise self.fail("sources", index, None, f"{where} must be a table")
        allowed = tuple(SourceConfig.__dataclass_fields__)
        for key in table:
            if key not in allowed:
                raise self._unknown(key, allowed, "sources", index, where)
        for key in ("name", "url"):
            if key not in table:
                raise self.fail("sources", index, None, f"{where}: missing required key {key!r}")

        def get(key: str, convert: Callable[[Any], Any], expected: str) -> Any:
            return self._get(table, key, convert, expected, "sources", where, index)

        language = get("language", _language_or_auto, "a language tag like 'fa' or 'auto'")
        return SourceConfig(
            name=get("name", _text, "a non-empty string"),
            url=get("url", _http_url, "an absolute http(s) URL"),
            language=None if language == "auto" else language,
            interval=get("interval", parse_duration, "a duration like '30m'"),
            fulltext=get("fulltext", _fulltext, '"auto", "always" or "never"') or "auto",
            publish=get("publish", _publish_policy, '"full", "summary" or "link"') or "full",
            rights=get("rights", _text, "a licence text or URL"),
        )

    def _no_duplicates(self, sources: tuple[SourceConfig, ...]) -> None:
        names: set[str] = set()
        urls: set[str] = set()
        for index, source in enumerate(sources):
            if source.name in names:
                raise self.fail("sources", index, "name",
                                f"[[sources]] #{index + 1}: duplicate name {source.name!r}")
            if source.url in urls:
                raise self.fail("sources", index, "url",
                                f"[[sources]] #{index + 1}: duplicate url {source.url!r}")
            names.add(source.name)
            urls.add(source.url)


def _database(value: str | Path, base: Path) -> Path | str:
    """A postgresql:// URL as written (libpq reads it: sslmode, host lists,
    a password); anything else a SQLite file, relative to the config file.
    FEEDHUB_DATABASE, when set, takes the place of the configured value, so
    a password need not sit in config.toml."""
    return str(value) if is_database_url(str(value)) else base / value


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(value)
    return value.strip()


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(value)
    return value


def _positive_int(value: Any) -> int:
    if _count(value) < 1:
        raise ValueError(value)
    return value


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(value)
    return value


def _publish_policy(value: Any) -> str:
    if value not in ("full", "summary", "link"):
        raise ValueError(value)
    return value


def _fulltext(value: Any) -> str:
    """"auto" | "always" | "never"; true/false (the first format) mean always/never."""
    if isinstance(value, bool):
        return "always" if value else "never"
    if value not in ("auto", "always", "never"):
        raise ValueError(value)
    return value


def _language(value: Any) -> str:
    tag = normalize_language(_text(value))
    if tag is None:
        raise ValueError(value)
    return tag


def _language_or_auto(value: Any) -> str:
    return "auto" if value == "auto" else _language(value)


def http_url_problem(url: str) -> str | None:
    """Why `url` cannot stand in config.toml as a URL to request (or as
    base_url), or None: the fetcher's own rule, so that no configured URL
    can fail inside the HTTP client, and no space or control character
    (a URL cut in two, or pasted with a tab, is a typo, never meant)."""
    if match := re.search(r"[\s\x00-\x1f\x7f-\x9f]", url):
        what = "a space" if match.group() == " " else f"the character {match.group()!r}"
        return f"it contains {what}: percent-encode it, as %20 for a space"
    from feedhub.fetch import url_problem  # not at the top: parser workers import
    # this module (normalize_language) and need no HTTP client

    return url_problem(url)


def _http_url(value: Any) -> str:
    url = _text(value)
    if problem := http_url_problem(url):
        raise InvalidValue(problem)
    return url


def _hub_urls(value: Any) -> tuple[str, ...]:
    """[hub] websub_hubs: the hubs pinged after each regeneration. A hub
    listed twice would be pinged twice for every change: refused."""
    if not isinstance(value, list):
        raise ValueError(value)
    urls: list[str] = []
    for number, entry in enumerate(value, 1):
        try:
            url = _http_url(entry)
        except ValueError as exc:
            why = f": {exc}" if isinstance(exc, InvalidValue) else ""
            raise InvalidValue(f"entry {number}, {entry!r}, is not an absolute http(s) URL"
                               f"{why}") from None
        if url in urls:
            raise InvalidValue(f"{url} is listed twice")
        urls.append(url)
    return tuple(urls)


def normalize_base_url(value: Any) -> str:
    """[hub] base_url as the hub uses it (ending in "/"); ValueError if it
    cannot be one (an InvalidValue says why). `feedhub init` checks its
    --base-url with this too."""
    url = _http_url(value)
    return url if url.endswith("/") else url + "/"


def _credit_template(value: Any) -> str:
    from feedhub.credits import check_template

    template = _text(value)
    try:
        check_template(template)
    except ValueError as exc:
        raise InvalidValue(str(exc)) from None
    return template


# --- editing the source list ------------------------------------------------


def duplicate_of(config: Config, source: SourceConfig) -> str | None:
    """Why `source` cannot be added to `config`, or None."""
    for existing in config.sources:
        if existing.url == source.url:
            return f"{source.url} is already a source (named {existing.name!r})"
        if existing.name == source.name:
            return f"a source named {source.name!r} already exists"
    return None


def add_source(path: Path, source: SourceConfig) -> Config:
    """Append a [[sources]] table to config.toml; refuses a duplicate name or
    URL. Returns the new config."""

    def check(config: Config) -> None:
        if reason := duplicate_of(config, source):
            raise ConfigError(reason, path)

    return add_sources(path, [source], check=check)[0]


def add_sources(path: Path, sources: list[SourceConfig],
                check: Callable[[Config], None] | None = None
                ) -> tuple[Config, list[tuple[SourceConfig, str]]]:
    """Append many sources in one edit (an OPML import); duplicates of what
    is configured, or of each other, are skipped. Returns the new config and
    the skipped sources with the reason."""
    skipped: list[tuple[SourceConfig, str]] = []

    def edit(doc: tomlkit.TOMLDocument, config: Config) -> None:
        if check is not None:
            check(config)
        for source in sources:
            if reason := duplicate_of(config, source):
                skipped.append((source, reason))
                continue
            config = replace(config, sources=(*config.sources, source))
            table = tomlkit.table()
            table["name"] = source.name
            table["url"] = source.url
            if source.language:
                table["language"] = source.language
            if source.interval:
                table["interval"] = format_duration(source.interval)
            if source.fulltext != "auto":
                table["fulltext"] = source.fulltext
            if source.publish != "full":
                table["publish"] = source.publish
            if source.rights:
                table["rights"] = source.rights
            if "sources" in doc:
                table.trivia.indent = "\n"  # a blank line between [[sources]] tables
            else:
                doc.add(tomlkit.nl())
                doc.append("sources", tomlkit.aot())
            doc["sources"].append(table)

    return _edit(path, edit), skipped


def remove_source(path: Path, name_or_url: str) -> tuple[SourceConfig, Config]:
    """Delete the [[sources]] table named (or with the URL) `name_or_url`."""
    removed: list[SourceConfig] = []

    def edit(doc: tomlkit.TOMLDocument, config: Config) -> None:
        source = config.find_source(name_or_url)
        if source is None:
            raise ConfigError(f"no source named {name_or_url!r} (see `feedhub list`)", path)
        index = config.sources.index(source)
        del doc["sources"][index]
        removed.append(source)

    config = _edit(path, edit)
    return removed[0], config


def set_source_url(path: Path, name: str, url: str) -> Config:
    """Point a source at a new URL (a permanent redirect), keeping the rest."""

    def edit(doc: tomlkit.TOMLDocument, config: Config) -> None:
        source = config.find_source(name)
        if source is None:
            raise ConfigError(f"no source named {name!r}", path)
        doc["sources"][config.sources.index(source)]["url"] = url

    return _edit(path, edit)


def _edit(path: Path, edit: Callable[[tomlkit.TOMLDocument, Config], None]) -> Config:
    """Read-modify-write config.toml under a lock; the result is validated
    before it replaces the file, so a failed edit changes nothing."""
    path = Path(path)
    with locked(path):
        config = load_config(path)
        doc = tomlkit.parse(path.read_text(encoding="utf-8"))
        edit(doc, config)
        text = tomlkit.dumps(doc).rstrip("\n") + "\n"
        new_config = parse_config(text, path)
        atomic_write(path, text.encode("utf-8"))
    return new_config


# --- a new hub -----------------------------------------------------------------

_STARTER = """\
# feedhub configuration, written by `feedhub init`.
#
# This file says what the hub should do: the hub's own settings, one
# [languages.<code>] table per output feed, and the list of upstream
# [[sources]]. What has happened (stored items, ETags, errors, next poll
# times) lives in the database, not here. The example config.toml in
# feedhub's source tree (and the README, "Configuration") has every key.
#
# `feedhub add URL` / `feedhub remove` edit the [[sources]] list in place
# and keep your comments. A running `feedhub run` notices any change to this
# file within a few seconds.
#
# Durations are written as a number and a unit: "90s", "15m", "2h", "1d".
# Relative paths are relative to the directory holding this file.

[hub]
# The hub's name, shown in feeds/index.html and index.opml.
title = {title}

# Public URL where the output directory is served. Used for each feed's
# self link and to build the permanent tag: ids of published entries, so
# choose it once and do not change it afterwards. (`feedhub serve` and
# `feedhub run --serve` serve it on http://127.0.0.1:8080/ by default.)
base_url = {base_url}

# Where feeds/<lang>.atom, the HTML pages, index.html and index.opml are written.
output_dir = {output_dir}

# SQLite database holding items and polling state; a "postgresql://host/dbname"
# URL selects PostgreSQL. The environment variable FEEDHUB_DATABASE, when set,
# wins over this line (so a password need not be written here).
database = {database}

# How often a source is polled when it sets no interval of its own.
default_interval = "30m"

# Language of items whose language nothing declares and detection cannot tell.
default_language = "en"

# A URL (or mailto:) where site owners can reach whoever runs this hub;
# it goes into the User-Agent. Without it, base_url is used.
# contact = "mailto:you@example.org"

# Sources on private, loopback and link-local addresses are refused (a guard
# against a source URL pointed at your own network). Only turn this on if you
# really poll feeds on an internal network.
# allow_private_networks = true


# ---------------------------------------------------------------------------
# Languages: one Atom feed per language, written to feeds/<code>.atom.
# Items in a language with no table here get a feed too, titled
# "<hub title> (<code>)". Add a table per language to name its feed in its
# own language, e.g. [languages.fa] with title = "اخبار".
#
# credit is the line ending every entry, a template with these placeholders:
#   {{source}}       the source's name, linked to the original article
#   {{source_name}}  the source's name as plain text
#   {{link}}         the URL of the original article
#   {{author}}       the original author, where upstream names one
#   {{date}}         the original publication date: format it with strftime
#                  codes, e.g. {{date:%d.%m.%Y}} gives 28.12.2022
# ---------------------------------------------------------------------------

[languages.en]
# title = "My news"                  # default: the hub's title and " (en)"
# subtitle = "Articles republished in full from their original sources"
credit = "{{source}} {{date:%d.%m.%Y}}"


# ---------------------------------------------------------------------------
# Sources: the upstream feeds to poll. None yet: `feedhub add URL` appends
# one [[sources]] table per feed at the end of this file, like this one:
#
# [[sources]]
# name = "Example News"              # shown in credits (required)
# url = "https://example.org/feed.xml"   # the RSS, Atom or JSON feed (required)
# language = "en"                    # else declared by the feed, or detected
# interval = "1h"                    # else default_interval
# fulltext = "auto"                  # "auto", "always" or "never": fetch the
#                                    # article page when the feed has a teaser
# ---------------------------------------------------------------------------
"""


def starter_config(title: str, base_url: str, output_dir: str = "feeds",
                   database: str = "feedhub.db") -> str:
    """The text of a new hub's config.toml: commented, no sources yet.
    ValueError if `title` or `base_url` cannot stand in it (an InvalidValue
    says why). Paths are written as given (relative ones are from the file)."""
    text = _STARTER.format(title=tomlkit.string(_text(title)).as_string(),
                           base_url=tomlkit.string(normalize_base_url(base_url)).as_string(),
                           output_dir=tomlkit.string(_text(output_dir)).as_string(),
                           database=tomlkit.string(_text(database)).as_string())
    parse_config(text, Path(DEFAULT_CONFIG))  # a template bug must not reach a file
    return text


def write_starter_config(path: Path, title: str, base_url: str, output_dir: str = "feeds",
                         database: str = "feedhub.db") -> Config:
    """Create config.toml at `path` from starter_config, atomically; never
    over an existing file (FileExistsError). Returns the config written."""
    path = Path(path)
    text = starter_config(title, base_url, output_dir, database)
    create_new(path, text.encode("utf-8"))
    return parse_config(text, path)
