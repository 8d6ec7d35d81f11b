"""Atomic file writes: a reader sees the old file or the new one, never a part.

Every file initjax writes goes through :func:`atomic_write`: the bytes go to a
temporary file in the target's directory, which is flushed and fsynced, then
renamed over the target with :func:`os.replace` (atomic on POSIX and Windows),
and the directory is fsynced so the rename itself survives a crash. A write
that fails leaves the old file byte-identical and removes the temporary file.
Because the old file is replaced, not rewritten, memory maps of it (arrays
loaded from it earlier) keep their pages.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from typing import BinaryIO

__all__ = ["atomic_write"]


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Open a binary file object whose contents replace ``path`` on a clean exit.

    On an exception inside the ``with`` block, ``path`` is left as it was and the
    temporary file is removed; the exception propagates.
    """
    target = os.path.abspath(os.fspath(path))
    directory = os.path.dirname(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=".tmp", dir=directory)
    try:
        os.chmod(tmp, _mode(target))
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


def _mode(target: str) -> int:
    """The permissions the new file gets: the old file's, else what ``open`` would give."""
    try:
        return os.stat(target).st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _fsync_directory(directory: str) -> None:
    """Make a rename in ``directory`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
