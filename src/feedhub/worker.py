"""The CPU-bound middle of a poll, run in worker processes.

feedparser and the sanitizer are pure Python / GIL-bound: worker processes
let every core parse while the daemon's fetch loop stays free. This module
imports only what parsing needs, so that a forkserver (where workers are
not forked from their owner: parser_pool) and its workers stay small.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from collections.abc import Set as AbstractSet
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

from feedhub import langmodel
from feedhub.enrich import (
    clean_feed_info,
    decide,
    declared_language,
    detect,
    enrich,
    enrich_in_context,
    sanitize_html,
)
from feedhub.models import (
    Config,
    FetchResult,
    Item,
    ItemBytes,
    LanguageContext,
    ParsedFeed,
    ParsedPoll,
    RenderedEntry,
    SourceConfig,
    StoredItem,
)
from feedhub.parse import ItemSplit, item_split, parse_changed, parse_feed

if TYPE_CHECKING:
    from lxml.html import HtmlElement

log = logging.getLogger(__name__)


def parse_and_enrich(result: FetchResult, source: SourceConfig,
                     languages: LanguageContext) -> ParsedFeed:
    """A whole document parsed and enriched, as a poll with no items known
    reads it (parse_poll): for callers that want the items only."""
    return parse_poll(result, source, languages, None, split=False).parsed


def parse_poll(result: FetchResult, source: SourceConfig, languages: LanguageContext,
               known: ItemBytes | None, split: bool = True) -> ParsedPoll:
    """parse_and_enrich, of only the items whose bytes are not `known`, when
    the document and the language context allow (see parse.item_split and
    context_key), else of all; `split`: cut the document into items, for the
    next poll to know them. Read in part, the items must read as in the whole
    document: else it is read whole."""
    with _task():
        return _read_poll(result, source, languages, known, split)


@contextlib.contextmanager
def _task() -> Iterator[None]:
    """A task that may detect languages, in a parser worker: the heap and,
    if it detected nothing, the model's pages are given back after it."""
    if _idle is not None:
        _idle.busy()
    try:
        yield
    finally:
        _give_back_memory()
        if _idle is not None:
            _idle.done()


def _read_poll(result: FetchResult, source: SourceConfig, languages: LanguageContext,
               known: ItemBytes | None, split: bool) -> ParsedPoll:
    layout = item_split(result) if split or known is not None else None
    context = context_key(source, languages)
    if (known is not None and layout is not None and layout.skeleton == known.skeleton
            and known.context in (context, _declared(source))):
        partial = parse_changed(result, layout, known.items)
        if partial is not None:
            parsed, positions = partial
            read = set(positions)
            ids = [item.upstream_id for item in parsed.items] + [
                known.items[digest][0] for n, digest in enumerate(layout.digests) if n not in read]
            declared = known.context == _declared(source) and _all_declared(parsed, source)
            # no two items of one id (the store keeps one of them, by position);
            # no vote of the poll's items on the source's language (enrich)
            if len(set(ids)) == len(ids) and (declared or languages.usual is not None):
                items = enrich(parsed, source, languages=languages, feed_url=result.final_url)
                ahead = {positions[n] for n in parsed.ahead}
                return ParsedPoll(
                    replace(parsed, info=clean_feed_info(parsed.info), items=items),
                    layout.skeleton, _digests(layout, ahead), positions,
                    _declared(source) if declared else context)
    raw = parse_feed(result)
    # a first poll's items vote on the source's usual language: they were
    # read in the context of its outcome, which the next poll's matches
    # where the stored items agree with the vote
    items, decided = enrich_in_context(raw, source, languages=languages,
                                       feed_url=result.final_url)
    parsed = replace(raw, info=clean_feed_info(raw.info), items=items)
    if (layout is None or parsed.warning is not None or len(parsed.items) != len(layout.digests)
            or len({item.upstream_id for item in parsed.items}) != len(parsed.items)):
        return ParsedPoll(parsed)
    return ParsedPoll(parsed, layout.skeleton, _digests(layout, parsed.ahead), None,
                      _declared(source) if _all_declared(raw, source)
                      else context_key(source, decided))


