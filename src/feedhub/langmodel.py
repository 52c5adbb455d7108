"""py3langid's language model, held where every parser worker shares it.

py3langid loads its model into each process that detects: about 75 MB of
arrays (the DFA that finds byte n-grams, the per-language weights) plus
200,000 ints in lists, and 130 MB at the peak of loading (lzma, npz). With
two parser workers that was two private copies, the family's largest cost
(issue 13). Here the model's arrays are written once, uncompressed, to a
cache file next to the database, and every process that detects maps that
file read-only: its pages are the page cache's, shared by all workers
(PSS divides them), read only where a text actually leads, and reclaimable
by the kernel like any clean file page. A hub that never detects never
opens it. The numbers are the model's own, so answers do not move
(tests/test_langmodel.py compares every ranking with py3langid's loader).

Without a writable cache directory the model is loaded as py3langid loads
it, into the process.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import lzma
import mmap
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from py3langid.langid import LanguageIdentifier

log = logging.getLogger(__name__)

FORMAT = 1  # of the cache file; a new one gets a new name
_PAGE = mmap.PAGESIZE
# The npz members, the dtype the cache holds each in, and how the
# identifier indexes it: numpy for the weights, memoryview for the DFA
# (item access on a memoryview is as fast as on py3langid's array/list and
# gives the same Python ints).
_ARRAYS = {"ptc": "<f2", "pc": "<f4", "nextmove": "<u4", "rowbase": "<u4", "row": "<u2",
           "out_feat": "<i4"}
_VIEWS = {"nextmove": "I", "rowbase": "I", "row": "H", "out_feat": "i"}

_fallback_dir: Path | None = None
_identifier: LanguageIdentifier | None = None
_mapping: mmap.mmap | None = None  # kept open for as long as the identifier lives


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
    global _identifier
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
    with path.open("rb") as file:
        mapping = mmap.mmap(file.fileno(), 0, prot=mmap.PROT_READ)
    try:
        found = _from_mapping(mapping)
    except Exception:
        with contextlib.suppress(BufferError):  # a view of it may still be alive
            mapping.close()
        raise
    global _mapping
    _mapping = mapping
    return found


def _from_mapping(mapping: mmap.mmap) -> LanguageIdentifier:
    """The identifier py3langid's from_model_file(norm_probs=True) builds,
    its big parts views of the mapping instead of private copies."""
    import numpy as np
    from py3langid.langid import LanguageIdentifier

    if sys.byteorder != "little":  # the cache is little-endian, the views native
        raise ValueError("not a little-endian machine")
    header_size = int.from_bytes(mapping[:8], "little")
    header = json.loads(mapping[8:8 + header_size])
    if header.get("format") != FORMAT or set(header["arrays"]) != set(_ARRAYS):
        raise ValueError("unexpected language model cache layout")
    whole = memoryview(mapping)
    parts: dict[str, Any] = {}
    for name, (offset, shape) in header["arrays"].items():
        count = 1
        for n in shape:
            count *= n
        size = count * np.dtype(_ARRAYS[name]).itemsize
        if offset + size > len(mapping):
            raise ValueError("language model cache is truncated")
        raw = whole[offset:offset + size]
        parts[name] = (raw.cast(_VIEWS[name]) if name in _VIEWS
                       else np.frombuffer(raw, dtype=_ARRAYS[name]).reshape(shape))
    classes = header["classes"]
    model = LanguageIdentifier.__new__(LanguageIdentifier)
    # what LanguageIdentifier.__init__ sets (py3langid 0.4), min_confidence
    # None and norm_probs True as enrich asks for
    model.min_confidence = None
    model.nb_ptc = parts["ptc"]
    model.nb_pc = np.array(parts["pc"])  # 142 floats: a private copy costs nothing
    model.nb_classes = classes
    model.tk_nextmove = parts["nextmove"]
    model.tk_row = parts["row"]
    model._rowbase = parts["rowbase"]
    model.tk_output = parts["out_feat"]
    model._norm_probs = True
    model._full_model = model.nb_ptc, model.nb_pc, model.nb_classes
    model._set_alias_pairs()
    return model


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
                    for name in _ARRAYS:  # each array read, written and dropped in turn
                        array = _cache_array(name, data)
                        out.seek(offset)
                        out.write(array.data)
                        arrays[name] = [offset, list(array.shape)]
                        offset += -(-array.nbytes // _PAGE) * _PAGE
                        del array
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


def source_name(name: str) -> str:
    """The npz member a cached array comes from (rowbase is derived)."""
    return {"rowbase": "nextmove_row", "row": "nextmove_row"}.get(name, name)


def _cache_array(name: str, data: Any) -> Any:
    """One array as the cache holds it; the values py3langid's loader gives
    (modelio.load_model, LanguageIdentifier.__init__): rowbase is each
    state's row << 8."""
    import numpy as np

    array = data[source_name(name)]
    if name == "rowbase":
        array = array.astype(np.uint32) << 8
    converted = np.ascontiguousarray(array, dtype=_ARRAYS[name])
    if not np.array_equal(converted, array):
        raise ValueError(f"language model {name} does not fit {_ARRAYS[name]}")
    return converted
