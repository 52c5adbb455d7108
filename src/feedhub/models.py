"""Plain data passed from one stage of the flow to the next.

Nothing here does I/O: each stage takes these values and hands new ones on,
so a stage can be tested with values built by hand.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import NamedTuple

RTL_LANGUAGES = frozenset({"ar", "fa", "ps", "ur", "he", "yi", "dv", "ckb", "sd", "ug", "syr"})


def primary_subtag(tag: str) -> str:
    """`fa-IR` -> `fa`: the feed an item is grouped into."""
    return tag.split("-", 1)[0].lower()


# RFC 5646 langtag without extensions and private use (feeds carry neither):
# language(-extlang), script, region, variants, each at most where it may be
_LANGUAGE_TAG = re.compile(r"^[a-z]{2,3}(-[a-z]{3}){0,3}(-[a-z]{4})?(-(?:[a-z]{2}|[0-9]{3}))?"
                           r"(-(?:[a-z0-9]{5,8}|[0-9][a-z0-9]{3}))*$", re.IGNORECASE)


def normalize_language(tag: str) -> str | None:
    """A well-formed BCP 47 tag in conventional case (`fa-IR`), or None.
    Here, not in config, which reads it too: enrich (in the parser workers,
    and their forkserver) then does not import the config's reading and
    writing (tomlkit, the store), 3.5 MB of RSS in each."""
    tag = tag.strip().replace("_", "-")
    if not _LANGUAGE_TAG.match(tag):
        return None
    primary, *rest = tag.split("-")
    variants = [p.lower() for p in rest if len(p) >= 5 or (p[:1].isdigit() and len(p) == 4)]
    if len(variants) != len(set(variants)):  # a repeated variant is not valid BCP 47
        return None
    return "-".join([primary.lower(), *(p.upper() if len(p) == 2 else p.title() if len(p) == 4
                                        and p.isalpha() else p.lower() for p in rest)])


def is_rtl(tag: str) -> bool:
    return primary_subtag(tag) in RTL_LANGUAGES


# ISO 639 codes that name no language: no linguistic content (py3langid says
# it of key blocks and base64, at confidence 1.0), undetermined, multiple,
# uncoded; and the range reserved for local use. None of them is a feed.
NOT_LANGUAGES = frozenset({"zxx", "und", "mul", "mis"})


def is_language(tag: str | None) -> bool:
    """A tag whose primary subtag names a language: something an item can be
    filed under."""
    if not tag:
        return False
    primary = primary_subtag(tag)
    return primary not in NOT_LANGUAGES and not "qaa" <= primary <= "qtz"


def estimate_time(moment: datetime, position: int) -> datetime:
    """A date the hub makes up (first seen, edited at) for the item at
    `position` in its feed: a microsecond earlier per place, so the items of
    one poll keep the feed's order (newest first) and never share a date --
    readers sort by it, and the W3C validator flags entries that share one
    (DuplicateUpdated)."""
    return moment - timedelta(microseconds=position)


# --- intent: what config.toml asks for -------------------------------------


@dataclass(frozen=True)
class SourceConfig:
    name: str
    url: str
    language: str | None = None
    interval: int | None = None  # seconds; None: the hub's default
    fulltext: str = "auto"  # "auto": fetch the page for teasers; "always"; "never"
    publish: str = "full"  # "full" text, a "summary", or only a "link" (republishing rights)
    rights: str | None = None  # licence text or URL, published as atom:rights


@dataclass(frozen=True)
class LanguageConfig:
    title: str | None = None
    subtitle: str | None = None
    credit: str | None = None  # a str.format template, see credits.py


@dataclass(frozen=True)
class LanguageContext:
    """What the hub knows, beyond an item's own text, when nothing declares
    the item's language: the feeds it is set up for and the language the
    source usually writes in. Plain data, so that worker processes get it."""

    default: str = "en"  # [hub] default_language
    configured: frozenset[str] = frozenset()  # primary subtags with a [languages.X] table
    usual: str | None = None  # the source's usual language; None: not known (yet)

    @property
    def known(self) -> frozenset[str]:
        """Languages detection may file an item under at ordinary confidence."""
        return self.configured | {primary_subtag(tag) for tag in (self.default, self.usual) if tag}


@dataclass(frozen=True)
class HubConfig:
    title: str = "feedhub"
    base_url: str = "http://localhost:8080/"
    output_dir: Path = Path("feeds")
    # a SQLite file (resolved against the config file's directory), or a
    # postgresql:// URL, kept as written (feedhub.store.open_store picks the backend)
    database: Path | str = Path("feedhub.db")
    items_per_feed: int = 50
    default_interval: int = 1800
    default_language: str = "en"
    user_agent: str | None = None
    contact: str | None = None
    allow_private_networks: bool = False
    timeout: float = 30.0
    max_response_bytes: int = 10 * 1024 * 1024
    max_connections: int = 10
    max_per_host: int = 2
    host_spacing: float = 1.0  # seconds between request starts to one host
    # how long a daemon's claim on a source lasts unless renewed (every third
    # of it, while the poll runs): a killed daemon's sources go to the others
    # after at most this long (issue 16)
    claim_lease: float = 120.0
    websub_hubs: tuple[str, ...] = ()  # WebSub hubs pinged after each regeneration
    archive_page_size: int = 20  # RFC 5005 archive pages; 0: no archives
    pages: bool = True  # an HTML page beside every Atom document (pages.py)
    templates: Path | None = None  # a directory whose templates shadow the shipped ones
    # beside the config file: what a PostgreSQL hub's local files are named after (see local_files)
    local_base: Path = Path("feedhub-postgresql")

    @property
    def local_files(self) -> Path:
        """What this node's own files are named after: the daemon lock
        (`.lock`), the publish lock (`.publish.lock`) and, in its directory,
        the language model cache. For SQLite, the database file itself, as
        always. For PostgreSQL, `feedhub-postgresql` beside the config file:
        these locks then keep one daemon and one publisher per node only;
        across nodes, the database's claims and advisory lock do (issue 16)."""
        return self.database if isinstance(self.database, Path) else self.local_base