def render_entries_in_worker(config: Config, jobs: Sequence[tuple[StoredItem, str, str]],
                   ) -> list[RenderedEntry | str]:
    """publish.render_entries, in a parser worker: first the language
    model's pages leave the worker (rendering never detects; a detection
    maps them back), so that a publish right after a poll does not hold
    the model mapped in every worker while they render (~25 MB of PSS)."""
    langmodel.release_pages()  # first: the renderer's first import takes a while
    from feedhub.publish import render_entries as render

    return render(config, jobs)


def context_key(source: SourceConfig, languages: LanguageContext) -> str:
    """What an item's reading depends on besides its bytes and its feed's:
    what decides the language of an item that declares none. With no usual
    language the poll's items vote (see enrich): that matches none."""
    if languages.usual is None:
        return "voted"
    return json.dumps([source.language, languages.default, sorted(languages.configured),
                       languages.usual])


def _declared(source: SourceConfig) -> str:
    """The context of items that all declare their language: the source's
    setting, which comes before the items' own."""
    return json.dumps(["declared", source.language])


def _all_declared(parsed: ParsedFeed, source: SourceConfig) -> bool:
    return all(declared_language(item, source, parsed.info) for item in parsed.items)


def _digests(layout: ItemSplit, ahead: AbstractSet[int]) -> tuple[str | None, ...]:
    return tuple(None if n in ahead else digest for n, digest in enumerate(layout.digests))


_libc: Any = None  # a worker's glibc (_prepare_worker, from _keep_heap_small)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # <malloc.h>
# A buffer this big or bigger gets a mapping of its own, returned when
# freed; free memory this big at the top of the heap goes back at once.
# Not lower: with both at 128 KB every language detection's temporaries
# (numpy arrays of a few hundred KB) came from fresh pages, each faulted
# in and zeroed again, and a parser worker spent 2.5-3.5x the time
# rebuilding a text's weights and multiplying them (150 farm feeds that
# declare no language: 7.1-7.2 s of CPU against 6.1-6.2 s at these sizes;
# a cold poll of 1,000 of them 80 s against 67-72 s). Not higher: a big
# feed's buffers (its decoded text, MB) keep mappings of their own, and
# what a task frees stays little (4 MB and 8 MB: the same speed, and real
# feeds' peak 3-9 MB higher than at 128 KB, against 1-5 MB here).
MMAP_THRESHOLD = 2 * 1024 * 1024
TRIM_THRESHOLD = 4 * 1024 * 1024


