"""Atom (RFC 4287) validity checks for every feed and archive document the
hub publishes. A reader that meets a bad id, date or language tag drops the
entry, or the whole feed, without telling anyone; feedparser in the tests
forgives all of it, so the suite checks the documents themselves.

Stricter than RFC 4287 where feedhub's own rules are: every IRI absolute
(feedhub writes no xml:base), entry ids unique, a rel="self" link, and an
archive document (RFC 5005) links to its current feed.
"""

from __future__ import annotations

import binascii
import re
from collections import Counter
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

import lxml.etree
import lxml.html

ATOM_NS = "http://www.w3.org/2005/Atom"
ATOM = f"{{{ATOM_NS}}}"
XHTML = "{http://www.w3.org/1999/xhtml}"
FH_NS = "http://purl.org/syndication/history/1.0"
FH = f"{{{FH_NS}}}"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"

# --- what may appear where (RFC 4287 4.1, 4.2.11, 3.2) ------------------------

_FEED_CHILDREN = frozenset({"author", "category", "contributor", "generator", "icon", "id", "link", "logo",
                            "rights", "subtitle", "title", "updated", "entry"})
_SOURCE_CHILDREN = _FEED_CHILDREN - {"entry"}
_ENTRY_CHILDREN = frozenset({"author", "category", "content", "contributor", "id", "link", "published",
                             "rights", "source", "summary", "title", "updated"})
_PERSON_CHILDREN = frozenset({"name", "uri", "email"})
_TEXT_CONSTRUCTS = frozenset({"title", "subtitle", "rights", "summary"})

# IANA link relations a feed can meet (plus Atom's own and RFC 5005's); any
# other rel must be an absolute IRI (RFC 4287 4.2.7.2).
REGISTERED_RELS = frozenset({
    "about", "alternate", "appendix", "archives", "author", "bookmark", "canonical", "chapter",
    "collection", "contents", "copyright", "create-form", "current", "describedby", "describes",
    "disclosure", "duplicate", "edit", "edit-form", "edit-media", "enclosure", "first", "glossary", "help",
    "hosts", "hub", "icon", "index", "item", "last", "latest-version", "license", "lrdd", "memento",
    "monitor", "monitor-group", "next", "next-archive", "nofollow", "noreferrer", "original", "payment",
    "predecessor-version", "prefetch", "prev", "prev-archive", "preview", "previous", "privacy-policy",
    "profile", "related", "replies", "search", "section", "self", "service", "start", "stylesheet",
    "subsection", "successor-version", "tag", "terms-of-service", "timegate", "timemap", "type", "up",
    "version-history", "via", "working-copy", "working-copy-of",
})

# --- value syntax ---------------------------------------------------------------

# RFC 3339 date-time as RFC 4287 3.3 narrows it (upper-case T and Z). [0-9],
# not \d: \d would take Persian or Arabic-Indic digits.
_DATE_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?"
                        r"(?:Z|[+-][0-9]{2}:[0-9]{2})")
_NO_OFFSET = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?")

# RFC 3987: scheme ":" ..., and characters no IRI may hold: controls, space,
# <>"{}|\^`, C1 controls, and the bidi formatting marks of section 4.1
# (LRM, RLM, LRE..RLO, and the isolates) that RTL text tends to carry along.
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
_NOT_IN_IRI = re.compile("[\x00-\x20\x7f-\x9f<>\"{}|\\\\^`\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")

_TOKEN = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"  # RFC 6838 restricted-name
_MEDIA_TYPE = re.compile(rf"{_TOKEN}/{_TOKEN}(?:\s*;\s*[^\s;=]+=[^;]*)*")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")

# RFC 5646 section 2.1 ABNF, langtag and privateuse; grandfathered below.
_LANGTAG = re.compile(r"""
    (?P<language>[a-z]{2,3}(?:-[a-z]{3}){0,3}|[a-z]{4,8})
    (?:-[a-z]{4})?                                  # script
    (?:-(?:[a-z]{2}|[0-9]{3}))?                     # region
    (?P<variants>(?:-(?:[a-z0-9]{5,8}|[0-9][a-z0-9]{3}))*)
    (?P<extensions>(?:-[0-9a-wyz](?:-[a-z0-9]{2,8})+)*)
    (?:-x(?:-[a-z0-9]{1,8})+)?                      # privateuse
    """, re.ASCII | re.IGNORECASE | re.VERBOSE)
