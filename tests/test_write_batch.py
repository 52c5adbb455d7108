"""Publishing's batched writes (issue 13): files appear only when the batch
ends, each replaced whole, with its mode kept; an error leaves the old files
and no temp files behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from feedhub import _files
from feedhub.publish import batched_writes, write_if_changed


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
    assert len(synced) == 3 + 1  # each file, then the directory once
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0.atom", "1.atom", "2.atom"]


def test_a_write_that_fails_in_the_background_fails_the_batch(tmp_path: Path) -> None:
    """Temp files are written by background threads: a failed write (here a
    directory that is not there) is raised when the batch ends, and then no
    file of the batch replaces its target and no temp file is left."""
    target = tmp_path / "a.atom"
    target.write_bytes(b"old")
    with pytest.raises(FileNotFoundError), batched_writes():
        for n in range(40):  # more than the writes let in flight at once
            write_if_changed(tmp_path / f"{n}.atom", b"new %d" % n)
        write_if_changed(target, b"new")
        write_if_changed(tmp_path / "missing" / "b.atom", b"b")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.atom"]
