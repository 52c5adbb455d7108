"""Self-tests of the page-test harness (tests/browser.py, tests/htmlcheck.py)
on small static pages: each helper is shown to catch what it is there for,
so a green page test means something. One Chromium serves the whole module
(browser is module-scoped) and one JVM run checks all the HTML documents."""

from __future__ import annotations

from pathlib import Path

import pytest

import browser as harness
import htmlcheck
from browser import DESKTOP, PHONE, computed_style, has_horizontal_scroll, screenshot, visible_text
from htmlcheck import assert_valid_html5, check_html5

HEAD = '<!DOCTYPE html>\n<html lang="en"{attrs}>\n<head><meta charset="utf-8"><title>t</title>{head}</head>\n'

PAGES = {
    "clean.html": HEAD.format(attrs="", head="")
    + "<body><h1>Headline</h1><p hidden>secret</p><p>Body text</p></body>\n</html>\n",
    "noisy.html": HEAD.format(attrs="", head="")
    + '<body><p>noisy</p><img src="http://example.org/x.png" alt="x">\n'
    + "<script>console.error('boom from the page'); undefinedFunction();</script></body>\n</html>\n",
    "wide.html": HEAD.format(attrs="", head='<meta name="viewport" content="width=device-width">')
    + '<body><div style="width: 600px">a 600 px wide block</div></body>\n</html>\n',
    "rtl.html": HEAD.format(attrs=' dir="rtl"', head="").replace('lang="en"', 'lang="fa"')
    + '<body><h1>خبر</h1><article dir="ltr" lang="en"><p>English inside</p></article></body>\n</html>\n',
}

INVALID = (b"<!DOCTYPE html>\n<html lang=\"en\"><head><title>bad</title></head>\n"
           b"<body><p><div>unclosed</p></span>\n<img src=\"a.png\"></body></html>\n")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("site")
    for name, html in PAGES.items():
        (root / name).write_text(html, encoding="utf-8")
    return root


def test_clean_page_has_no_findings(open_page, static_server, site: Path, tmp_path: Path) -> None:
    base = static_server(site)
    for viewport in (PHONE, DESKTOP):
        visit = open_page(base + "clean.html", viewport)
        assert visit.response is not None and visit.response.status == 200
        assert visit.response.headers["content-type"] == "text/html; charset=utf-8"
        assert visit.console_errors == []
        assert visit.external_requests == []
        assert not has_horizontal_scroll(visit.page)
        assert visit.page.viewport_size == {"width": viewport[0], "height": viewport[1]}
        text = visible_text(visit.page)
        assert "Headline" in text and "Body text" in text
        assert "secret" not in text  # innerText leaves out what the reader can't see
        png = screenshot(visit.page, tmp_path / f"clean-{viewport[0]}.png")
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_console_errors_and_external_requests_are_caught(open_page, static_server, site: Path) -> None:
    visit = open_page(static_server(site) + "noisy.html")
    assert visit.external_requests == ["http://example.org/x.png"]
    assert any("boom from the page" in e for e in visit.console_errors), visit.console_errors
    assert any("undefinedFunction" in e for e in visit.console_errors), visit.console_errors
    # The aborted image is reported once, as a request, not again as a console error.
    assert not any("Failed to load resource" in e for e in visit.console_errors), visit.console_errors
    # It was aborted: the image never loaded.
    assert visit.page.evaluate("document.images[0].naturalWidth") == 0


def test_a_request_made_later_by_script_is_caught_too(open_page, static_server, site: Path) -> None:
    visit = open_page(static_server(site) + "clean.html")
    outcome = visit.page.evaluate("fetch('https://example.com/api').then(() => 'loaded', () => 'failed')")
    assert outcome == "failed"
    assert visit.external_requests == ["https://example.com/api"]


def test_overflow_at_phone_width_is_caught(open_page, static_server, site: Path) -> None:
    base = static_server(site)
    assert has_horizontal_scroll(open_page(base + "wide.html", PHONE).page)
    assert not has_horizontal_scroll(open_page(base + "wide.html", DESKTOP).page)


def test_computed_direction_of_rtl_page_and_ltr_article(open_page, static_server, site: Path) -> None:
    base = static_server(site)
    page = open_page(base + "rtl.html").page
    assert computed_style(page, "html", "direction") == "rtl"
    assert computed_style(page, "h1", "direction") == "rtl"
    assert computed_style(page, "article", "direction") == "ltr"
    assert computed_style(page, "article p", "direction") == "ltr"
    ltr = open_page(base + "clean.html").page
    assert computed_style(ltr, "h1", "direction") == "ltr"
    with pytest.raises(Exception, match=r"(?i)failed to find element"):
        computed_style(page, "nav", "direction")


def test_only_loopback_urls_can_be_opened(open_page) -> None:
    with pytest.raises(ValueError, match=r"127\.0\.0\.1"):
        open_page("http://example.org/")


def test_validator_accepts_valid_and_rejects_invalid(site: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.html"
    bad.write_bytes(INVALID)
    # One JVM start for all of them: the site's pages, a file and bytes.
    messages = check_html5([site, bad, INVALID])
    errors = [m for m in messages if m.kind == "error"]
    assert {m.file for m in errors} == {str(bad.resolve()), "<bytes #2>"}
    stray = [m for m in errors if m.file == str(bad.resolve()) and "Stray end tag" in m.message]
    assert stray and stray[0].line == 3, errors
    assert any("alt" in m.message for m in errors)

    assert_valid_html5([site, PAGES["clean.html"].encode()])  # every page above is valid HTML5
    with pytest.raises(AssertionError) as failed:
        assert_valid_html5([site / "clean.html", bad])
    report = str(failed.value)
    assert f"{bad.resolve()}:3:" in report and "Stray end tag" in report
    assert "clean.html" not in report


def test_validator_warnings_fail_only_when_asked(tmp_path: Path) -> None:
    no_lang = (b"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>t</title></head>"
               b"<body><p>x</p></body></html>\n")
    messages = assert_valid_html5(no_lang)  # a missing lang is a warning, not an error
    assert any(m.kind == "warning" and "lang" in m.message for m in messages)
    with pytest.raises(AssertionError, match="lang"):
        assert_valid_html5(no_lang, warnings=True)


def test_missing_tools_skip_locally_but_fail_in_ci(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(harness, "CHROMIUM", tmp_path / "no-chromium")
    monkeypatch.setattr(htmlcheck.shutil, "which", lambda name: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="chromium"):
        harness.require_chromium()
    with pytest.raises(pytest.skip.Exception, match="java"):
        htmlcheck.java()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must not skip"):
        harness.require_chromium()
    with pytest.raises(pytest.fail.Exception, match="CI must not skip"):
        htmlcheck.java()