_PRIVATE_USE_TAG = re.compile(r"x(?:-[a-z0-9]{1,8})+", re.ASCII | re.IGNORECASE)
# The irregular grandfathered tags; the regular ones (art-lojban, zh-min-nan...) match _LANGTAG.
_GRANDFATHERED = frozenset({
    "en-gb-oed", "i-ami", "i-bnn", "i-default", "i-enochian", "i-hak", "i-klingon", "i-lux", "i-mingo",
    "i-navajo", "i-pwn", "i-tao", "i-tay", "i-tsu", "sgn-be-fr", "sgn-be-nl", "sgn-ch-de",
})


def language_tag_problem(tag: str) -> str | None:
    """Why `tag` is not a BCP 47 language tag, or None. Well-formedness per
    the RFC 5646 ABNF, plus what validity needs without the IANA registry:
    no 4-8 letter primary language (none is registered), no repeated
    variant or extension singleton (RFC 5646 2.2.5, 2.2.6)."""
    if tag.lower() in _GRANDFATHERED or _PRIVATE_USE_TAG.fullmatch(tag):
        return None
    match = _LANGTAG.fullmatch(tag)
    if match is None:
        if "_" in tag:
            return "is not a well-formed BCP 47 language tag: subtags are separated by '-', not '_'"
        return "is not a well-formed BCP 47 language tag (RFC 5646)"
    primary = match["language"].split("-")[0]
    if len(primary) > 3:
        return (f"is not a valid BCP 47 language tag: no {len(primary)}-letter primary language subtag "
                f"is registered ({primary!r}; use a 2- or 3-letter code such as 'en' or 'fa')")
    variants = [v.lower() for v in match["variants"].split("-") if v]
    if len(variants) != len(set(variants)):
        return "is not a valid BCP 47 language tag: a variant subtag is repeated"
    singletons = [s.lower() for s in re.findall(r"-([0-9a-wyz])(?=-)", match["extensions"], re.I)]
    if len(singletons) != len(set(singletons)):
        return "is not a valid BCP 47 language tag: an extension singleton is repeated"
    return None


def iri_problem(value: str) -> str | None:
    """Why `value` is not an absolute IRI (RFC 3987) fit to publish, or None."""
    if not value:
        return "is empty, not an absolute IRI"
    if bad := _NOT_IN_IRI.search(value):
        return f"contains {bad.group()!r}, which an IRI cannot hold (RFC 3987)"
    if not _SCHEME.match(value):
        return "is not an absolute IRI: it has no scheme such as https:, tag: or urn: (RFC 3987)"
    if _BAD_PERCENT.search(value):
        return "has a '%' not followed by two hex digits"
    scheme = value.split(":", 1)[0].lower()
    if scheme in ("http", "https"):
        try:
            host = urlsplit(value).hostname
        except ValueError as exc:
            return f"is not a valid {scheme} IRI ({exc})"
        if not host:
            return f"is an {scheme} IRI with no host"
    return None


def date_problem(value: str) -> str | None:
    """Why `value` is not an RFC 3339 date-time as RFC 4287 3.3 wants it, or
    None: the strict pattern, then a real calendar date and clock time."""
    if not _DATE_TIME.fullmatch(value):
        hints = []
        core = value.strip()
        if core != value:
            hints.append("it has surrounding whitespace")
        if len(core) > 10 and core[10] in " t":
            hints.append(f"date and time are separated by {core[10]!r}, not 'T'")
        if core.endswith("z"):
            hints.append("a lower-case 'z', not 'Z'")
        if _NO_OFFSET.fullmatch(core):
            hints.append("no time zone offset (Z or +hh:mm)")
        return "is not an RFC 3339 date-time" + (f" ({'; '.join(hints)})" if hints else "")
    normal = re.sub(r"\.[0-9]+", "", value.removesuffix("Z") + ("+00:00" if value.endswith("Z") else ""))
    if normal[17:19] == "60":  # a leap second: RFC 3339 allows it, datetime does not
        normal = normal[:17] + "59" + normal[19:]
    try:
        datetime.fromisoformat(normal)
    except ValueError as exc:
        return f"is not an RFC 3339 date-time: {exc}"
    return None


