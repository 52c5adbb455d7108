"""A full publish's archive pages and source feeds, made in worker processes.

Rendering a document (feedgen, Jinja) and compressing its copies hold the
GIL, and a publish into an empty directory makes thousands of them: in one
process it used one core of two. Here the jobs of Hub._documents are cut
in chunks, which worker processes make (a core's worth fewer than the cores:
the publishing process makes every few chunks itself meanwhile, and a
worker costs memory); each worker has its own read-only store and a
Hub of its own (_DocumentHub) that does exactly what the publishing process
would, writing temp files that it does not rename but hands back. The
publishing process adopts them into its batch in the order of the jobs, so
that they are renamed in that order, made durable by its one sync, and
appear only when its batch commits (archive pages before any feed that
links to them). What a worker rendered for the store's entry cache and what
it wrote are handed back too: only the publishing process writes to the
store, logs and counts. If a chunk fails, the publishing process makes its
documents itself; if a worker dies, the temp files it left are removed.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
from collections.abc import Sequence
from concurrent.futures import BrokenExecutor, Executor, Future
from pathlib import Path
from typing import Any

from feedhub._files import remove_temps
from feedhub.hub import Hub, LaterPage
from feedhub.models import Config, RenderedEntry
from feedhub.publish import (
    ARCHIVE_DIR,
    SOURCES_DIR,
    adopt_writes,
    copies_later,
    handed_over_writes,
    leave_copies_for_later,
    leaving_copies_for_later,
    remove_worker_temps,
)
from feedhub.store import Store, open_store
from feedhub.worker import document_pool

log = logging.getLogger("feedhub")

CHUNKS_PER_WORKER = 12  # few enough that the config is pickled few times, enough to keep order
MIN_CHUNK = 8  # jobs: a chunk of fewer costs more in pickling than it makes
DOCUMENT_TIMEOUT = 300.0  # seconds: a chunk that takes longer is a stalled worker

Job = tuple[str, tuple[Any, ...]]
Made = tuple[list[Any], list[tuple[str, Path]], list[tuple[int, RenderedEntry]],
             list[tuple[str, Path, int]], list[LaterPage] | None, list[Path] | None]
_publishes = itertools.count()


def make_in_workers(hub: Hub, jobs: Sequence[Job]) -> list[Any]:
    """Hub._documents on every core: the results in order, the files
    adopted into the current batch in order."""
    pool, workers = _pool(hub)
    size = max(MIN_CHUNK, math.ceil(len(jobs) / ((workers + 1) * CHUNKS_PER_WORKER)))
    chunks = [list(jobs[start:start + size]) for start in range(0, len(jobs), size)]
    key = (os.getpid(), next(_publishes))  # a worker's Hub serves one publish
    pages = hub._templates is not None
    later = hub._later is not None  # the HTML pages are kept for after the Atom documents
    copies = leaving_copies_for_later()  # and the documents' compressed copies
    results: list[Any] = []
    adopted: list[str] = []
    broken = False
    futures: list[Future[Made] | None] = []
    try:
        for index, chunk in enumerate(chunks):
            try:
                futures.append(None if index % (workers + 1) == 0 else pool.submit(
                    make_documents, key, hub.config, hub._slugs, pages, chunk, later, copies))
            except BrokenExecutor:
                futures.append(None)
                broken = True
        for index, (chunk, future) in enumerate(zip(chunks, futures, strict=True)):
            made, failed = _result(future) if future is not None else (None, False)
            futures[index] = None  # its temp files are adopted, or there are none
            broken = broken or failed
            if made is None:  # this process makes them (and reports them itself)
                results += [hub._document(kind, args) for kind, args in chunk]
                continue
            done, temps, rendered, written, kept, deferred = made
            adopt_writes(temps)
            if deferred:
                leave_copies_for_later(deferred)
            adopted += [tmp for tmp, _ in temps]
            hub._keep_entries(rendered)
            for kind, path, entries in written:
                hub._report(kind, path, entries)
            if kept and hub._later is not None:  # in the order of the jobs, as if made here
                hub._later += kept
            results += done
    finally:  # on an error here: no chunk's temp files left behind
        for future in futures:
            if future is not None and not future.cancel():
                with contextlib.suppress(Exception):
                    remove_temps(future.result()[1])
    if broken:  # a worker died: what it was writing is left half-done
        hub.close_document_pool()
        output = hub.config.hub.output_dir
        # the language feeds and pages and their copies are in `output` itself
        remove_worker_temps([output, output / SOURCES_DIR, *(output / ARCHIVE_DIR).glob("*")],
                            adopted)
    return results


def _pool(hub: Hub) -> tuple[Executor, int]:
    """The parser workers, or this publish's own (spawned: worker.document_pool):
    one core fewer, as the publishing process makes every (workers + 1)th
    chunk itself meanwhile (a worker of its own costs ~40 MB of PSS)."""
    if hub.executor is not None:
        return hub.executor, hub.workers
    workers = max((os.cpu_count() or 1) - 1, 1)
    if hub._document_pool is None:
        hub._document_pool = document_pool(workers)
    return hub._document_pool, workers


def start_workers(hub: Hub) -> None:
    """Start a publish's own document workers before its first documents
    are ready: a spawned worker imports feedhub for about half a second,
    and the publishing process, done with its first chunk, waited 0.3 s
    for the worker's at 1,000 sources."""
    pool, workers = _pool(hub)
    for _ in range(workers):
        pool.submit(_ready)


