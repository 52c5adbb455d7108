"""Publishing's batched writes (issue 13): files appear only when the batch
ends, each replaced whole, with its mode kept; an error leaves the old files
and no temp files behind."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import brotli
import pytest

from feedhub import _files
from feedhub.publish import batched_writes, remove_document, write_if_changed


def test_files_appear_when_the_batch_ends_and_keep_their_mode(tmp_path: Path) -> None:
    old = tmp_path / "a.atom"
    old.write_bytes(b"old")
    os.chmod(old, 0o600)
    (tmp_path / "sub").mkdir()
    with batched_writes():
        assert write_if_changed(old, b"new")
        assert write_if_changed(tmp_path / "sub" / "b.atom", b"b")
        assert old.read_bytes() == b"old" and not (tmp_path / "sub" / "b.atom").exists()
        with batched_writes():  # nested: joins the outer batch
            write_if_changed(tmp_path / "c.atom", b"c")
        assert not (tmp_path / "c.atom").exists()
    assert old.read_bytes() == b"new" and old.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "sub" / "b.atom").read_bytes() == b"b"
    assert (tmp_path / "c.atom").read_bytes() == b"c"
    assert (tmp_path / "c.atom").stat().st_mode & 0o777 == 0o644
    assert not [p for p in tmp_path.rglob(".*.tmp")]
    assert not write_if_changed(old, b"new")  # same bytes: not written


def test_an_error_in_the_batch_replaces_nothing_and_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "a.atom"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), batched_writes():
        write_if_changed(target, b"new")
        raise RuntimeError("rendering failed")
    assert target.read_bytes() == b"old"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_without_syncfs_every_file_is_fsynced(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(_files, "_syncfs", None)
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
    with batched_writes():
        for n in range(3):
            write_if_changed(tmp_path / f"{n}.atom", b"x")
    assert len(synced) == 3 * 3 + 1  # each file and its .br and .gz, then the directory once
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"{n}.atom{suffix}" for n in range(3) for suffix in ("", ".br", ".gz")]


def test_a_write_that_fails_in_the_background_fails_the_batch(tmp_path: Path) -> None:
    """Temp files are written by background threads: a failed write (here
    into a "directory" that is a file) is raised when the batch ends, and
    then no file of the batch replaces its target and no temp file is left.
    (A directory that is not there is made: see the next test.)"""
    target = tmp_path / "a.atom"
    target.write_bytes(b"old")
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(NotADirectoryError), batched_writes():
        for n in range(40):  # more than the writes let in flight at once
            write_if_changed(tmp_path / f"{n}.atom", b"new %d" % n)
        write_if_changed(target, b"new")
        write_if_changed(tmp_path / "file" / "b.atom", b"b")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.atom", "file"]


def test_a_write_makes_its_folder(tmp_path: Path) -> None:
    """The writer thread makes a missing folder (publishing no longer makes
    one before each document)."""
    with batched_writes():
        write_if_changed(tmp_path / "archive" / "en" / "1.atom", b"page")
    assert (tmp_path / "archive" / "en" / "1.atom").read_bytes() == b"page"
    assert (tmp_path / "archive" / "en" / "1.atom.gz").exists()


def _copies(path: Path) -> tuple[Path, Path]:
    return path.with_name(path.name + ".br"), path.with_name(path.name + ".gz")


@pytest.mark.parametrize("name", ["en.atom", "index.html", "index.opml", "feed.json"])
def test_documents_get_compressed_copies_of_their_exact_bytes(tmp_path: Path, name: str) -> None:
    """Issue 15: NAME.br and NAME.gz beside each document, written in its
    batch, for the server and nginx's gzip_static to send as they are."""
    document = tmp_path / name
    data = "<feed>Ünïcode \u062e\u0628\u0631</feed>\n".encode() * 500
    with batched_writes():
        assert write_if_changed(document, data)
        assert not any(p.exists() for p in (document, *_copies(document)))
    br, gz = _copies(document)
    assert brotli.decompress(br.read_bytes()) == data == gzip.decompress(gz.read_bytes())
    assert gz.read_bytes()[4:8] == b"\0\0\0\0"  # gzip mtime 0: the same bytes every time
    assert len(br.read_bytes()) < len(data) and len(gz.read_bytes()) < len(data)
    assert br.stat().st_mtime_ns >= document.stat().st_mtime_ns <= gz.stat().st_mtime_ns