# --- the checker ------------------------------------------------------------------


def _name(element: lxml.etree._Element) -> str:
    """<id> for Atom elements, a prefix or {namespace} for the others."""
    qname = lxml.etree.QName(element)
    if qname.namespace == ATOM_NS:
        return f"<{qname.localname}>"
    prefix = {FH_NS: "fh:", XHTML[1:-1]: "xhtml:"}.get(qname.namespace or "",
                                                         f"{{{qname.namespace}}}" if qname.namespace else "")
    return f"<{prefix}{qname.localname}>"


def _atom_children(element: lxml.etree._Element, name: str) -> list[lxml.etree._Element]:
    return element.findall(ATOM + name)


def _text(element: lxml.etree._Element) -> str:
    return element.text or ""


class _Checker:
    """Walks one parsed document and collects problems as sentences
    "<where>: <what>" so a failing test says which element is wrong."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.labels: dict[lxml.etree._Element, str] = {}  # entry -> "entry 3 (<id> tag:x,2024:1)"
        self.numbers: dict[lxml.etree._Element, str] = {}  # entry -> "entry 3"

    def add(self, where: str, what: str) -> None:
        self.problems.append(f"{where}: {what}")

    def check(self, root: lxml.etree._Element) -> list[str]:
        if root.tag != ATOM + "feed":
            self.add("document", f"the root element is {_name(root)}, not an Atom <feed> ({ATOM}feed)")
            return self.problems
        entries = _atom_children(root, "entry")
        for number, entry in enumerate(entries, 1):
            ids = _atom_children(entry, "id")
            self.numbers[entry] = f"entry {number}"
            self.labels[entry] = f"entry {number} " + (f"(<id> {_text(ids[0])})" if ids else "(no <id>)")
        self._feed(root, entries)
        for entry in entries:
            self._entry(entry, self.labels[entry])
        self._unique_ids(root, entries)
        self._archive(root)
        self._languages(root)
        for node in root.iter(lxml.etree.Entity):
            self.add(self._where(node.getparent()), f"unexpanded entity reference {node.text}")
        return self.problems

    # --- containers ---

    def _feed(self, feed: lxml.etree._Element, entries: list[lxml.etree._Element]) -> None:
        self._cardinality(feed, "feed", exactly_one=("id", "title", "updated"),
                          at_most_one=("subtitle", "rights", "icon", "logo", "generator"))
        self._metadata(feed, "feed", _FEED_CHILDREN)
        if not _atom_children(feed, "author"):
            for entry in entries:
                if not _atom_children(entry, "author") and not entry.findall(f"{ATOM}source/{ATOM}author"):
                    self.add(self.labels[entry], "no <author>, in the entry or its <source>, and the feed "
                             "has no <author> either (RFC 4287 4.1.1)")
        rels = [link.get("rel", "alternate") for link in _atom_children(feed, "link")]
        if "self" not in rels:
            self.add("feed", 'no <link rel="self"> (RFC 4287 4.1.1 recommends one; feedhub always writes it)')
        self._one_alternate_per_type(feed, "feed")

    def _entry(self, entry: lxml.etree._Element, where: str) -> None:
        self._cardinality(entry, where, exactly_one=("id", "title", "updated"),
                          at_most_one=("published", "content", "summary", "rights", "source"))
        self._metadata(entry, where, _ENTRY_CHILDREN)
        self._one_alternate_per_type(entry, where)
        contents = _atom_children(entry, "content")
        alternates = [link for link in _atom_children(entry, "link")
                      if link.get("rel", "alternate") == "alternate"]
        if not contents and not alternates:
            self.add(where, 'no <content> and no <link rel="alternate"> (RFC 4287 4.1.1: an entry without '
                     "content must have an alternate link)")
        if contents and self._content(contents[0], where) and not _atom_children(entry, "summary"):
            self.add(where, "no <summary>, which RFC 4287 4.1.1 requires when <content> has a src or "
                     "is base64 (a non-text, non-XML media type)")
        for source in _atom_children(entry, "source"):
            source_where = f"{where} <source>"
            self._cardinality(source, source_where, exactly_one=(),
                              at_most_one=("id", "title", "updated", "subtitle", "rights", "icon", "logo",
                                           "generator"))
            self._metadata(source, source_where, _SOURCE_CHILDREN)

    def _cardinality(self, element: lxml.etree._Element, where: str, *, exactly_one: tuple[str, ...],
                     at_most_one: tuple[str, ...]) -> None:
        for name in exactly_one:
            count = len(_atom_children(element, name))
            if count == 0:
                self.add(where, f"no <{name}> (RFC 4287 requires exactly one)")
            elif count > 1:
                self.add(where, f"{count} <{name}> elements (RFC 4287 allows exactly one)")
        for name in at_most_one:
            count = len(_atom_children(element, name))
            if count > 1:
                self.add(where, f"{count} <{name}> elements (RFC 4287 allows at most one)")

    def _metadata(self, element: lxml.etree._Element, where: str, allowed: frozenset[str]) -> None:
        """The checks that read one child at a time, the same in feed, entry and source."""
        for child in element:
            if not isinstance(child.tag, str) or not child.tag.startswith(ATOM):
                continue  # comments, and foreign markup (RFC 4287 6.4)
            name = lxml.etree.QName(child).localname
            if name not in allowed:
                self.add(where, f"<{name}> is not an Atom element here (unknown elements in the Atom "
                         "namespace are not allowed)")
            elif name == "id":
                self._iri(where, "<id>", _text(child))
            elif name in ("updated", "published"):
                if problem := date_problem(_text(child)):
                    self.add(where, f"<{name}> {_text(child)!r} {problem}")
            elif name in _TEXT_CONSTRUCTS:
                self._text_construct(child, where)
            elif name in ("author", "contributor"):
                self._person(child, where)
            elif name == "link":
                self._link(child, where)
            elif name == "category":
                if child.get("term") is None:
                    self.add(where, "<category> has no term attribute (RFC 4287 4.2.2)")
                self._iri_attribute(child, where, "scheme")
            elif name in ("icon", "logo"):
                self._iri(where, f"<{name}>", _text(child))
            elif name == "generator":
                self._iri_attribute(child, where, "uri")

    # --- constructs ---

    def _iri(self, where: str, what: str, value: str) -> None:
        if problem := iri_problem(value):
            self.add(where, f"{what} {value!r} {problem}")

    def _iri_attribute(self, element: lxml.etree._Element, where: str, attribute: str) -> None:
        value = element.get(attribute)
        if value is not None:
            self._iri(where, f"{_name(element)} {attribute}", value)

    def _person(self, person: lxml.etree._Element, where: str) -> None:
        what = _name(person)
        names = _atom_children(person, "name")
        if len(names) != 1:
            self.add(where, f"{what} has {len(names)} <name> elements (RFC 4287 3.2 requires exactly one)")
        elif not _text(names[0]).strip():
            self.add(where, f"{what} has an empty <name>")
        for name in ("uri", "email"):
            if len(_atom_children(person, name)) > 1:
                self.add(where, f"{what} has more than one <{name}>")
        for uri in _atom_children(person, "uri"):
            self._iri(where, f"{what} <uri>", _text(uri))
        for email in _atom_children(person, "email"):
            if not _EMAIL.fullmatch(_text(email)):
                self.add(where, f"{what} <email> {_text(email)!r} is not an e-mail address")
        for child in person:
            if isinstance(child.tag, str) and child.tag.startswith(ATOM) and \
                    lxml.etree.QName(child).localname not in _PERSON_CHILDREN:
                self.add(where, f"{what} holds {_name(child)}, which is not an Atom person element")

    def _link(self, link: lxml.etree._Element, where: str) -> None:
        rel = link.get("rel")
        what = f'<link rel="{rel}">' if rel is not None else "<link>"
        href = link.get("href")
        if href is None:
            self.add(where, f"{what} has no href (RFC 4287 4.2.7.1)")
        else:
            self._iri(where, f"{what} href", href)
        if rel is not None and rel not in REGISTERED_RELS and (not _SCHEME.match(rel) or iri_problem(rel)):
            self.add(where, f"{what} rel {rel!r} is neither a registered link relation nor an absolute IRI")
        media_type = link.get("type")
        if media_type is not None and not _MEDIA_TYPE.fullmatch(media_type):
            self.add(where, f"{what} type {media_type!r} is not a MIME media type")
        hreflang = link.get("hreflang")
        if hreflang is not None and (problem := language_tag_problem(hreflang)):
            self.add(where, f"{what} hreflang {hreflang!r} {problem}")
        length = link.get("length")
        if length is not None and not re.fullmatch(r"[0-9]+", length):
            self.add(where, f"{what} length {length!r} is not a non-negative integer")

    def _one_alternate_per_type(self, element: lxml.etree._Element, where: str) -> None:
        """RFC 4287 4.1.1, 4.1.2: at most one alternate link per type and hreflang."""
        kinds = Counter((link.get("type"), link.get("hreflang")) for link in _atom_children(element, "link")
                        if link.get("rel", "alternate") == "alternate")
        for (media_type, hreflang), count in kinds.items():
            if count > 1:
                self.add(where, f'{count} <link rel="alternate"> elements with type {media_type!r} and '
                         f"hreflang {hreflang!r} (RFC 4287 allows one per type and hreflang)")

    def _text_construct(self, element: lxml.etree._Element, where: str) -> None:
        kind = element.get("type", "text")
        if kind not in ("text", "html", "xhtml"):
            self.add(where, f"{_name(element)} type {kind!r} is not text, html or xhtml (RFC 4287 3.1.1)")
            return
        self._body(element, where, kind)

    def _body(self, element: lxml.etree._Element, where: str, kind: str) -> None:
        """The body of a text construct or of inline text/html/xhtml content."""
        what = f'{_name(element)} type="{kind}"'
        children = [child for child in element if isinstance(child.tag, str)]
        if kind in ("text", "html"):
            if children:
                self.add(where, f"{what} holds child elements {_name(children[0])} (its markup must be "
                         "escaped text)")
            if kind == "html" and _text(element).strip():
                try:
                    lxml.html.fragment_fromstring(_text(element), create_parent="div")
                except (lxml.etree.ParserError, ValueError) as exc:
                    self.add(where, f"{what} does not parse as HTML: {exc}")
            return
        loose_text = (element.text or "") + "".join(child.tail or "" for child in element)
        if len(children) != 1 or children[0].tag != XHTML + "div" or loose_text.strip():
            self.add(where, f"{what} must hold exactly one xhtml:div and nothing else (RFC 4287 3.1.1.3)")

    def _content(self, content: lxml.etree._Element, where: str) -> bool:
        """Check <content>; True when the entry then needs a <summary>."""
        kind = content.get("type", "text")
        src = content.get("src")
        if src is not None:
            self._iri(where, "<content> src", src)
            if kind in ("text", "html", "xhtml"):
                self.add(where, f"<content> with a src has type {kind!r}: it must be a MIME media type "
                         "(RFC 4287 4.1.3.1)")
            if len(content) or _text(content).strip():
                self.add(where, "<content> with a src must be empty (RFC 4287 4.1.3.2)")
            return True
        if kind in ("text", "html", "xhtml"):
            self._body(content, where, kind)
            return False
        if not _MEDIA_TYPE.fullmatch(kind):
            self.add(where, f"<content> type {kind!r} is not text, html, xhtml or a MIME media type")
            return False
        base = kind.split(";")[0].strip().lower()
        if base.startswith("multipart/"):
            self.add(where, f"<content> type {kind!r} is a composite type (RFC 4287 4.1.3.1)")
        if base.endswith(("/xml", "+xml")):
            return False
        if len(content):
            self.add(where, f"<content> type {kind!r} must hold text, not elements")
        if base.startswith("text/"):
            return False
        try:  # RFC 4287 4.1.3.3: base64, light check
            binascii.a2b_base64("".join(_text(content).split()).encode("ascii"), strict_mode=True)
        except (binascii.Error, ValueError, UnicodeEncodeError):
            self.add(where, f"<content> type {kind!r} is not base64 text (RFC 4287 4.1.3.3)")
        return True

    # --- whole document ---

    def _unique_ids(self, feed: lxml.etree._Element, entries: list[lxml.etree._Element]) -> None:
        """RFC 4287 lets one entry appear twice as two versions; feedhub writes
        each entry once, so a repeated id is a bug (and readers merge them)."""
        first: dict[str, str] = {}  # id -> "entry 2"
        for entry in entries:
            for element in _atom_children(entry, "id")[:1]:
                value = _text(element)
                if value in first:
                    self.add(self.labels[entry], f"<id> {value!r} is also the id of {first[value]}")
                else:
                    first[value] = self.numbers[entry]
        for element in _atom_children(feed, "id")[:1]:
            if _text(element) in first:
                self.add("feed", f"<id> {_text(element)!r} is also the id of {first[_text(element)]}")

    def _archive(self, feed: lxml.etree._Element) -> None:
        """RFC 5005: fh:archive/fh:complete are empty children of the feed; an
        archive document links to the current (subscription) feed; there is
        one previous and one next archive at most."""
        for marker in feed.iter(FH + "archive", FH + "complete"):
            if marker.getparent() is not feed:
                self.add(self._where(marker), f"{_name(marker)} must be a child of <feed> (RFC 5005)")
            if len(marker) or _text(marker).strip():
                self.add(self._where(marker), f"{_name(marker)} must be empty (RFC 5005)")
        rels = Counter(link.get("rel", "alternate") for link in _atom_children(feed, "link"))
        if feed.find(FH + "archive") is not None and not rels["current"]:
            self.add("feed", 'is an archive document (<fh:archive>) with no <link rel="current"> to the '
                     "subscription feed (RFC 5005 4)")
        for rel in ("prev-archive", "next-archive"):
            if rels[rel] > 1:
                self.add("feed", f'{rels[rel]} <link rel="{rel}"> elements (RFC 5005 allows at most one)')

    def _languages(self, root: lxml.etree._Element) -> None:
        """xml:lang anywhere: a BCP 47 tag, or "" (XML 1.0 2.12: no language)."""
        for element in root.iter():
            if not isinstance(element.tag, str):
                continue
            value = element.get(XML_LANG)
            if value and (problem := language_tag_problem(value)):
                self.add(self._where(element), f"xml:lang {value!r} {problem}")

    def _where(self, element: lxml.etree._Element) -> str:
        """The entry (or the feed) holding `element`, then the path down to it."""
        path: list[str] = []
        node: lxml.etree._Element | None = element
        while node is not None and node not in self.labels and node.getparent() is not None:
            path.append(_name(node))
            node = node.getparent()
        label = self.labels.get(node, "feed") if node is not None else "feed"
        return " ".join([label, *reversed(path)])


# --- public API ---------------------------------------------------------------------


def atom_problems(document: bytes, *, name: str = "") -> list[str]:
    """Every RFC 4287 (and RFC 5005, BCP 47, RFC 3339, RFC 3987) problem in
    `document`, each a sentence naming the element; [] for a valid feed.
    With a `name`, each sentence starts with it."""
    parser = lxml.etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    try:
        root = lxml.etree.fromstring(document, parser)
    except lxml.etree.XMLSyntaxError as exc:
        problems = [f"document: not well-formed XML: {exc}"]
    else:
        problems = _Checker().check(root)
    return [f"{name}: {problem}" for problem in problems] if name else problems


def assert_valid_atom(document: bytes, name: str = "") -> None:
    """Fail listing every problem at once, so one run shows them all."""
    problems = atom_problems(document, name=name)
    if problems:
        raise AssertionError(f"{name or 'Atom document'}: {len(problems)} problem(s):\n  "
                             + "\n  ".join(problems))


def assert_valid_atom_tree(directory: Path) -> int:
    """Check every *.atom file under `directory` (recursively); returns how
    many were checked, so a caller can tell "all valid" from "none found"."""
    directory = Path(directory)
    assert directory.is_dir(), f"{directory} is not a directory"
    paths = sorted(path for path in directory.rglob("*.atom") if path.is_file())
    failed: dict[str, list[str]] = {}
    for path in paths:
        relative = path.relative_to(directory).as_posix()
        if problems := atom_problems(path.read_bytes(), name=relative):
            failed[relative] = problems
    if failed:
        raise AssertionError(
            f"{len(failed)} of {len(paths)} Atom documents under {directory} are invalid: "
            f"{', '.join(failed)}\n  " + "\n  ".join(p for problems in failed.values() for p in problems))
    return len(paths)
