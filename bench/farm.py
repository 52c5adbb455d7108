"""A deterministic synthetic "feed farm" for benchmarks: many RSS and Atom
feeds, generated from a seed and served over HTTP on 127.0.0.1.

Standard library only, so it also runs under a venv that has nothing but
the library being compared with feedhub.

Generation (``Farm``): feed ``i`` is RSS 2.0 when ``i`` is even and Atom 1.0
when odd. A third (``i % 3 == 0``) carry the full HTML of each item (5-10 KB
of paragraphs with links, some relative, an image, ``<strong>``/``<em>``
and, now and then, a ``<script>`` and an ``onclick=`` for a sanitizer to
remove); the rest carry a summary of 1-3 sentences. Most feeds are English;
``i % 10 == 1`` German, ``2`` French, ``3`` Persian (with ZWNJ). Feeds with
``i % 50 == 7`` are encoded in ISO-8859-1 and use Latin-1 accents. Dates
are fixed, counted back from 2026-01-01T00:00Z, never from the clock.
Everything is a function of ``(n_feeds, items, seed)`` and of the
sequence of ``grow`` and ``touch`` calls. ``touch`` changes every feed's
channel date (RSS ``lastBuildDate``, Atom ``<updated>``), hence its bytes,
ETag and Last-Modified, and leaves its items as they were.

Real content (``--realworld DIR --copies K``): every file of DIR is also
served, byte for byte, K times, at ``/real/{copy}/{name}``; see
``RealFarm``.

Serving (``FarmServer``): conditional GET (strong ETag, Last-Modified),
cached gzip, keep-alive, counters at ``GET /_stats``, ``POST /_reset`` and
``POST /_grow?fraction=0.1&items=5`` and ``POST /_touch``.

By hand (see bench/README.md)::

    python bench/farm.py serve --feeds 1000 --items 30 --seed 42 --port 0
    python bench/farm.py serve --feeds 10000 --urls-file /tmp/urls.txt
    python bench/farm.py info --feeds 1000
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import json
import os
import random
import signal
import socket
import socketserver
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from email.utils import formatdate, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import NamedTuple
from urllib.parse import parse_qs, urlsplit

__all__ = ["Farm", "FarmServer", "RealFarm", "Rendered"]

BASE_TS = 1767225600  # 2026-01-01T00:00:00Z
HOUR = 3600
GZIP_LEVEL = 1  # nginx's default; 6 compresses 17% smaller at a quarter of the speed


def _split(text: str) -> list[str]:
    return text.split()


# ---------------------------------------------------------------------------
# Vocabularies. Persian words with a zero-width non-joiner are spelled with
# an explicit \u200c so the source shows where it is.

_ZWNJ = "\u200c"

_EN_WORDS = _split("""
the a of and to in on for with from by about after before over under new old
city council market energy climate river school data network water policy report
people government company study research team project plan budget question answer
today yesterday morning evening week month year season history future world
country region village harbor bridge road train station airport museum library
garden forest mountain valley island coast desert weather storm rain snow summer
winter spring autumn music film book novel poem theatre painting gallery festival
science physics biology chemistry medicine hospital doctor patient health food
bread coffee tea kitchen recipe dinner farmer harvest price trade export import
bank loan interest growth inflation worker union strike factory engine software
hardware computer internet server browser privacy security update release version
language translation writer editor reader newspaper magazine story interview
election vote minister parliament court judge law rule reform debate protest
football match player coach league goal record champion race runner cyclist
quietly quickly slowly openly finally nearly almost rarely often always never
says said shows showed finds found opens opened closes closed builds built plans
planned raises raised cuts warns warned expects expected returns returned moves
large small early late local national public private rural urban green bright
dark long short open modern ancient careful sudden steady major minor key
R&D AI open-source long-term follow-up
""")

_EN_LATIN1_EXTRA = _split("""
café naïve résumé façade fiancée protégé déjà über Zürich Müller Straße
Göteborg São Paulo Ångström Reykjavík Øresund Málaga señor jalapeño piñata
crème brûlée soufflé smörgåsbord Brontë Beyoncé Björk Curaçao
""")

_DE_WORDS = _split("""
der die das und oder mit von für über unter nach vor bei aus zum zur ein eine
Stadt Rathaus Markt Energie Klima Fluss Schule Daten Netz Wasser Bericht Leute
Regierung Firma Studie Forschung Mannschaft Projekt Haushalt Frage Antwort heute
gestern Morgen Abend Woche Monat Jahr Geschichte Zukunft Welt Land Dorf Hafen
Brücke Straße Bahnhof Flughafen Museum Bücherei Garten Wald Berg Tal Insel Küste
Wetter Sturm Regen Schnee Sommer Winter Frühling Herbst Musik Buch Roman Gedicht
Theater Gemälde Wissenschaft Medizin Krankenhaus Ärztin Gesundheit Brot Kaffee
Küche Rezept Bauer Ernte Preis Handel Zinsen Wachstum Arbeiter Gewerkschaft
Fabrik Motor Rechner Sicherheit Größe Übersetzung Schriftsteller Zeitung Wahl
Ministerin Gericht Gesetz Reform Mannschaft Spieler Trainer Meisterschaft
sagt zeigt findet öffnet schließt baut plant erhöht kürzt warnt erwartet kehrt
groß klein früh spät öffentlich ländlich grün hell dunkel lang kurz modern
vorsichtig plötzlich ständig wichtig schön müde fröhlich
""")

_FR_WORDS = _split("""
le la les des une un et ou avec pour sur sous dans après avant chez du au aux
ville mairie marché énergie climat fleuve école données réseau eau rapport gens
gouvernement entreprise étude recherche équipe projet budget question réponse
aujourd'hui hier matin soir semaine mois année histoire avenir monde pays région
village port pont route gare aéroport musée bibliothèque jardin forêt montagne
vallée île côte météo tempête pluie neige été hiver printemps automne musique
film livre roman poème théâtre peinture science médecine hôpital médecin santé
pain café cuisine recette dîner agriculteur récolte prix commerce intérêt
croissance ouvrier syndicat grève usine moteur logiciel ordinateur sécurité
langue traduction écrivain journal élection ministre tribunal loi réforme débat
football joueur entraîneur championnat coureur
dit montre trouve ouvre ferme construit prévoit augmente réduit prévient attend
grand petit tôt tard public privé rural urbain vert clair sombre long court
moderne ancien prudent soudain élevé général célèbre déçu
""")

_FA_WORDS = [
    *_split("""
