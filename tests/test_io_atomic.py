"""AtomicFile / atomic_write: content in pieces, commit (durable rename with
the umask's mode), abort and errors leave the old file and no temp file."""

from __future__ import annotations

import os

import pytest

from weightspace.errors import InputFileError
from weightspace.io import AtomicFile, atomic_write, write_all


def _temps(d):
    return sorted(p.name for p in d.iterdir() if p.name.endswith(".tmp"))


def test_atomic_file_writes_at_offsets_and_commits(tmp_path):
    dest = tmp_path / "sub" / "f.bin"
    f = AtomicFile(dest)
    write_all(f.fd, b"world", 6)
    write_all(f.fd, bytearray(b"hello "), 0)
    assert not dest.exists() and len(_temps(dest.parent)) == 1
    assert f.commit() == dest
    assert dest.read_bytes() == b"hello world"
    umask = os.umask(0)
    os.umask(umask)
    assert dest.stat().st_mode & 0o777 == 0o666 & ~umask
    assert _temps(dest.parent) == []
    with pytest.raises(ValueError, match="already committed"):
        f.commit()


def test_abort_and_errors_keep_the_old_file(tmp_path):
    dest = tmp_path / "f.txt"
    dest.write_text("old")
    f = AtomicFile(dest)
    write_all(f.fd, b"new")
    f.abort()
    assert dest.read_text() == "old" and _temps(tmp_path) == []
    with pytest.raises(RuntimeError, match="boom"):
        with AtomicFile(dest) as g:
            write_all(g.fd, b"half")
            raise RuntimeError("boom")
    assert dest.read_text() == "old" and _temps(tmp_path) == []
    with AtomicFile(dest) as g:
        write_all(g.fd, b"new")
    assert dest.read_text() == "new"

    def fail_before_replace():
        raise OSError("disk on fire")

    with pytest.raises(OSError, match="disk on fire"):
        atomic_write(dest, b"other", before_replace=fail_before_replace)
    assert dest.read_text() == "new" and _temps(tmp_path) == []


def test_atomic_write_bytes_text_and_writer_callables(tmp_path):
    assert atomic_write(tmp_path / "a", b"\x00\x01").read_bytes() == b"\x00\x01"
    assert atomic_write(tmp_path / "b", "text é").read_text(encoding="utf-8") == "text é"
    atomic_write(tmp_path / "c", lambda p: p.write_bytes(b"by path"))
    assert (tmp_path / "c").read_bytes() == b"by path" and _temps(tmp_path) == []


def test_a_directory_is_not_a_file_to_write(tmp_path):
    with pytest.raises(InputFileError, match="is a directory") as e:
        AtomicFile(tmp_path)
    assert e.value.path == str(tmp_path)
    blocker = tmp_path / "plain"
    blocker.write_text("x")
    with pytest.raises(InputFileError, match="cannot write here"):
        atomic_write(blocker / "f", b"y")
