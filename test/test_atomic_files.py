"""clipseg_ros.atomic_files: the content lands, the mode is open()'s, and a failed write changes nothing."""
import os
import stat

import pytest

from clipseg_ros.atomic_files import atomic_write_bytes, atomic_write_text


def test_writes_bytes_and_text(tmp_path):
    p = tmp_path / "a.bin"
    assert atomic_write_bytes(p, b"\x00\x01abc") == p
    assert p.read_bytes() == b"\x00\x01abc"
    atomic_write_bytes(p, b"new")                                 # replaces an existing file
    assert p.read_bytes() == b"new"
    t = atomic_write_text(str(tmp_path / "b.md"), "ünïcode\nline 2\n")
    assert t.read_text(encoding="utf-8") == "ünïcode\nline 2\n"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["a.bin", "b.md"]   # no temporary files left


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_mode_honours_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        p = atomic_write_text(tmp_path / "f.json", "{}")
        ref = tmp_path / "ref.json"
        ref.write_text("{}")                                       # what open() would give
    finally:
        os.umask(old)
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~mask == stat.S_IMODE(ref.stat().st_mode)



def test_a_failure_midway_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    p = tmp_path / "results.json"
    p.write_text("old")
    real_fsync = os.fsync

    def failing_fsync(fd):
        real_fsync(fd)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="No space"):
        atomic_write_text(p, "new content")
    monkeypatch.undo()
    assert p.read_text() == "old"
    assert [x.name for x in tmp_path.iterdir()] == ["results.json"]


def test_unencodable_text_and_missing_folder_fail_cleanly(tmp_path):
    p = tmp_path / "x.txt"
    p.write_text("old")
    with pytest.raises(UnicodeEncodeError):
        atomic_write_text(p, "\udcff", encoding="utf-8")           # lone surrogate: fails before any file
    assert p.read_text() == "old" and [x.name for x in tmp_path.iterdir()] == ["x.txt"]
    with pytest.raises(FileNotFoundError):
        atomic_write_bytes(tmp_path / "no" / "such" / "f.bin", b"")