def test_copies_are_rewritten_only_with_the_document(tmp_path: Path) -> None:
    document = tmp_path / "en.atom"
    write_if_changed(document, b"<feed>one</feed>")
    stamps = [p.stat().st_mtime_ns for p in (document, *_copies(document))]
    os.utime(document, ns=(stamps[0] - 10**9, stamps[0] - 10**9))  # older than its copies
    stamps[0] -= 10**9
    assert not write_if_changed(document, b"<feed>one</feed>")
    assert [p.stat().st_mtime_ns for p in (document, *_copies(document))] == stamps
    assert write_if_changed(document, b"<feed>two</feed>")
    assert [gzip.decompress(_copies(document)[1].read_bytes()),
            brotli.decompress(_copies(document)[0].read_bytes())] == [b"<feed>two</feed>"] * 2


def test_a_missing_or_outdated_copy_is_written_though_the_document_is_unchanged(
        tmp_path: Path) -> None:
    """An output dir from before issue 15 has no copies: the next publish
    writes them; a copy older than its document (replaced by hand) too."""
    document = tmp_path / "en.atom"
    document.write_bytes(b"<feed>old dir</feed>")
    assert not write_if_changed(document, b"<feed>old dir</feed>")  # the document stays
    br, gz = _copies(document)
    assert brotli.decompress(br.read_bytes()) == b"<feed>old dir</feed>"
    gz.unlink()
    os.utime(br, ns=(document.stat().st_mtime_ns - 10**9,) * 2)
    assert not write_if_changed(document, b"<feed>old dir</feed>")
    assert gzip.decompress(gz.read_bytes()) == b"<feed>old dir</feed>"
    assert br.stat().st_mtime_ns >= document.stat().st_mtime_ns


def test_other_files_get_no_copies_and_removal_takes_the_copies(tmp_path: Path) -> None:
    write_if_changed(tmp_path / "notes.txt", b"x")
    write_if_changed(tmp_path / "en.atom", b"<feed/>")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "en.atom", "en.atom.br", "en.atom.gz", "notes.txt"]
    remove_document(tmp_path / "en.atom")
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_a_failed_batch_leaves_no_copies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from feedhub import publish

    target = tmp_path / "a.atom"
    with pytest.raises(RuntimeError), batched_writes():
        write_if_changed(target, b"new")
        raise RuntimeError("rendering failed")
    assert list(tmp_path.iterdir()) == []

    def broken(data: bytes) -> bytes:
        raise MemoryError("compressing failed")

    monkeypatch.setitem(publish.ENCODINGS, ".br", broken)
    with pytest.raises(MemoryError), batched_writes():
        write_if_changed(tmp_path / "b.atom", b"b")
        write_if_changed(target, b"new")
    assert list(tmp_path.iterdir()) == []


def test_copies_left_for_later_go_with_the_old_bytes_and_come_back_from_the_new(
        tmp_path: Path) -> None:
    """Within copies_later (a publish's feeds), a document's copies wait:
    a changed document's old copies are deleted in its batch, just before
    it is replaced, and write_copies makes the new ones from the file on
    disk; an unchanged document keeps its copies, a missing copy waits too,
    and outdated ones go at once."""
    from feedhub.publish import copies_later, write_copies

    names = ("en.atom", "de.atom", "fr.atom", "es.atom")
    changed, unchanged, lost, outdated = (tmp_path / name for name in names)
    for document in (changed, unchanged, lost, outdated):
        write_if_changed(document, b"<feed>one</feed>")
    _copies(lost)[1].unlink()
    stamp = outdated.stat().st_mtime_ns + 10**9  # replaced by other means, after its copies
    os.utime(outdated, ns=(stamp, stamp))
    kept = [p.read_bytes() for p in _copies(unchanged)]
    with copies_later() as later:
        with batched_writes():
            assert write_if_changed(changed, b"<feed>two</feed>")
            assert not write_if_changed(unchanged, b"<feed>one</feed>")
            assert not write_if_changed(lost, b"<feed>one</feed>")
            assert not write_if_changed(outdated, b"<feed>one</feed>")
            assert all(p.exists() for p in _copies(changed))  # until the batch ends
        assert changed.read_bytes() == b"<feed>two</feed>"
        assert not any(p.exists() for p in _copies(changed) + _copies(outdated))
        assert [p.read_bytes() for p in _copies(unchanged)] == kept
    assert list(later) == [changed, lost, outdated]
    with batched_writes():
        assert all(write_copies(document) for document in later)
    for document in (changed, unchanged, lost, outdated):
        br, gz = _copies(document)
        assert brotli.decompress(br.read_bytes()) == gzip.decompress(gz.read_bytes()) == (
            document.read_bytes())
    assert not [p for p in tmp_path.rglob(".*.tmp")]
    changed.unlink()
    assert not write_copies(changed)  # removed since: nothing to copy