ایران تهران کتاب خانه مردم دولت کشور جهان امروز دیروز فردا سال روز شب زندگی کار
دانشگاه دانشجو فرهنگ هنر تاریخ اقتصاد سیاست ورزش فوتبال موسیقی شعر شاعر نویسنده
داستان فیلم سینما علم فناوری اینترنت رایانه شهر روستا دریا کوه آب هوا باران برف
بهار تابستان پاییز زمستان خبر گزارش مقاله پژوهش آموزش مدرسه معلم کودک خانواده
دوست زبان فارسی جامعه محیط زیست انرژی بازار قیمت نفت صنعت پزشکی بیمارستان سلامت
غذا نان چای بزرگ کوچک جدید قدیمی زیبا مهم خوب بسیار همه این آن برای از به با در
که و را یک هر اما نیز است بود شد کرد گفت داد رفت آمد
"""),
    "می\u200cشود", "می\u200cکند", "می\u200cگوید", "نمی\u200cشود", "نمی\u200cتوان",
    "کتاب\u200cها", "خانه\u200cها", "دانشگاه\u200cها", "برنامه\u200cریزی",
    "هم\u200cاکنون", "بین\u200cالمللی", "گفت\u200cوگو", "می\u200cخواهد",
    "پژوهش\u200cها", "سال\u200cها", "روزنامه\u200cنگار", "بی\u200cنظیر",
    "می\u200cتوانند", "فیلم\u200cها", "رسانه\u200cها", "هفته\u200cنامه",
]

_AUTHORS = {
    "en": ["Alice Walker", "Ben Carter", "Chloe Nguyen", "David Okafor", "Emma Lindqvist",
           "Farid Haddad", "Grace Kim", "Henry Osei", "Isla MacLeod", "Jonas Weber"],
    "de": ["Jürgen Groß", "Anna Müller", "Lukas Schäfer", "Sophie Weiß", "Björn Köhler",
           "Marie Hoffmann", "Felix Bäcker", "Lea Schröder"],
    "fr": ["Hélène Dupré", "François Lefèvre", "Amélie Roux", "Jérôme Gaël", "Céline Moreau",
           "Noël Bérard", "Inès Faure", "Léa Girard"],
    "fa": ["مریم احمدی", "علی رضایی", "سارا محمدی", "رضا کریمی", "نرگس حسینی",
           "امیر جعفری", "لیلا موسوی", "حسین صادقی"],
    "latin1": ["José Núñez", "Zoë Brontë", "Søren Åberg", "Renée Lefèvre", "Jürgen Groß",
               "Inês Simões", "Björn Ødegård", "Françoise Hébert"],
}

_CATEGORIES = {
    "en": ["Technology", "Science", "Politics", "Business", "Culture", "Sports", "Health",
           "Travel", "Opinion", "World"],
    "de": ["Technik", "Wissenschaft", "Politik", "Wirtschaft", "Kultur", "Sport", "Gesundheit",
           "Reisen", "Meinung", "Welt"],
    "fr": ["Technologie", "Sciences", "Politique", "Économie", "Culture", "Sport", "Santé",
           "Voyages", "Opinion", "Monde"],
    "fa": ["فناوری", "علم", "سیاست", "اقتصاد", "فرهنگ", "ورزش", "سلامت", "سفر", "دیدگاه",
           "جهان"],
    "latin1": ["Café Society", "Économie", "Zürich Notes", "Küche", "Señales", "Culture",
               "Technology", "Travel"],
}

_SEE_ALSO = {
    "en": ("Read more", "Related", "Our earlier report"),
    "de": ("Mehr dazu", "Verwandte Artikel", "Unser früherer Bericht"),
    "fr": ("Lire la suite", "À lire aussi", "Notre article précédent"),
    "fa": ("بیشتر بخوانید", "مطالب مرتبط", "گزارش پیشین ما"),
    "latin1": ("Read more", "Café reading", "Our earlier report"),
}

# Language of the style -> declared language tag.
_LANG_TAG = {"en": "en", "de": "de", "fr": "fr", "fa": "fa", "latin1": "en"}


def _style_for(i: int) -> str:
    if i % 50 == 7:
        return "latin1"
    return {1: "de", 2: "fr", 3: "fa"}.get(i % 10, "en")


def _words_for(style: str) -> list[str]:
    if style == "latin1":
        # English with a generous share of accented Latin-1 words.
        return _EN_WORDS + _EN_LATIN1_EXTRA * 4
    return {"en": _EN_WORDS, "de": _DE_WORDS, "fr": _FR_WORDS, "fa": _FA_WORDS}[style]


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _attr(text: str) -> str:
    return _esc(text).replace('"', "&quot;")


def _iso(ts: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _http_date(ts: int) -> str:
    return formatdate(ts, usegmt=True)


class _Style:
    """Word list, sentence pool and HTML paragraph pool of one language
    style, built once per farm from a Random of its own. Everything it
    hands out is already escaped for XML text (the paragraphs are HTML)."""

    N_SENTENCES = 4096
    N_PARAGRAPHS = 512

    def __init__(self, name: str, seed: int):
        self.name = name
        self.lang = _LANG_TAG[name]
        self.words = _words_for(name)
        self.needs_escape = any("&" in w for w in self.words)
        self.authors = [_esc(a) for a in _AUTHORS[name]]
        self.categories = [_esc(c) for c in _CATEGORIES[name]]
        self.see_also = tuple(_esc(t) for t in _SEE_ALSO[name])
        self.persian = name == "fa"
        rng = random.Random(f"{seed}:style:{name}")
        self.sentences = [_esc(self.sentence(rng)) for _ in range(self.N_SENTENCES)]
        self.paragraphs: list[str] = []
        self.paragraph_sizes: list[int] = []
        for _ in range(self.N_PARAGRAPHS):
            para = self._paragraph(rng)
            self.paragraphs.append(para)
            self.paragraph_sizes.append(len(para.encode("utf-8")))

    def sentence(self, rng: random.Random) -> str:
        """6-18 words, not escaped."""
        words = rng.choices(self.words, k=6 + int(rng.random() * 13))
        if self.persian:
            if len(words) > 8:
                words[len(words) // 2] += "،"
            return " ".join(words) + ("؟" if rng.random() < 0.1 else ".")
        if len(words) > 8 and rng.random() < 0.5:
            words[len(words) // 2] += ","
        words[0] = words[0][:1].upper() + words[0][1:]
        return " ".join(words) + ("?" if rng.random() < 0.08 else ".")

    def title(self, rng: random.Random) -> str:
        """4-10 words, escaped."""
        words = rng.choices(self.words, k=4 + int(rng.random() * 7))
        if not self.persian:
            words[0] = words[0][:1].upper() + words[0][1:]
        title = " ".join(words)
        return _esc(title) if self.needs_escape else title

    def _paragraph(self, rng: random.Random) -> str:
        target = rng.randint(400, 950)
        out: list[str] = []
        size = 0
        sentences = self.sentences
        while size < target:
            words = sentences[int(rng.random() * len(sentences))].split(" ")
            k = rng.randrange(len(words) - 1)
            roll = rng.random()
            if roll < 0.25:
                words[k] = f"<strong>{words[k]}</strong>"
            elif roll < 0.45:
                words[k] = f"<em>{words[k]}</em>"
            elif roll < 0.60:
                words[k] = f'<a href="/topics/topic-{rng.randrange(500)}">{words[k]}</a>'
            elif roll < 0.68:
                words[k] = (f'<a href="https://example.org/{self.lang}/ref/{rng.randrange(10000)}">'
                            f"{words[k]}</a>")
            sentence = " ".join(words)
            out.append(sentence)
            size += len(sentence.encode("utf-8")) + 1
        return "<p>" + " ".join(out) + "</p>"


class Rendered(NamedTuple):
    """One version of one feed, as served."""

    body: bytes
    etag: str  # quoted, strong
    last_modified: str  # HTTP date
    last_modified_ts: int
    content_type: str
    gzip: bytes | None  # None until computed when the farm was made with gzip=False


class _Item(NamedTuple):
    """One item; title, author, categories and summary are escaped for XML."""

    serial: int
    title: str
    link: str
    guid: str
    permalink: bool
    author: str
    published: int
    updated: int
    categories: tuple[str, ...]
    summary: str
    content: str | None


def _gzip(body: bytes) -> bytes:
    # A gzip stream with mtime 0, so it is deterministic too.
    return zlib.compress(body, GZIP_LEVEL, wbits=31)


def _digest(body: bytes) -> str:
    return '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'


class Farm:
    """``n_feeds`` feeds of ``items`` items each, a pure function of the
    arguments and of the sequence of ``grow`` calls. Bodies are rendered at
    construction and again only for the feeds a ``grow`` changes."""

    def __init__(self, n_feeds: int = 1000, items: int = 30, seed: int = 42, *,
                 gzip: bool = True, threads: int | None = None, declare_language: bool = True):
        if n_feeds < 1 or items < 1:
            raise ValueError("n_feeds and items must be >= 1")
        self.n_feeds = n_feeds
        self.items = items
        self.seed = seed
        self.eager_gzip = gzip
        self.declare_language = declare_language  # False: no <language>, no xml:lang
        self.grow_calls = 0
        self._threads = threads or max(1, min(8, os.cpu_count() or 1))  # for hashing and gzip
        master = random.Random(seed)
        self._feed_seeds = [master.getrandbits(64) for _ in range(n_feeds)]
        # Per feed: the sizes of its batches of items; batch 0 is the initial one.
        self._batches: list[list[int]] = [[items] for _ in range(n_feeds)]
        self._styles: dict[str, _Style] = {}
        self._grow_rng = random.Random(f"{seed}:grow")
        self._grow_order: list[int] = []
        self._grow_pos = 0
        self.touches = 0  # minutes added to every feed's channel date by touch()
        self._lock = threading.Lock()
        self._versions: list[Rendered] = [None] * n_feeds  # type: ignore[list-item]
        self._render_all(range(n_feeds))

    # --- static properties of feed i ------------------------------------

    def format(self, i: int) -> str:
        """"rss" (RSS 2.0) for even i, "atom" (Atom 1.0) for odd i."""
        return "rss" if i % 2 == 0 else "atom"

    def has_content(self, i: int) -> bool:
        return i % 3 == 0

    def style(self, i: int) -> str:
        """"en", "de", "fr", "fa" or "latin1" (English text with accents)."""
        return _style_for(i)

    def language(self, i: int) -> str:
        return _LANG_TAG[_style_for(i)]

    def encoding(self, i: int) -> str:
        return "iso-8859-1" if i % 50 == 7 else "utf-8"

    def content_type(self, i: int) -> str:
        kind = "rss" if i % 2 == 0 else "atom"
        return f"application/{kind}+xml; charset={self.encoding(i)}"

    def path(self, i: int) -> str:
        return f"/feeds/{i}.xml"

    def paths(self) -> list[str]:
        return [self.path(i) for i in range(self.n_feeds)]

    def index(self, path: str) -> int | None:
        """The feed index for a path from ``path()``, or None."""
        if not (path.startswith("/feeds/") and path.endswith(".xml")):
            return None
        digits = path[7:-4]
        if not digits.isdigit() or (len(digits) > 1 and digits[0] == "0"):
            return None
        i = int(digits)
        return i if i < self.n_feeds else None

    # --- dynamic state --------------------------------------------------

    def item_count(self, i: int) -> int:
        return sum(self._batches[i])

    def version(self, i: int) -> Rendered:
        """The current version of feed i (with its gzip computed if needed)."""
        v = self._versions[i]
        if v.gzip is None:
            v = v._replace(gzip=_gzip(v.body))
            self._versions[i] = v  # a benign race: every thread computes the same bytes
        return v

    def body(self, i: int) -> bytes:
        return self._versions[i].body

    def gzip_body(self, i: int) -> bytes:
        return self.version(i).gzip  # type: ignore[return-value]

    def etag(self, i: int) -> str:
        return self._versions[i].etag

    def last_modified(self, i: int) -> str:
        return self._versions[i].last_modified

    def total_bytes(self) -> int:
        return sum(len(v.body) for v in self._versions)

    def total_gzip_bytes(self) -> int:
        return sum(len(self.version(i).gzip or b"") for i in range(self.n_feeds))

    def grow(self, fraction: float = 0.1, items: int = 5) -> list[int]:
        """Prepend ``items`` new items to ``round(fraction * n_feeds)`` feeds
        (at least one when fraction > 0) and return their indices, sorted.
        Feeds are taken in turn from a seeded permutation, so consecutive
        calls pick disjoint sets until every feed has grown once."""
        if not 0 <= fraction <= 1:
            raise ValueError("fraction must be between 0 and 1")
        if items < 1:
            raise ValueError("items must be >= 1")
        with self._lock:
            self.grow_calls += 1
            k = round(fraction * self.n_feeds)
            if fraction > 0:
                k = max(k, 1)
            chosen: list[int] = []
            taken: set[int] = set()
            while len(chosen) < k:
                if self._grow_pos >= len(self._grow_order):
                    self._grow_order = list(range(self.n_feeds))
                    self._grow_rng.shuffle(self._grow_order)
                    self._grow_pos = 0
                i = self._grow_order[self._grow_pos]
                self._grow_pos += 1
                if i not in taken:
                    taken.add(i)
                    chosen.append(i)
            chosen.sort()
            for i in chosen:
                self._batches[i].append(items)
            self._render_all(chosen)
            return chosen

    def touch(self) -> int:
        """Move every feed's channel date (and so its bytes, ETag and
        Last-Modified) one minute on; the items stay exactly as they were:
        the "changed bytes, same items" case. Returns how many changed."""
        with self._lock:
            self.touches += 1
            self._render_all(range(self.n_feeds))
            return self.n_feeds

    # --- generation -----------------------------------------------------

    def _style(self, name: str) -> _Style:
        style = self._styles.get(name)
        if style is None:
            style = self._styles[name] = _Style(name, self.seed)
        return style

    def _render_all(self, indices) -> None:
        """Render the given feeds, then hash and gzip them in threads (hashlib
        and zlib release the GIL; overlapping them with the rendering does not
        pay, as each handover waits for the GIL's switch interval)."""
        # The cyclic GC finds nothing here (the items are acyclic), yet its
        # passes cost a third of the time on a 10,000-feed farm.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            rendered = [(i, *self._render(i)) for i in indices]
        finally:
            if gc_was_enabled:
                gc.enable()

        def finish(job: tuple[int, bytes, int]) -> Rendered:
            i, body, lm_ts = job
            return Rendered(body, _digest(body), _http_date(lm_ts), lm_ts, self.content_type(i),
                            _gzip(body) if self.eager_gzip else None)

        with ThreadPoolExecutor(self._threads) as pool:
            for job, version in zip(rendered, pool.map(finish, rendered, chunksize=16), strict=True):
                self._versions[job[0]] = version

    def _items(self, i: int, style: _Style) -> list[_Item]:
        """All items of feed i, oldest first; each batch from a Random of its own."""
        out: list[_Item] = []
        serial = 0
        for b, count in enumerate(self._batches[i]):
            rng = random.Random((self._feed_seeds[i] << 16) + b + 1)  # + 0: the feed's metadata
            for _ in range(count):
                out.append(self._item(i, serial, rng, style))
                serial += 1
        return out

    def _item(self, i: int, n: int, rng: random.Random, style: _Style) -> _Item:
        """Item n (0 = oldest) of feed i; its text fields are escaped for XML."""
        r = rng.random
        offset = (i * 7) % 60 * 60  # feeds differ by some minutes
        published = BASE_TS - offset - (self.items - 1 - n) * HOUR + int(r() * 1200)
        updated = published + 60 + int(r() * 1740)  # still before the next item's published
        title = style.title(rng)
        link = f"https://site{i}.example/articles/{n}"
        permalink = i % 4 == 0
        guid = link if permalink else f"tag:site{i}.example,2026:articles/{n}"
        authors, cats = style.authors, style.categories
        author = authors[int(r() * len(authors))]
        c1 = int(r() * len(cats))
        categories = (cats[c1],) if r() < 0.5 else (cats[c1], cats[(c1 + 1 + int(r() * 3)) % len(cats)])
        if i % 3 == 0:
            summary = " ".join(rng.choices(style.sentences, k=1 + int(r() * 2)))
            content = self._content(i, n, rng, style, title, categories[0])
        else:
            summary = " ".join(rng.choices(style.sentences, k=1 + int(r() * 3)))
            content = None
        return _Item(n, title, link, guid, permalink, author, published, updated, categories,
                     summary, content)

    def _content(self, i: int, n: int, rng: random.Random, style: _Style, title: str,
                 category: str) -> str:
        """5-10 KB of HTML (UTF-8 bytes) from the style's paragraph pool, with
        item-specific links, an image and, sometimes, a script and an onclick."""
        r = rng.random
        target = 5200 + int(r() * 3000)
        src = f"https://cdn.site{i}.example/images/{n}.jpg" if r() < 0.5 else f"/images/{i}/{n}.jpg"
        alt = title.replace('"', "&quot;")
        parts = [f'<p><img src="{src}" alt="{alt}" width="640" height="360"></p>']
        size = len(parts[0])
        pool, sizes = style.paragraphs, style.paragraph_sizes
        npool = len(pool)
        while size < target:
            k = int(r() * npool)
            parts.append(pool[k])
            size += sizes[k]
        other = int(r() * (n + 50))
        a, b, c = style.see_also
        parts.insert(
            2 + int(r() * (len(parts) - 1)),
            f'<p>{a}: <a href="https://site{i}.example/articles/{other}">{title}</a>'
            f' - <a href="/topics/{i}-{n}">{category}</a>'
            f' - <a href="../archive/{n}.html">{b}</a></p>',
        )
        if r() < 0.2:
            parts.insert(1 + int(r() * len(parts)),
                         f'<script>window.track && track("site{i}", {n});</script>')
        if r() < 0.2:
            parts.insert(1 + int(r() * len(parts)),
                         f'<p><a href="/share/{n}" onclick="share({n}); return false">{c}</a></p>')
        return "\n".join(parts)

    def _render(self, i: int) -> tuple[bytes, int]:
        style = self._style(_style_for(i))
        meta = random.Random(self._feed_seeds[i] << 16)
        feed_title = f"{style.title(meta)} {i}"
        feed_desc = _esc(style.sentence(meta))
        items = self._items(i, style)
        lm_ts = items[-1].updated + 60 * self.touches
        items.reverse()  # newest first
        enc = self.encoding(i)
        if i % 2 == 0:
            text = self._rss(i, style, feed_title, feed_desc, lm_ts, items, enc)
        else:
            text = self._atom(i, style, feed_title, feed_desc, lm_ts, items, enc)
        if not self.declare_language:  # the reader must detect it
            text = text.replace(f"<language>{style.lang}</language>\n", "", 1).replace(
                f' xml:lang="{style.lang}"', "", 1)
        return text.encode(enc), lm_ts

    @staticmethod
    def _rss(i: int, style: _Style, title: str, desc: str, lm_ts: int, items: list[_Item],
             enc: str) -> str:
        out = [
            f'<?xml version="1.0" encoding="{enc.upper()}"?>\n'
            '<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/"'
            ' xmlns:dc="http://purl.org/dc/elements/1.1/">\n<channel>\n'
            f"<title>{title}</title>\n"
            f"<link>https://site{i}.example/</link>\n"
            f"<description>{desc}</description>\n"
            f"<language>{style.lang}</language>\n"
            f"<lastBuildDate>{_http_date(lm_ts)}</lastBuildDate>\n"
            "<generator>feedhub bench feed farm</generator>\n"
        ]
        for it in items:
            cats = "".join(f"<category>{c}</category>" for c in it.categories)
            content = ("" if it.content is None
                       else f"\n<content:encoded><![CDATA[{it.content}]]></content:encoded>")
            out.append(
                f"<item>\n<title>{it.title}</title>\n<link>{it.link}</link>\n"
                f'<guid isPermaLink="{"true" if it.permalink else "false"}">{it.guid}</guid>\n'
                f"<dc:creator>{it.author}</dc:creator>\n"
                f"<pubDate>{_http_date(it.published)}</pubDate>\n{cats}\n"
                f"<description>{it.summary}</description>{content}\n</item>\n"
            )
        out.append("</channel>\n</rss>\n")
        return "".join(out)

    @staticmethod
    def _atom(i: int, style: _Style, title: str, desc: str, lm_ts: int, items: list[_Item],
              enc: str) -> str:
        out = [
            f'<?xml version="1.0" encoding="{enc.upper()}"?>\n'
            f'<feed xmlns="http://www.w3.org/2005/Atom" xml:lang="{style.lang}"'
            f' xml:base="https://site{i}.example/">\n'
            f"<id>tag:site{i}.example,2026:feed</id>\n"
            f"<title>{title}</title>\n"
            f"<subtitle>{desc}</subtitle>\n"
            f'<link rel="alternate" type="text/html" href="https://site{i}.example/"/>\n'
            f"<updated>{_iso(lm_ts)}</updated>\n"
            f"<author><name>{style.authors[i % len(style.authors)]}</name></author>\n"
            "<generator>feedhub bench feed farm</generator>\n"
        ]
        for it in items:
            cats = "".join(f'<category term="{c}"/>' for c in it.categories)
            content = ("" if it.content is None
                       else f'\n<content type="html">{_esc(it.content)}</content>')
            out.append(
                f"<entry>\n<id>{it.guid}</id>\n<title>{it.title}</title>\n"
                f'<link rel="alternate" type="text/html" href="{it.link}"/>\n'
                f"<author><name>{it.author}</name></author>\n"
                f"<published>{_iso(it.published)}</published>\n"
                f"<updated>{_iso(it.updated)}</updated>\n{cats}\n"
                f"<summary>{it.summary}</summary>{content}\n</entry>\n"
            )
        out.append("</feed>\n")
        return "".join(out)


_REAL_TYPES = {".xml": "application/xml", ".json": "application/feed+json",
               ".rss": "application/rss+xml", ".atom": "application/atom+xml"}


class RealFarm:
    """Real feeds served many times over: each file of ``directory`` (sorted
    by name) at ``/real/{copy}/{name}`` for ``copy`` in ``range(copies)``,
    byte for byte, so each copy is a distinct source with the same items
    (the item ids and links are not rewritten: a system that keys items by
    id or link across sources, not per source, would merge them). The
    Content-Type follows the extension; the bytes never change."""

    def __init__(self, directory: str | os.PathLike[str], copies: int):
        names = sorted(n for n in os.listdir(directory)
                       if os.path.splitext(n)[1].lower() in _REAL_TYPES)
        if not names:
            raise ValueError(f"no feed files in {directory}")
        self.copies = copies
        self.files: dict[str, Rendered] = {}
        for name in names:
            with open(os.path.join(directory, name), "rb") as fh:
                body = fh.read()
            ts = int(os.stat(os.path.join(directory, name)).st_mtime)
            self.files[name] = Rendered(body, _digest(body), _http_date(ts), ts,
                                        _REAL_TYPES[os.path.splitext(name)[1].lower()], _gzip(body))

    def paths(self) -> list[str]:
        return [f"/real/{c}/{n}" for c in range(self.copies) for n in self.files]

    def version(self, path: str) -> Rendered | None:
        parts = path.split("/")
        if len(parts) != 4 or parts[1] != "real" or not parts[2].isdigit():
            return None
        if int(parts[2]) >= self.copies:
            return None
        return self.files.get(parts[3])


# ---------------------------------------------------------------------------
# Serving

def _accepts_gzip(value: str) -> bool:
    """Whether an Accept-Encoding value allows gzip (q > 0)."""
    qs: dict[str, float] = {}
    for part in value.split(","):
        token, _, params = part.partition(";")
        token = token.strip().lower()
        if not token:
            continue
        q = 1.0
        for param in params.split(";"):
            key, _, val = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(val)
                except ValueError:
                    q = 0.0
        qs[token] = q
    for token in ("gzip", "x-gzip", "*"):
        if token in qs:
            return qs[token] > 0
    return False


def _etag_matches(header: str, etag: str) -> bool:
    """If-None-Match uses the weak comparison: W/ prefixes do not matter."""
    for tag in header.split(","):
        tag = tag.strip()
        if tag == "*":
            return True
        if tag.startswith("W/"):
            tag = tag[2:]
        if tag == etag:
            return True
    return False


_QUIET = (ConnectionError, TimeoutError, socket.timeout)
_CONTROL = ("/_stats", "/_reset", "/_grow", "/_touch")


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() must not wait for idle keep-alive connections
    request_queue_size = 1024
    allow_reuse_address = True

    def __init__(self, address, handler, farm: Farm, real: RealFarm | None = None):
        self.farm = farm
        self.real = real
        self.stats_lock = threading.Lock()
        self.counts = {"requests": 0, "200": 0, "304": 0, "other": 0, "bytes": 0}
        super().__init__(address, handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind would call socket.getfqdn(): a DNS look-up.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = port

    def handle_error(self, request, client_address) -> None:
        if isinstance(sys.exc_info()[1], _QUIET):
            return
        super().handle_error(request, client_address)

    def count(self, status: int, nbytes: int) -> None:
        key = "200" if status == 200 else "304" if status == 304 else "other"
        with self.stats_lock:
            self.counts["requests"] += 1
            self.counts[key] += 1
            self.counts["bytes"] += nbytes


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "feedfarm/1"
    sys_version = ""
    disable_nagle_algorithm = True
    timeout = 120  # idle keep-alive connections are closed after this long
    server: _HTTPServer

    def log_message(self, format, *args) -> None:  # quiet
        pass

    def _send(self, status: int, headers: list[tuple[str, str]], body: bytes = b"",
              *, head: bool = False, length: bool = True) -> None:
        """Status line, headers and body in one write."""
        lines = [f"{self.protocol_version} {status} {self.responses.get(status, ('',))[0]}\r\n"
                 f"Server: {self.server_version}\r\nDate: {self.date_time_string()}\r\n"]
        lines.extend(f"{k}: {v}\r\n" for k, v in headers)
        if length:
            lines.append(f"Content-Length: {len(body)}\r\n")
        if self.close_connection:
            lines.append("Connection: close\r\n")
        elif self.request_version == "HTTP/1.0":
            lines.append("Connection: keep-alive\r\n")
        lines.append("\r\n")
        data = "".join(lines).encode("latin-1")
        if not head and body:
            data += body
        self.wfile.write(data)

    def _json(self, status: int, obj) -> None:
        body = json.dumps(obj).encode()
        self._send(status, [("Content-Type", "application/json")], body)

    def _drain(self) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        while n > 0:
            chunk = self.rfile.read(min(n, 65536))
            if not chunk:
                break
            n -= len(chunk)

    def do_GET(self) -> None:
        self._feed(head=False)

    def do_HEAD(self) -> None:
        self._feed(head=True)

    def do_POST(self) -> None:
        self._drain()
        url = urlsplit(self.path)
        if url.path == "/_reset":
            with self.server.stats_lock:
                for key in self.server.counts:
                    self.server.counts[key] = 0
            self._json(200, {"ok": True})
        elif url.path == "/_grow":
            query = parse_qs(url.query)
            try:
                fraction = float(query.get("fraction", ["0.1"])[0])
                items = int(query.get("items", ["5"])[0])
                changed = self.server.farm.grow(fraction, items)
            except ValueError as exc:
                self._json(400, {"error": str(exc)})
                return
            self._json(200, {"changed": changed})
        elif url.path == "/_touch":
            self._json(200, {"touched": self.server.farm.touch()})
        elif url.path in _CONTROL:
            self._send(405, [("Allow", "GET" if url.path == "/_stats" else "POST")])
        else:
            self.server.count(404, 0)
            self._send(404, [("Content-Type", "text/plain")], b"not found\n")

    def _feed(self, head: bool) -> None:
        path = self.path.split("?", 1)[0]
        farm = self.server.farm
        i = farm.index(path)
        real = self.server.real.version(path) if i is None and self.server.real else None
        if i is None and real is None:
            if path == "/_stats" and not head:
                with self.server.stats_lock:
                    counts = dict(self.server.counts)
                self._json(200, counts)
            elif path in _CONTROL:
                self._send(405, [("Allow", "GET" if path == "/_stats" else "POST")])
            else:
                self.server.count(404, 0)
                self._send(404, [("Content-Type", "text/plain")], b"not found\n", head=head)
            return
        v = farm._versions[i] if i is not None else real
        assert v is not None
        headers = [("ETag", v.etag), ("Last-Modified", v.last_modified),
                   ("Vary", "Accept-Encoding")]
        inm = self.headers.get("If-None-Match")
        if inm is not None:
            not_modified = _etag_matches(inm, v.etag)
        else:
            ims = self.headers.get("If-Modified-Since")
            not_modified = False
            if ims:
                with contextlib.suppress(TypeError, ValueError, IndexError, OverflowError):
                    not_modified = parsedate_to_datetime(ims).timestamp() >= v.last_modified_ts
        if not_modified:
            self.server.count(304, 0)
            self._send(304, headers, length=False)
            return
        headers.append(("Content-Type", v.content_type))
        body = v.body
        if _accepts_gzip(self.headers.get("Accept-Encoding", "")):
            body = (farm.version(i).gzip if i is not None else v.gzip) or b""
            headers.append(("Content-Encoding", "gzip"))
        self.server.count(200, 0 if head else len(body))
        self._send(200, headers, body, head=head)


class FarmServer:
    """Serves a Farm over HTTP/1.1 on ``host``; ``port=0`` picks a free port."""

    def __init__(self, farm: Farm, host: str = "127.0.0.1", port: int = 0,
                 real: RealFarm | None = None):
        self.farm = farm
        self.real = real
        self._httpd = _HTTPServer((host, port), _Handler, farm, real)
        self.host, self.port = self._httpd.server_address[:2]
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in str(self.host) else self.host
        return f"http://{host}:{self.port}"

    def url(self, i: int) -> str:
        return self.base_url + self.farm.path(i)

    def urls(self) -> list[str]:
        return [self.base_url + p for p in self.farm.paths()]

    def real_urls(self) -> list[str]:
        return [self.base_url + p for p in self.real.paths()] if self.real else []

    def stats(self) -> dict[str, int]:
        with self._httpd.stats_lock:
            return dict(self._httpd.counts)

    def start(self) -> FarmServer:
        if self._thread is None:
            self._thread = threading.Thread(target=self._httpd.serve_forever,
                                            kwargs={"poll_interval": 0.1},
                                            name="feed-farm", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> FarmServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# ---------------------------------------------------------------------------
# Command line

def _build(args) -> tuple[Farm, float]:
    started = time.perf_counter()
    farm = Farm(args.feeds, args.items, args.seed, gzip=not args.lazy_gzip,
                declare_language=not args.undeclared_language)
    return farm, time.perf_counter() - started


def _serve(args) -> int:
    farm, took = _build(args)
    stop = threading.Event()

    def on_signal(signum, frame) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    real = RealFarm(args.realworld, args.copies) if args.realworld else None
    server = FarmServer(farm, args.host, args.port, real).start()
    line: dict = {"base_url": server.base_url, "feeds": farm.n_feeds,
                  "build_seconds": round(took, 3)}
    if args.urls_file:
        with open(args.urls_file, "w", encoding="utf-8") as fh:
            fh.writelines(u + "\n" for u in server.urls())
        line["urls_file"] = args.urls_file
        if real:
            real_file = os.path.splitext(args.urls_file)[0] + ".real.txt"
            with open(real_file, "w", encoding="utf-8") as fh:
                fh.writelines(u + "\n" for u in server.real_urls())
            line["real_urls_file"] = real_file
    else:
        line["real_urls"] = server.real_urls()
        line["urls"] = server.urls()
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
    return 0


def _info(args) -> int:
    farm, took = _build(args)
    started = time.perf_counter()
    gz = farm.total_gzip_bytes()
    sizes = sorted(len(farm.body(i)) for i in range(farm.n_feeds))
    print(json.dumps({
        "feeds": farm.n_feeds, "items": farm.items, "seed": farm.seed,
        "build_seconds": round(took, 3),
        "gzip_seconds": round(time.perf_counter() - started, 3) if args.lazy_gzip else None,
        "body_mb": round(sum(sizes) / 1e6, 2), "gzip_mb": round(gz / 1e6, 2),
        "body_bytes_min": sizes[0], "body_bytes_median": sizes[len(sizes) // 2],
        "body_bytes_max": sizes[-1],
    }))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="farm.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_ in (("serve", "build a farm and serve it until SIGTERM/SIGINT"),
                        ("info", "build a farm and print its build time and sizes as JSON")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--feeds", type=int, default=1000)
        p.add_argument("--items", type=int, default=30)
        p.add_argument("--seed", type=int, default=42)
        p.add_argument("--undeclared-language", action="store_true",
                       help="declare no language (no <language>, no xml:lang): a reader "
                            "that files by language must detect it")
        p.add_argument("--lazy-gzip", action="store_true",
                       help="gzip each body on its first gzip request instead of at build time")
        if name == "serve":
            p.add_argument("--host", default="127.0.0.1")
            p.add_argument("--port", type=int, default=0)
            p.add_argument("--urls-file", help="write the feed URLs here, one a line, "
                                               "instead of into the JSON line (the real ones "
                                               "into the same name with .real.txt)")
            p.add_argument("--realworld", metavar="DIR",
                           help="also serve every feed file of DIR, --copies times over")
            p.add_argument("--copies", type=int, default=20)
    args = parser.parse_args(argv)
    return _serve(args) if args.command == "serve" else _info(args)


if __name__ == "__main__":
    sys.exit(main())
