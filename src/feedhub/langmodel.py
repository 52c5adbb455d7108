"""py3langid's language model, held where every parser worker shares it.

py3langid loads its model into each process that detects: about 75 MB of
arrays (a DFA that finds byte n-grams, 38,346 rows x 256 next states; the
per-language weights) plus 200,000 ints in lists, 130 MB at the peak of
loading (lzma, npz). With two parser workers that was two private copies,
the family's largest cost (issue 13). Here the model is written once, to a
cache file, and every process that detects maps that file read-only: its
pages are the page cache's, shared by all workers (PSS divides them),
clean and reclaimable by the kernel, and a hub that never detects never
opens it. It is kept small, losslessly: the DFA's rows cut into blocks of
16 next states, each distinct block kept once (55,779 of 613,536), 5 MB
instead of 38; the weights as 12-bit codes into the 1,799 distinct
float16 values, 20 MB instead of 28. The walk looks a state's block up,
then the state in it, in the mapping: it reads all over the DFA. The
weights are not mapped: a text needs a few hundred of their 94,000 rows,
read with pread, one row (its codes end to end) a call. The page cache
holds a file in large folios, and a fault maps the whole folio: 30 rows
read through a mapping made 18 MB of it resident, so every worker that
detected held all 20 MB in its PSS. Same states, same features, same
counts, the same float16 weights into the same matmul, so the same scores
(tests/test_langmodel.py compares every ranking with py3langid's loader).

Without a writable cache directory the model is loaded as py3langid loads
it, into the process.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import logging
import lzma
import mmap
import os
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from py3langid.langid import LanguageIdentifier

log = logging.getLogger(__name__)

FORMAT = 4  # of the cache file; a new one gets a new name
_PAGE = mmap.PAGESIZE
BLOCK = 16  # next states per block of a DFA row
_CHUNK = 8192  # rows at a time when checking what is written against the model
# What the cache holds, as (dtype, memoryview format or None for numpy):
# the weights (feature x language, float16) as 12-bit codes into `book`,
# the bit patterns of the 1,799 distinct weights, one row per feature in
# `rows`: the low 8 bits of each code, then the high 4, two to a byte (20
# MB, not 28; read, never mapped: _weights); `pc`, the per-language priors.
# The DFA: `blocks`, the distinct blocks of next states end to end;
# `block_at`, per row and block, where its block starts in `blocks`;
# `rowbase`, per state, where its row starts in `block_at`; `out_feat`, per
# state, the feature it counts (-1: none). Item access on a memoryview is
# as fast as on py3langid's array/list and gives the same Python ints.
_ARRAYS = {"rows": ("<u1", None), "book": ("<u2", None),
           "pc": ("<f4", None), "blocks": ("<u4", "I"), "block_at": ("<u4", "I"),
           "rowbase": ("<u4", "I"), "out_feat": ("<i4", "i")}
_HIGH = bytes(b >> 4 for b in range(256))  # which block of a row a byte picks
_LOW = bytes(b & 15 for b in range(256))  # and which next state in that block

_fallback_dir: Path | None = None
_identifier: LanguageIdentifier | None = None
_mapping: mmap.mmap | None = None  # kept open for as long as the identifier lives
_asks = 0  # calls of identifier(), ever
_mapped_since_release = False  # identifier() called since the last release_pages()


def set_cache_dir(directory: Path | None) -> None:
    """Where to keep the uncompressed model when the user's cache directory
    cannot be written: the database's directory, the one place a confined
    daemon (contrib/feedhub.service: ProtectHome) may write."""
    global _fallback_dir
    _fallback_dir = directory


def identifier() -> LanguageIdentifier:
    """The identifier, loaded on first use: mapped from the cache file
    (written first if missing) in the user's cache directory, else in the
    database's; failing both, loaded into this process as py3langid does."""
    global _identifier, _asks, _mapped_since_release
    _asks += 1
    _mapped_since_release = True
    if _identifier is None:
        problems = []
        for directory in _cache_dirs():
            try:
                _identifier = _mapped(directory / _cache_name())
                break
            except (OSError, ValueError, KeyError) as exc:
                problems.append(f"{directory}: {exc}")
        else:
            log.warning("language model not shared (%s): loading it into this process",
                        "; ".join(problems))
            from py3langid.langid import MODEL_FILE, LanguageIdentifier

            _identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    return _identifier