def _ready() -> None:
    """Nothing: unpickled in a worker, it makes the worker import this module."""


def _result(future: Future[Made]) -> tuple[Made | None, bool]:
    """A chunk's result, or None if it failed; and whether a worker died
    or stalled (it may have left temp files)."""
    try:
        return future.result(timeout=DOCUMENT_TIMEOUT), False
    except Exception as exc:
        log.warning("a document worker failed (%s: %s); publishing makes its documents itself",
                    type(exc).__name__, exc)
        return None, isinstance(exc, BrokenExecutor | TimeoutError)


class _DocumentHub(Hub):
    """A worker's Hub for one publish: what the publishing process's would
    write to the store, log or count, it keeps, to hand back."""

    def __init__(self, config: Config, store: Store, slugs: dict[str, str], pages: bool):
        super().__init__(config, store, None)  # type: ignore[arg-type]
        self._slugs = slugs
        self._templates = self._load_templates() if pages and config.hub.pages else None
        self.rendered: list[tuple[int, RenderedEntry]] = []
        self.written: list[tuple[str, Path, int]] = []

    def _report(self, kind: str, path: Path, entries: int) -> None:
        self.written.append((kind, path, entries))

    def _keep_entries(self, entries: Sequence[tuple[int, RenderedEntry]]) -> None:
        self.rendered += entries


_worker: dict[str, Any] = {}  # this worker process's store, and its Hub for one publish


def make_documents(key: tuple[int, int], config: Config, slugs: dict[str, str], pages: bool,
                   jobs: Sequence[Job], later: bool = False, copies: bool = False) -> Made:
    """In a worker: the jobs' results, their temp files, the entries
    rendered, the files written (see the module) and, with `later`, the
    HTML pages kept for after the Atom documents (Hub._write_page); with
    `copies`, the documents whose compressed copies are left for later
    (publish.copies_later)."""
    if _worker.get("database") != config.hub.database:
        if (old := _worker.pop("store", None)) is not None:
            old.close()
        _worker["store"] = open_store(config.hub.database, reader=True)
        _worker["database"] = config.hub.database
    hub = _worker.get("hub")
    if _worker.get("key") != key or hub is None:
        hub = _worker["hub"] = _DocumentHub(config, _worker["store"], slugs, pages)
        _worker["key"] = key
    hub.rendered, hub.written = [], []
    hub._later = [] if later else None
    try:
        with handed_over_writes() as temps, copies_later() if copies else (
                contextlib.nullcontext(None)) as deferred:
            done = [hub._document(kind, args) for kind, args in jobs]
        return (done, temps, hub.rendered, hub.written, hub._later,
                None if deferred is None else list(deferred))
    finally:
        hub._later = None
