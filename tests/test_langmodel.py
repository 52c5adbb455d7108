"""The language model the parser workers share (issue 13): it answers as
py3langid's own loader does, two workers that detect hold one copy of it
between them, and a worker whose feeds all declare a language never loads
it. Memory is read from /proc, so the sharing test is Linux-only."""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from feedhub import langmodel
from feedhub.models import FetchResult, LanguageContext, SourceConfig
from feedhub.worker import parse_and_enrich, parser_pool

BENCH = Path(__file__).resolve().parent.parent / "bench"
GERMAN = ("Die Katze sitzt auf der Matte und schläft den ganzen Tag, während draußen der Regen "
          "fällt und die Kinder in der Schule sitzen.")
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def samples() -> list[str]:
    texts = []
    for name in ("langid_samples.json", "langid_odd_samples.json"):
        texts += [sample["text"] for sample in json.loads((BENCH / name).read_text("utf-8"))]
    return texts


def test_the_shared_model_ranks_every_sample_as_py3langid_does(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    """Every score of every language, not just the winner: the cache file
    holds py3langid's numbers, not an approximation of them."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    shared = langmodel._mapped(tmp_path / langmodel._cache_name())
    stock = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    texts = samples()
    assert len(texts) > 100
    for text in texts:
        assert shared.rank(text) == stock.rank(text), text
    assert shared.nb_classes == stock.nb_classes


def _feed(language: str | None) -> FetchResult:
    declared = f"<language>{language}</language>" if language else ""
    items = "".join(f"<item><title>Nummer {n}</title><guid>urn:n:{n}</guid>"
                    f"<description>{GERMAN}</description></item>" for n in range(3))
    body = (f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
            f"<title>Nachrichten</title><link>https://example.org/</link>{declared}"
            f"{items}</channel></rss>")
    url = "https://example.org/feed.xml"
    return FetchResult(url=url, final_url=url, status=200, content=body.encode(),
                       headers={"content-type": "application/rss+xml"},
                       fetched_at=datetime(2024, 3, 1, tzinfo=UTC))


def test_a_worker_loads_the_model_only_when_an_item_needs_detecting(tmp_path: Path) -> None:
    source, context = SourceConfig(name="s", url="https://example.org/feed.xml"), LanguageContext()
    pool = parser_pool(1, tmp_path)
    try:
        parsed = pool.submit(parse_and_enrich, _feed("de"), source, context).result()
        assert {item.language for item in parsed.items} == {"de"}
        assert pool.submit(langmodel.loaded).result() is False
        parsed = pool.submit(parse_and_enrich, _feed(None), source, context).result()
        assert {item.detected_language for item in parsed.items} == {"de"}
        assert pool.submit(langmodel.loaded).result() is True
    finally:
        pool.shutdown()


def _detect_then_measure(rendezvous: str) -> dict[str, int]:
    """In a worker: detect, wait until the other worker has too, then report
    this process's pages of the model file (smaps, kB)."""
    from feedhub.enrich import detect_language

    detect_language(GERMAN)
    Path(rendezvous, str(os.getpid())).touch()
    deadline = time.monotonic() + 120
    while len(os.listdir(rendezvous)) < 2:
        if time.monotonic() > deadline:
            raise TimeoutError("the other worker never detected")
        time.sleep(0.05)
    found: dict[str, int] = {"pid": os.getpid()}
    in_model = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if not line.split()[0].endswith(":"):  # a mapping's header line
            in_model = line.endswith(".bin") and "langid-model-" in line
        elif in_model and line.split()[0] in ("Rss:", "Pss:", "Private_Clean:",
                                              "Private_Dirty:", "Anonymous:"):
            key = line.split()[0].rstrip(":")
            found[key] = found.get(key, 0) + int(line.split()[1])
    return found


@linux_only
def test_two_workers_that_detect_share_one_copy_of_the_model(tmp_path: Path) -> None:
    """Each worker maps the same file; the pages both read are counted once
    between them (PSS halves), none is copied into either (no private or
    anonymous pages), where each used to hold its own 75 MB."""
    rendezvous = tmp_path / "rendezvous"
    rendezvous.mkdir()
    pool = parser_pool(2, tmp_path)
    try:
        futures = [pool.submit(_detect_then_measure, str(rendezvous)) for _ in range(2)]
        first, second = (future.result(timeout=180) for future in futures)
    finally:
        pool.shutdown()
    assert first["pid"] != second["pid"]
    for worker in (first, second):
        assert worker["Rss"] > 0
        assert worker["Private_Dirty"] == 0 and worker["Anonymous"] == 0
        # shared with the other worker: PSS well under RSS
        assert worker["Pss"] < 0.75 * worker["Rss"]


def _model_pages_kb(path: Path | None = None) -> int:
    """In a worker: this process's resident pages of the model file (kB);
    of the file at `path` only, if given (a test process may map others)."""
    found, in_model = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if not line.split()[0].endswith(":"):  # a mapping's header line
            in_model = (line.endswith(f" {path}") if path is not None
                        else line.endswith(".bin") and "langid-model-" in line)
        elif in_model and line.startswith("Rss:"):
            found += int(line.split()[1])
    return found


@linux_only
def test_a_worker_that_gave_back_the_models_pages_detects_as_before(tmp_path: Path) -> None:
    """A worker unmaps the model after a parse that detected nothing (and
    when idle, and before rendering): its next detection maps it back and
    files every item as the first one did."""
    source, context = SourceConfig(name="s", url="https://example.org/feed.xml"), LanguageContext()
    pool = parser_pool(1, tmp_path)
    try:
        first = pool.submit(parse_and_enrich, _feed(None), source, context).result()
        assert pool.submit(_model_pages_kb).result() > 0
        pool.submit(parse_and_enrich, _feed("de"), source, context).result()  # detects nothing
        assert pool.submit(_model_pages_kb).result() == 0
        again = pool.submit(parse_and_enrich, _feed(None), source, context).result()
        assert again == first
        assert {item.detected_language for item in again.items} == {"de"}
    finally:
        pool.shutdown()


@linux_only
def test_detecting_maps_none_of_the_weights(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A detection reads the few hundred rows of weights it needs and maps
    none of the 20 MB table: through a mapping, the page cache's large
    folios made most of it resident (and counted in every detecting worker's
    PSS) within a few dozen rows. The DFA, walked byte by byte, stays mapped."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = tmp_path / langmodel._cache_name()
    shared = langmodel._mapped(path)
    for text in samples():
        shared.rank(text)
    header = json.loads(path.read_bytes()[8:8 + int.from_bytes(path.read_bytes()[:8], "little")])
    offset, shape = header["arrays"]["rows"]
    assert shape[0] * shape[1] > 15_000_000
    resident_kb = _model_pages_kb(path)
    assert resident_kb > 0  # the DFA
    assert resident_kb * 1024 <= path.stat().st_size - (offset + shape[0] * shape[1])


def test_parser_workers_import_no_http_client_no_config_writer_and_no_store() -> None:
    """What a forkserver imports (where workers are not forked from their
    owner) every parser worker holds: the reading
    of feeds and the detector's code, not the HTTP client (the owner
    fetches), the config's reading and writing (tomlkit) or the store
    (sqlite-utils): each costs every worker and the forkserver MBs."""
    import subprocess

    listed = subprocess.run(
        [sys.executable, "-c", "import sys, feedhub.worker, feedhub.langmodel as m; "
         "m.import_code(); print(' '.join(sorted(sys.modules)))"],
        capture_output=True, text=True, check=True, timeout=120).stdout.split()
    assert "feedparser" in listed and "numpy" in listed  # what they do need
    assert [name for name in listed if name.split(".")[0] in
            ("httpx", "httpcore", "tomlkit", "sqlite_utils", "jinja2", "feedgen")
            or name in ("feedhub.config", "feedhub.store", "feedhub.fetch")] == []
