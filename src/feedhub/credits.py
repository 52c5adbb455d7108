"""The credit line that ends every published entry, in the feed's language.

A credit is a `str.format` template. Values are HTML-escaped before they are
put in, so an upstream author name cannot inject markup; `{source}` is the
source name linked to the original article, `{date}` a datetime that takes a
strftime spec (`{date:%d.%m.%Y}` prints 28.12.2022, as the seed does).
"""

from __future__ import annotations

import string
from datetime import UTC, datetime
from html import escape

PLACEHOLDERS = ("source", "source_name", "link", "author", "date")

# Languages without an entry fall back to English.
DEFAULT_CREDITS = {
    "en": "Originally published by {source} on {date:%d %b %Y}. Author: {author}.",
    "de": "Zuerst veröffentlicht von {source} am {date:%d.%m.%Y}. Autor: {author}.",
    "fr": "Publié à l’origine par {source} le {date:%d/%m/%Y}. Auteur : {author}.",
    "es": "Publicado originalmente por {source} el {date:%d/%m/%Y}. Autor: {author}.",
    "fa": "منبع: {source}، {date:%Y/%m/%d}. نویسنده: {author}.",
    "ps": "سرچینه: {source}، {date:%Y/%m/%d}. لیکوال: {author}.",
    "ar": "المصدر: {source}، {date:%Y/%m/%d}. الكاتب: {author}.",
}


def check_template(template: str) -> None:
    """Raise ValueError naming the problem if `template` cannot be rendered."""
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise ValueError(f"{template!r}: {exc}") from None
    unknown = [name for name in fields if name not in PLACEHOLDERS]
    if unknown:
        raise ValueError(f"unknown placeholder {{{unknown[0]}}} in {template!r}")
    render_credit(template, source_name="x", link="https://example.org/", author="x",
                  date=datetime(2022, 12, 28, tzinfo=UTC))


def credit_template(language: str, configured: str | None) -> str:
    return configured or DEFAULT_CREDITS.get(language, DEFAULT_CREDITS["en"])


def render_credit(template: str, *, source_name: str, link: str | None, author: str,
                  date: datetime) -> str:
    """The credit as an HTML fragment (no wrapper element)."""
    name = escape(source_name)
    source = f'<a href="{escape(link)}">{name}</a>' if link else name
    return template.format(
        source=source, source_name=name, link=escape(link or ""), author=escape(author), date=date
    )