def _keep_heap_small() -> Any:
    """A worker's heap grows to what its largest feed needed and stays
    there: glibc raises its mmap threshold after freeing a big block (up to
    32 MB), so later big buffers come from the heap, and freed heap pages
    stay with the process. A fixed threshold keeps the biggest buffers in
    their own mappings, returned when freed; _give_back_memory trims the
    heap after each task. Not for the owner: it publishes, and each of its
    documents of several hundred KB would get fresh pages (measured at
    128 KB: a publish's CPU 21 -> 29 s, its system time doubled). Returns
    glibc, or None."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
        libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
        libc.malloc_trim  # noqa: B018  # glibc, or AttributeError
    except (OSError, AttributeError):  # no libc, or not glibc
        return None
    return libc


def _give_back_memory() -> None:
    """Free pages of the heap go back to the kernel (glibc's malloc_trim)."""
    if _libc is not None:
        _libc.malloc_trim(0)


IDLE_RELEASE = 0.5  # seconds without a parse before a worker unmaps the language model


class _IdleRelease:
    """Unmaps the language model's pages (langmodel.release_pages) from a
    worker that does not need them: at once after a parse that detected
    nothing (its items declare their language), else once the worker has
    had no parse to do for IDLE_RELEASE seconds. So the end of a poll, and
    a daemon's workers between polls, hold none of the model (~25 MB of PSS
    between them); workers busy detecting keep it mapped, sharing its
    pages, rather than fault them back at every task."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._due: float | None = None
        self._asks = 0
        threading.Thread(target=self._run, name="feedhub-idle-release", daemon=True).start()

    def busy(self) -> None:
        with self._changed:
            self._due = None
            self._asks = langmodel.asks()

    def done(self) -> None:
        with self._changed:
            if langmodel.asks() == self._asks:  # this task detected nothing
                langmodel.release_pages()  # (a no-op if nothing is mapped)
            else:
                self._due = time.monotonic() + IDLE_RELEASE
                self._changed.notify()

    def _run(self) -> None:
        with self._changed:
            while True:
                if self._due is None:
                    self._changed.wait()
                elif (left := self._due - time.monotonic()) > 0:
                    self._changed.wait(left)
                else:
                    self._due = None
                    langmodel.release_pages()


_idle: _IdleRelease | None = None  # a parser worker's (see _prepare_worker)


_STOPPING = {signal.SIGINT, signal.SIGTERM}


def _prepare_worker(model_cache: Path | None = None, forked: bool = False) -> None:
    """Workers leave stopping to the parent: a Ctrl-C or a service manager's
    SIGTERM to the whole group must not break the pool mid-drain. Ignoring
    SIGTERM makes a worker outlive a parent that cannot shut the pool down
    (SIGKILL, the OOM killer), so each worker also ties its life to it.
    `model_cache`: where the shared language model file is (langmodel);
    `forked`: from the owner itself (parser_pool), not a forkserver."""
    global _idle, _libc
    langmodel.set_cache_dir(model_cache)
    _libc = _keep_heap_small()
    _idle = _IdleRelease()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # a forked worker has its owner's asyncio wakeup fd: a signal here
    # would wake the owner's loop as if it had been sent there
    signal.set_wakeup_fd(-1)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOPPING)  # blocked by _forked_pool
    _die_with_parent()  # the owner, or the forkserver, which dies with the owner (see the end)
    owner = multiprocessing.parent_process()
    if forked and owner is not None and os.getppid() != owner.pid:
        os._exit(1)  # the owner died before the line above could tie us to it
    _exit_with_owner()


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _die_with_parent() -> None:
    """Have the kernel SIGKILL this process when its parent exits (Linux's
    PR_SET_PDEATHSIG): it works even while this process is stuck in C code
    holding the GIL, where a watching thread never gets to run. Best effort:
    a no-op elsewhere. Strictly the "parent" is the thread that forked us:
    for a forked worker the owner's only thread (parser_pool); for a
    forkserver's worker the forkserver's only thread; for the forkserver the
    owner's thread that first submitted work (the event loop's); for a
    spawned document worker the publishing thread, whose publish closes
    that pool before it returns (document_pool)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        libc.prctl(ctypes.c_int(_PR_SET_PDEATHSIG), ctypes.c_ulong(signal.SIGKILL),
                   ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))
    except (OSError, AttributeError):  # no libc or no prctl in it
        pass


def _exit_with_owner() -> None:
    """Exit as soon as the process that owns the pool (the daemon, or a
    `feedhub poll`) is gone. The watch is multiprocessing's parent sentinel:
    a pipe whose write end only the owner holds, so it reads EOF once the
    owner is dead, however it died and even if it died before this ran;
    no pid that could be reused, and it works wherever the forkserver does.
    It covers what _die_with_parent cannot: no prctl, or a forkserver that
    died (with the owner) before this worker's prctl took effect."""
    owner = multiprocessing.parent_process()
    if owner is None:  # not started by multiprocessing
        return
    sentinel = owner.sentinel

    # (A forked worker also holds the owner's end of the pipes of the
    # workers forked before it: theirs reach EOF once it is gone too. The
    # parent-death signal is what ends them with the owner.)
    def watch() -> None:
        multiprocessing.connection.wait([sentinel])
        os._exit(1)  # our results have no reader; nothing here needs cleaning up

    threading.Thread(target=watch, name="feedhub-owner-watch", daemon=True).start()


def _preloaded_by_forkserver() -> bool:
    """True while multiprocessing's forkserver imports this module (see
    set_forkserver_preload in parser_pool): the one moment our code runs
    in the forkserver itself."""
    forkserver = sys.modules.get("multiprocessing.forkserver")
    if forkserver is None:
        return False
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        if frame.f_code is forkserver.main.__code__:
            return True
        frame = frame.f_back
    return False


def _skip_main_in_workers() -> None:
    """A forkserver worker runs its owner's main script again, as
    __mp_main__, before its first task (multiprocessing does it so that
    functions defined in __main__ can be sent): for the `feedhub` command
    that imports the whole CLI (HTTP client, templates, metrics), 8 MB more
    in every worker. Workers only ever run functions of feedhub's modules,
    so the forkserver, which has no other use, drops that step for every
    worker it forks."""
    import multiprocessing.spawn

    def leave_main_alone(main: str) -> None:
        pass

    multiprocessing.spawn._fixup_main_from_path = leave_main_alone  # type: ignore[attr-defined]
    multiprocessing.spawn._fixup_main_from_name = leave_main_alone  # type: ignore[attr-defined]