@dataclass(frozen=True)
class Config:
    path: Path
    hub: HubConfig
    languages: dict[str, LanguageConfig] = field(default_factory=dict)
    sources: tuple[SourceConfig, ...] = ()

    def find_source(self, name_or_url: str) -> SourceConfig | None:
        """The first source with this name or URL (publishing asks once per
        entry: a dict, not a scan of 10,000 sources)."""
        return self._sources_by_key.get(name_or_url)

    @cached_property
    def _sources_by_key(self) -> dict[str, SourceConfig]:
        index: dict[str, SourceConfig] = {}
        for source in self.sources:  # the first match wins, as a scan in order finds it
            index.setdefault(source.name, source)
            index.setdefault(source.url, source)
        return index

    def interval_of(self, source: SourceConfig) -> int:
        return source.interval or self.hub.default_interval


# --- fetch ------------------------------------------------------------------


@dataclass(frozen=True)
class Validators:
    """What a server gave us to make the next request conditional."""

    etag: str | None = None
    last_modified: str | None = None


@dataclass(frozen=True)
class FetchResult:
    url: str  # the URL asked for
    final_url: str  # after redirects
    status: int
    content: bytes  # decoded body; empty for 304 and errors
    headers: dict[str, str]  # lower-case names
    fetched_at: datetime
    redirects: tuple[tuple[int, str], ...] = ()  # (status, location) per hop
    elapsed: float = 0.0

    @property
    def not_modified(self) -> bool:
        return self.status == 304

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def validators(self) -> Validators:
        return Validators(self.headers.get("etag"), self.headers.get("last-modified"))


# --- parse and enrich -------------------------------------------------------


@dataclass(frozen=True)
class Link:
    href: str
    rel: str = "alternate"
    type: str | None = None
    title: str | None = None
    length: int | None = None


@dataclass(frozen=True)
class FeedInfo:
    """The upstream feed itself: what atom:source credits."""

    id: str | None = None
    title: str | None = None
    subtitle: str | None = None
    links: tuple[Link, ...] = ()
    updated: datetime | None = None
    language: str | None = None
    rights: str | None = None

    @property
    def alternate(self) -> str | None:
        return next((link.href for link in self.links if link.rel == "alternate"), None)


@dataclass(frozen=True)
class Item:
    upstream_id: str
    title: str
    link: str | None
    author: str | None
    published: datetime  # aware UTC
    published_estimated: bool  # no usable upstream date: first-seen time
    updated: datetime | None
    content: str  # HTML; full text when upstream sent it
    content_is_full: bool  # False: only a summary/description was sent
    summary: str | None = None
    language: str | None = None  # declared for the entry, or resolved by enrich
    content_base: str | None = None  # base URL for relative links in content
    summary_base: str | None = None  # and in summary (its own xml:base may differ)
    categories: tuple[str, ...] = ()
    enclosures: tuple[Link, ...] = ()
    rights: str | None = None
    # set by enrich when nothing declared the language:
    detected_language: str | None = None
    language_confidence: float | None = None
    # full text (issue 5): the feed's own HTML, what extraction gave, and why
    feed_content: str | None = None
    extracted_content: str | None = None
    fulltext_status: str | None = None  # None: not tried on this poll


@dataclass(frozen=True)
class ParsedFeed:
    info: FeedInfo
    items: tuple[Item, ...]
    warning: str | None = None  # feedparser's complaint about malformed input
    ttl: int | None = None  # RSS <ttl>, in seconds: a hint to poll less often
    # why the items are only what could be recovered from a broken document
    # (the XML parser gave up part way): the source is degraded
    degraded: str | None = None
    # indices of items dated after the poll (estimated now, dated once that
    # date has passed): their bytes alone do not say how they are read
    ahead: frozenset[int] = frozenset()