def release_pages() -> None:
    """Unmap the model's pages from this process until it detects again
    (they stay in the page cache, and a detection maps them back): parser
    workers call it before they render entries, which never detects, and
    when idle or done with a task that did not detect."""
    global _mapped_since_release
    if _mapped_since_release and _mapping is not None and hasattr(mmap, "MADV_DONTNEED"):
        _mapping.madvise(mmap.MADV_DONTNEED)
    _mapped_since_release = False


def asks() -> int:
    """How many times identifier() was called (a task's detections: the
    difference before and after)."""
    return _asks


def import_code() -> None:
    """Import what detecting needs (numpy, py3langid) without loading the
    model: the forkserver, or an owner about to fork its workers, does, so
    that the workers share those pages."""
    _identifier_class()


def loaded() -> bool:
    """True once this process has the model (tests: a hub that never
    detects must never load it)."""
    return _identifier is not None


def _model_file() -> Path:
    from py3langid.langid import MODEL_DIR, MODEL_FILE

    return Path(MODEL_DIR) / MODEL_FILE


def _cache_dirs() -> list[Path]:
    try:
        user = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "feedhub"
    except RuntimeError:  # no home directory
        return [_fallback_dir] if _fallback_dir else []
    return [user] + ([_fallback_dir] if _fallback_dir else [])


def _cache_name() -> str:
    """Named after the model file it comes from (size and mtime), so an
    upgraded py3langid gets a new one."""
    stat = _model_file().stat()
    return f"langid-model-{FORMAT}-{stat.st_size}-{stat.st_mtime_ns}.bin"


def _mapped(path: Path) -> LanguageIdentifier:
    if not path.exists():
        _write_cache(path)
    fd = os.open(path, os.O_RDONLY)  # kept open for _weights' preads
    try:
        found, mapping = _from_file(fd)
    except BaseException:
        os.close(fd)
        raise
    global _mapping
    _mapping = mapping
    return found


def _from_file(fd: int) -> tuple[LanguageIdentifier, mmap.mmap]:
    """The identifier py3langid's from_model_file(norm_probs=True) builds,
    its DFA views of a mapping of the file instead of private copies, its
    weights read from `fd` row by row. The mapping starts after the rows
    (the first array; the header page is read, not mapped): a fault at its
    edge maps a whole large folio, never one of theirs."""
    import numpy as np

    if sys.byteorder != "little":  # the cache is little-endian, the views native
        raise ValueError("not a little-endian machine")
    header_size = int.from_bytes(os.pread(fd, 8, 0), "little")
    header = json.loads(os.pread(fd, header_size, 8))
    if header.get("format") != FORMAT or set(header["arrays"]) != set(_ARRAYS):
        raise ValueError("unexpected language model cache layout")
    file_size = os.fstat(fd).st_size
    sizes = {name: int(np.prod(shape)) * np.dtype(_ARRAYS[name][0]).itemsize
             for name, (_, shape) in header["arrays"].items()}
    rows_at, rows_shape = header["arrays"]["rows"]
    base = min(offset for name, (offset, _) in header["arrays"].items() if name != "rows")
    if rows_at + sizes["rows"] > base or base % mmap.ALLOCATIONGRANULARITY:
        raise ValueError("unexpected language model cache layout")
    if any(offset + sizes[name] > file_size for name, (offset, _) in header["arrays"].items()):
        raise ValueError("language model cache is truncated")
    mapping = mmap.mmap(fd, file_size - base, prot=mmap.PROT_READ, offset=base)
    try:
        whole = memoryview(mapping)
        parts: dict[str, Any] = {"rows": (fd, rows_at, rows_shape[1])}
        for name, (offset, shape) in header["arrays"].items():
            if name == "rows":
                continue
            dtype, view = _ARRAYS[name]
            raw = whole[offset - base:offset - base + sizes[name]]
            parts[name] = (raw.cast(view) if view  # type: ignore[call-overload]  # a format str
                           else np.frombuffer(raw, dtype=dtype).reshape(shape))
        return _identifier_from(parts, header["classes"]), mapping
    except BaseException:
        with contextlib.suppress(BufferError):  # a view of it may still be alive
            mapping.close()
        raise


