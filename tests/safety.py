"""What a feed reader would run: parse published HTML as a browser does and
list anything executable or navigating away by itself."""

from __future__ import annotations

import re

import lxml.etree
import lxml.html

ATOM = "{http://www.w3.org/2005/Atom}"
BAD_TAGS = {"script", "style", "iframe", "object", "embed", "form", "input", "button", "meta",
            "link", "svg", "math", "base", "frame", "frameset", "applet", "template"}
SAFE_SCHEMES = re.compile(r"^(https?:|mailto:|#|/|[^:/?#]*([/?#]|$))", re.IGNORECASE)


def unsafe_markup(fragment: str) -> list[str]:
    if not fragment.strip():
        return []
    try:
        root = lxml.html.fragment_fromstring(fragment, create_parent="div")
    except (lxml.etree.ParserError, ValueError):
        return []
    found = []
    for element in root.iter():
        if not isinstance(element.tag, str):
            continue
        if element.tag.lower() in BAD_TAGS:
            found.append(f"<{element.tag}>")
        for name, value in element.attrib.items():
            if name.lower().startswith("on"):
                found.append(f"{name}=")
            if name.lower() == "style" and "expression" in value.lower():
                found.append("style expression()")
            if name.lower() in ("href", "src", "action", "formaction", "xlink:href") and \
                    not SAFE_SCHEMES.match("".join(value.split())):
                found.append(f"{name}={value[:40]}")
    return found


def assert_feed_is_safe(root: lxml.etree._Element) -> None:
    """Titles are text: they must hold no markup at all (a reader may treat
    them as HTML). Content and summaries are HTML: nothing executable."""
    for element in root.iter(f"{ATOM}title"):
        text = element.text or ""
        assert not re.search(r"<[a-zA-Z!/]", text) or not unsafe_markup(text), text[:200]
    for element in root.iter(f"{ATOM}content", f"{ATOM}summary"):
        assert unsafe_markup(element.text or "") == [], (element.text or "")[:300]