@dataclass(frozen=True)
class ParsedPoll:
    """What the parse of one poll gives the hub (see parse.item_split): the
    feed and its items -- all of them, or, read in part, only those whose
    bytes changed -- and how the document splits, to know its items' bytes
    at the next poll."""

    parsed: ParsedFeed
    skeleton: str | None = None  # the feed's own part; None: the document does not split
    # each entry's bytes' digest, in document order; None for one to read
    # every time (dated ahead)
    digests: tuple[str | None, ...] = ()
    # read in part: where each of parsed.items is in the document (None: all read)
    positions: tuple[int, ...] | None = None
    context: str = ""  # the language context the items were read in (worker.context_key)

    @property
    def entries(self) -> int:
        return len(self.parsed.items) if self.positions is None else len(self.digests)


@dataclass(frozen=True)
class ItemBytes:
    """A source's items whose bytes are known: a parse of the same bytes, in
    the same feed (`skeleton`) and language context, would leave their stored
    rows as they are."""

    skeleton: str
    context: str  # see worker.context_key
    items: dict[str, tuple[str, str | None]]  # digest -> (upstream id, link)


# --- store and publish ------------------------------------------------------


@dataclass(frozen=True)
class StoredItem:
    """An item as kept in SQLite, ready to publish."""

    atom_id: str
    source: str
    title: str
    link: str | None
    author: str | None
    published: datetime
    updated: datetime
    content: str
    language: str
    categories: tuple[str, ...]
    enclosures: tuple[Link, ...]
    rights: str | None
    feed: FeedInfo  # the upstream feed, for atom:source
    # upstream's own summary (sanitized HTML), for publish = "summary": the
    # feed's summary/description beside its full text, or the feed's text
    # (a teaser) when the article came from the page
    summary: str | None = None


@dataclass(slots=True)  # not frozen: made by the ten thousand, frozen costs 40%
class RenderedEntry:
    """An item's Atom entry as feedgen wrote it, kept by the store (one per
    item version) so that every document it appears in is assembled, not
    rendered again. The article text is not kept twice: for a full-text
    entry `head` and `tail` surround it, and publishing puts the item's text
    between them, escaped as XML text. tail None: `head` is the whole entry."""

    stamp: str  # what it was rendered from (see publish.entry_stamp)
    credit_language: str
    head: bytes
    tail: bytes | None = None


@dataclass(slots=True)  # as RenderedEntry
class EntryRow:
    """What a document needs of one item when its entry may be cached: no
    parsed fields, just what says which version it is and its text."""

    item_id: int
    source: str
    language: str  # as StoredItem.language
    updated: datetime
    text: str  # the published text, as StoredItem.content
    version: str  # changes whenever the item's entry would
    cached: RenderedEntry | None


@dataclass(frozen=True)
class StoreOutcome:
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    # ("new" or "updated", language group) -> items: what /metrics counts
    by_language: dict[tuple[str, str], int] = field(default_factory=dict, compare=False)


class SourceFacts(NamedTuple):
    """What status.source_health reads of a source, and when its last good
    poll was and its failing streak began (ISO strings, UTC: they sort as
    they compare): cheap to make by the ten thousand at every /metrics
    scrape, where SourceState (17 fields, dates parsed) is not."""

    name: str
    retired: bool
    last_poll: str | None
    error_count: int
    degraded: bool
    entries: int | None
    items: int  # 1 when the source has any item and `entries` is unknown, else 0
    last_success: str | None
    failing_since: str | None


@dataclass(frozen=True)
class SourceState:
    name: str
    url: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    last_poll: datetime | None = None
    last_status: int | None = None
    last_error: str | None = None
    error_count: int = 0
    next_poll: datetime | None = None
    items: int = 0
    body_hash: str | None = None  # to skip parsing a byte-identical body
    ttl: int | None = None  # seconds, from RSS <ttl>
    retired: str | None = None  # why polling stopped (410 Gone), if it did
    redirect_url: str | None = None  # a permanent redirect seen ...
    redirect_count: int = 0  # ... this many polls in a row
    degraded: str | None = None  # the last parse recovered entries from a broken document: why
    entries: int | None = None  # entries in the last document parsed (None: before schema 8)

    def validators_for(self, url: str) -> Validators:
        """Validators are only good for the URL that produced them."""
        if self.url != url:
            return Validators()
        return Validators(self.etag, self.last_modified)


@dataclass(frozen=True)
class NodeInfo:
    """A daemon sharing the database (issue 16): who, since when, last
    heard of when, and the hash of the config it runs."""

    node: str
    hostname: str
    pid: int
    config_hash: str
    started: datetime
    last_seen: datetime


@dataclass(frozen=True)
class PollReport:
    """One poll of one source, for the log line and `feedhub poll`."""

    source: str
    status: int | None
    new: int = 0
    updated: int = 0
    error: str | None = None
    duration: float = 0.0
    languages: frozenset[str] = frozenset()
    next_poll: datetime | None = None
    note: str | None = None  # e.g. "body unchanged"
    retired: bool = False  # the source is retired: do not schedule it again
    degraded: str | None = None  # stored, but from a broken document: why (see ParsedFeed)
    error_kind: str | None = None  # why it failed, in one word (metrics.ERROR_KINDS)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def changed(self) -> bool:
        return bool(self.new or self.updated)