def _identifier_from(parts: dict[str, Any], classes: list[str]) -> LanguageIdentifier:
    import numpy as np

    identifier: Any = _identifier_class()
    model = identifier.__new__(identifier)
    # what LanguageIdentifier.__init__ sets (py3langid 0.4), min_confidence
    # None and norm_probs True as enrich asks for; the DFA in our layout
    model.min_confidence = None
    model.nb_ptc = None  # not used: _sparse_score rebuilds the rows it needs
    model._rows, model._book = parts["rows"], parts["book"]
    model.nb_pc = np.array(parts["pc"])  # 142 floats: a private copy costs nothing
    model.nb_classes = classes
    model.tk_nextmove = None  # not used: _raw_score walks the blocks
    model.tk_row = None
    model._blocks = parts["blocks"]
    model._block_at = parts["block_at"]
    model._rowbase = parts["rowbase"]
    model.tk_output = parts["out_feat"]
    model._norm_probs = True
    model._full_model = model.nb_ptc, model.nb_pc, model.nb_classes
    model._set_alias_pairs()
    return model


@functools.cache
def _identifier_class() -> type[LanguageIdentifier]:
    """py3langid's identifier walking the block-compressed DFA; defined on
    first use, so that importing this module imports neither py3langid nor
    numpy (a process that detects nothing never needs them)."""
    import numpy as np
    from py3langid.langid import LanguageIdentifier

    class SharedIdentifier(LanguageIdentifier):
        __slots__ = ("_block_at", "_blocks", "_book", "_rows")

        def _sparse_score(self, visits: Counter[int], table: None) -> Any:
            """py3langid 0.4's _sparse_score, the rows of the weights table
            rebuilt from their codes: the same float16 array as table[idx]."""
            idx = np.fromiter(visits.keys(), dtype=np.intp, count=len(visits))
            counts = np.fromiter(visits.values(), dtype=np.float32, count=len(visits))
            return np.log1p(counts) @ self._weights(idx) + self.nb_pc

        def _weights(self, idx: Any) -> Any:
            fd, offset, size = self._rows
            pread, wanted = os.pread, idx.tolist()
            data = b"".join([pread(fd, size, offset + row * size) for row in wanted])
            if len(data) != size * len(wanted):
                raise ValueError("language model cache is truncated")
            rows = np.frombuffer(data, dtype=np.uint8).reshape(len(wanted), size)
            low, high = rows[:, :2 * size // 3], rows[:, 2 * size // 3:]
            codes = np.empty(low.shape, dtype=np.uint16)
            codes[:, 0::2] = high & 15
            codes[:, 1::2] = high >> 4
            codes <<= 8
            codes |= low
            return np.take(self._book, codes).view(np.float16)

        def _raw_score(self, text: bytes) -> Any:
            """py3langid 0.4's _raw_score (norm_probs), the DFA walked in
            blocks: the same states in the same order as visit_counts."""
            state, indexes = 0, list[int]()
            append = indexes.append
            blocks, block_at, rowbase, out = (self._blocks, self._block_at, self._rowbase,
                                              self.tk_output)
            for high, low in zip(text.translate(_HIGH), text.translate(_LOW), strict=True):
                state = blocks[block_at[rowbase[state] + high] + low]
                feature = out[state]
                if feature >= 0:
                    append(feature)
            if indexes:
                return self._sparse_score(Counter(indexes), self.nb_ptc)
            return np.full(len(self.nb_classes), 0.0, dtype=np.float32)

    return SharedIdentifier


def _write_cache(path: Path) -> None:
    """Decompress the model once into `path`, an array at a time (the peak
    is the largest array, not the whole model), and swap it in atomically.
    A lock keeps two workers starting together from both doing it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with (path.parent / ".langid-model.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():  # the other worker wrote it while we waited
            return
        import numpy as np

        with tempfile.TemporaryFile(dir=path.parent) as npz:
            with lzma.open(_model_file()) as source:
                shutil.copyfileobj(source, npz, length=1 << 20)
            npz.seek(0)
            fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".langid-model-")
            try:
                with os.fdopen(fd, "wb") as out, np.load(npz, allow_pickle=False) as data:
                    arrays, offset = {}, _PAGE
                    for name, array in _cache_arrays(data):  # each written, then dropped
                        out.seek(offset)
                        out.write(array.data)
                        arrays[name] = [offset, list(array.shape)]
                        offset += -(-array.nbytes // _PAGE) * _PAGE
                        del array
                    if set(arrays) != set(_ARRAYS):
                        raise ValueError("language model cache is incomplete")
                    out.truncate(offset)
                    header = json.dumps({"format": FORMAT, "classes": data["classes"].tolist(),
                                         "arrays": arrays}).encode()
                    if 8 + len(header) > _PAGE:
                        raise ValueError("language model header does not fit its page")
                    out.seek(0)
                    out.write(len(header).to_bytes(8, "little") + header)
                    out.flush()
                    os.fsync(out.fileno())
                    os.fchmod(out.fileno(), 0o644)  # public data; mkstemp made it 0600
                os.replace(temporary, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
                raise
    for stale in path.parent.glob("langid-model-*.bin"):
        if stale != path:
            with contextlib.suppress(OSError):
                stale.unlink()


def _cache_arrays(data: Any) -> Any:
    """The cache's arrays, one at a time, from py3langid's npz (the values
    its loader gives: modelio.load_model, LanguageIdentifier.__init__)."""
    import numpy as np

    yield from _coded_weights(np.ascontiguousarray(data["ptc"], dtype="<f2"))
    yield "pc", np.ascontiguousarray(data["pc"], dtype="<f4")
    rows = data["nextmove"]  # each data[...] reads the npz again: once
    if rows.dtype.kind != "u" or rows.dtype.itemsize > 4:
        raise ValueError("language model next states do not fit 32 bits")
    cut = np.ascontiguousarray(rows, dtype="<u4").reshape(-1, BLOCK)
    # blocks told apart by a 64-bit hash of their 16 states (FNV-1a over
    # the words), so that finding the distinct ones needs 8 bytes a block,
    # not a sorted copy of the table; a collision fails the check below
    digest = np.full(len(cut), 0xCBF29CE484222325, dtype=np.uint64)
    for column in range(BLOCK):
        digest ^= cut[:, column]
        digest *= np.uint64(0x100000001B3)
    _, first, which = np.unique(digest, return_index=True, return_inverse=True)
    del digest
    blocks = np.ascontiguousarray(cut[first]).ravel()
    block_at = (which.astype("<u4") * BLOCK).ravel()
    del first, which
    # lossless, or no cache: every row put back together must be the row
    for start in range(0, len(cut), _CHUNK):
        if not np.array_equal(blocks.reshape(-1, BLOCK)[block_at[start:start + _CHUNK] // BLOCK],
                              cut[start:start + _CHUNK]):
            raise ValueError("language model blocks do not rebuild its rows")
    del rows, cut
    yield "blocks", blocks
    yield "block_at", block_at
    del blocks, block_at
    yield "rowbase", data["nextmove_row"].astype("<u4") * (256 // BLOCK)
    features = data["out_feat"]
    out_feat = np.ascontiguousarray(features, dtype="<i4")
    if not np.array_equal(out_feat, features):
        raise ValueError("language model features do not fit 32 bits")
    yield "out_feat", out_feat


def _coded_weights(ptc: Any) -> Any:
    """The weights table as book and rows of codes (see _ARRAYS), compared
    bit for bit with the table before anything is written."""
    import numpy as np

    bits = ptc.view("<u2")
    seen = np.zeros(1 << 16, dtype=bool)
    for start in range(0, len(bits), _CHUNK):  # bincount makes int64 of all it counts
        seen |= np.bincount(bits[start:start + _CHUNK].ravel(), minlength=1 << 16) > 0
    book = np.flatnonzero(seen).astype("<u2")
    if len(book) > 1 << 12 or bits.shape[1] % 2:
        raise ValueError("language model weights do not fit 12-bit codes in pairs")
    code_of = np.zeros(1 << 16, dtype="<u2")
    code_of[book] = np.arange(len(book))
    width = bits.shape[1]
    rows = np.empty((len(bits), width + width // 2), dtype="<u1")
    low, high = rows[:, :width], rows[:, width:]
    for start in range(0, len(bits), _CHUNK):  # in slices: temporaries stay small
        part = slice(start, start + _CHUNK)
        codes = code_of[bits[part]]
        low[part] = codes & 255
        high[part] = (codes[:, 0::2] >> 8) | (codes[:, 1::2] >> 8 << 4)
        rebuilt = np.empty(codes.shape, dtype="<u2")
        rebuilt[:, 0::2] = high[part] & 15
        rebuilt[:, 1::2] = high[part] >> 4
        if not np.array_equal(book[(rebuilt << 8) | low[part]], bits[part]):
            raise ValueError("language model weights do not rebuild from their codes")
    yield "rows", rows
    yield "book", book
