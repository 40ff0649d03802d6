"""Atomic file writes: a reader sees the old file or the new one, never a half-written one.

The data goes to a temporary file in the target's folder (same file system, so the rename is
atomic), is flushed and fsync'ed, gets the mode ``open()`` would give a new file
(``0o666 & ~umask``, not ``mkstemp``'s 0600) and is renamed over the target with ``os.replace``.
On any error the temporary file is removed and the old file, if any, is left as it was.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text", "current_umask"]


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path, write: Callable[[BinaryIO], None], *, make_dirs: bool = False) -> Path:
    """Call ``write(fh)`` on a binary file object and put the result at ``path`` atomically;
    returns ``path`` as a ``Path``.  ``make_dirs`` creates the folder first."""
    path = Path(path)
    if make_dirs:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o666 & ~current_umask())
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path`` as a ``Path``."""
    return atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (encoded with ``encoding``)."""
    return atomic_write_bytes(path, text.encode(encoding))