def _import_for_workers() -> None:
    """Import in the forkserver what workers would otherwise each import
    for themselves, into private pages, while they parse: numpy and
    py3langid, for any item that declares no language. (Not the renderer:
    workers render after the poll, without the model mapped, far from the
    family's peak; imported here it would add to that peak.) OpenBLAS gets
    one thread: a worker multiplies a few hundred numbers per detection, and
    each idle BLAS thread costs a stack."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    langmodel.import_code()


def parser_pool(workers: int, model_cache: Path | None = None, *, fork: bool = False) -> Executor:
    """Worker processes for parse_poll. Workers that detect languages share
    one mapped model, kept in `model_cache` (langmodel).

    `fork`: the caller has no database connection open (SQLite's and
    libpq's process state must not be carried into a child that opens its
    own, as a worker lent to publishing does). The workers are then forked
    from this process, at once, if it runs a single thread (a command, or
    the daemon as it starts): they share its pages (the interpreter and its
    imports) and need neither a forkserver nor a resource tracker, 27 MB of
    PSS on the real-feeds bench. numpy and py3langid are not imported here
    first: each worker imports them at its first detection. Shared, they
    saved 9 MB on the real feeds, but cost every command 50 ms (a 304
    round of 1,000 sources went over 1 ms a source) and stayed in the owner
    once its workers had ended (a cold poll's publish peaked 11 MB higher).
    Otherwise, or where other threads run (a daemon restarting a broken
    pool: a copied lock may be held by a thread the child does not have),
    they come from a forkserver, which imports what they need itself.

    Nothing here outlives the owner: forked workers get SIGKILL when it
    dies; the forkserver does, its workers when it does; every worker also
    watches the owner itself; the resource tracker exits once none of them
    holds its pipe any more."""
    if fork and _single_threaded():
        return _forked_pool(workers, model_cache)
    if fork:
        log.info("parser workers started by a forkserver: this process runs other threads")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["feedhub.worker"])
    return ProcessPoolExecutor(max_workers=workers, mp_context=context,
                               initializer=_prepare_worker, initargs=(model_cache,))


def _single_threaded() -> bool:
    """True when this process runs one thread, C threads included (Linux's
    /proc lists them all; elsewhere forking is not tried)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return False


def _forked_pool(workers: int, model_cache: Path | None) -> Executor:
    """The pool with its workers forked now, while no other thread exists:
    a fork pool forks all of them at its first submit, before it starts its
    own manager thread. Every object so far goes to the collector's
    permanent generation, so that no collection, here or in a worker, writes
    to the pages they share (gc.freeze's documented use). OpenBLAS, which a
    worker imports at its first detection, gets one thread (see
    _import_for_workers)."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    gc.collect()
    gc.freeze()  # for good: objects of the start that die in a cycle later stay (a few, once)
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork"),
                               initializer=_prepare_worker, initargs=(model_cache, True))
    # A child has its owner's signal handlers until _prepare_worker: a
    # SIGINT or SIGTERM to the whole group (Ctrl-C, a service stop) would
    # reach the owner's asyncio handler through the wakeup fd they share,
    # as a second signal. Blocked across the forks, so in the children
    # until they ignore them; here, delivered once unblocked.
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _STOPPING)
    try:
        pool.submit(os.getpid)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    return pool


def document_pool(workers: int) -> Executor:
    """Worker processes for a publish that has no parser workers to lend
    (a command's, after its poll: documents.py). Spawned, not forked by the
    forkserver: a forkserver holds numpy and py3langid for parsers, and
    alone, once its workers have ended, its pages are its own (~30 MB of
    PSS at the end of a cold `poll`, the family's peak). So it is stopped
    too, if no worker of any pool is left (a later pool starts another).
    Not atomic with a pool being started by another thread of the process
    meanwhile: feedhub's daemon and commands start pools and publish on one
    thread (a daemon with parser workers never gets here)."""
    if not multiprocessing.active_children():
        _stop_forkserver()
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_prepare_worker)


def _stop_forkserver() -> None:
    """multiprocessing's forkserver, stopped (its own "for unit tests"
    _stop: it has no public one); a pool started later starts it again."""
    from multiprocessing import forkserver

    stop = getattr(getattr(forkserver, "_forkserver", None), "_stop", None)
    if stop is not None:
        stop()


def extract_article(page: FetchResult) -> tuple[str | None, str]:
    """The main text of an article page, as sanitized HTML, or None and the
    reason. trafilatura keeps paragraphs, headings, lists, quotes, images and
    links, and drops navigation, share bars, comments and related lists."""
    kind = page.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind and "html" not in kind:
        return None, f"the article page is not HTML ({kind})"
    import trafilatura  # imported on first use: only fulltext sources need it

    tree = trafilatura.load_html(page.content)  # decoded as extract() would
    if tree is None:
        return None, "no article text found on the page"
    base = _make_links_absolute(tree, page.final_url)
    # extract() works on a copy of the tree; `url` is what it resolves the
    # images it picks up itself (a lazy image's data-src) against
    html = trafilatura.extract(
        tree, url=base, output_format="html", include_images=True,
        include_links=True, include_formatting=True, include_comments=False,
        include_tables=True, favor_precision=True)
    if not html:
        return None, "no article text found on the page"
    return sanitize_html(_with_captions(html, tree), base), "extracted"


def _make_links_absolute(tree: HtmlElement, page_url: str) -> str:
    """Every link and image made absolute against the page's base -- its
    first <base href>, itself relative to the page URL, else the page URL --
    as a browser resolves them; returns that base. trafilatura resolves links
    against the site root only (../../x.html on a deep page came out as
    /x.html) and ignores <base href>; lxml's own resolve_base_href takes the
    last <base> and never joins a relative one to the page URL."""
    base = page_url
    hrefs = [(element.get("href") or "").strip() for element in tree.iter("base")]
    if (href := next((h for h in hrefs if h), None)) is not None:
        try:
            candidate = urljoin(page_url, href)
            if urlsplit(candidate).scheme.lower() in ("http", "https"):
                base = candidate
        except ValueError:  # "http://[::1" and the like: the page URL it is
            pass
    for element in list(tree.iter("base")):
        element.drop_tree()
    tree.make_links_absolute(base, resolve_base_href=False, handle_failures="discard")
    return base


def _with_captions(extracted: str, source: HtmlElement) -> str:
    """trafilatura keeps an article's images but drops their <figcaption>:
    put each caption back under its image, found by the image's absolute URL
    in the page (`source`, its links made absolute)."""
    import lxml.html
    from lxml import etree

    try:
        result = lxml.html.fromstring(extracted)
    except (etree.ParserError, ValueError):
        return extracted
    captions = {}
    for figure in source.iter("figure"):
        image, caption = figure.find(".//img"), figure.find(".//figcaption")
        if image is not None and caption is not None and image.get("src"):
            captions[image.get("src")] = caption.text_content().strip()
    if not captions:
        return extracted
    for image in list(result.iter("img")):
        text = captions.get(image.get("src", ""))
        if text and image.getparent() is not None:
            wrapper = etree.Element("figure")
            # lxml takes any element here; types-lxml wants an HtmlElement beside an HtmlElement
            image.addprevious(wrapper)  # type: ignore[arg-type]
            wrapper.tail, image.tail = image.tail, None  # text after the image stays after it
            wrapper.append(image)
            etree.SubElement(wrapper, "figcaption").text = text
    return lxml.html.tostring(result, encoding="unicode")


def detect_item_language(item: Item,
                         languages: LanguageContext) -> tuple[str, str | None, float | None]:
    """Detection again, on the extracted article rather than the teaser, by
    the same rules; when it does not decide, the item keeps the language its
    feed text gave (the source's usual one, or a sure detection)."""
    with _task():
        return decide(detect(item), replace(languages, usual=item.language))


if _preloaded_by_forkserver():
    # The forkserver would outlive its owner for as long as one worker holds
    # the owner's end of its alive pipe. Dying with the owner is safe: had it
    # died before this line, the alive pipe is already at EOF (no worker
    # exists yet) and the forkserver exits by itself. A forkserver killed while
    # its owner lives takes the workers along: the hub sees a BrokenExecutor
    # and its new pool starts a new forkserver.
    _die_with_parent()
    _skip_main_in_workers()
    _import_for_workers()
    # Every object imported so far goes to the collector's permanent
    # generation: a worker's collections then never write to the pages it
    # shares with the forkserver, which stay shared (see gc.freeze)
    gc.freeze()
