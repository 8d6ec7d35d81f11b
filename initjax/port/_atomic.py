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
import secrets
from collections.abc import Iterator
from typing import BinaryIO

__all__ = ["atomic_write"]


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Open a binary file object whose contents replace ``path`` on a clean exit.

    On an exception inside the ``with`` block, ``path`` is left as it was and the
    temporary file is removed; the exception propagates. The new file keeps the
    old one's permissions (a new file gets the umask's, as ``open`` gives). A
    symbolic link at ``path`` is replaced by the new file; its target is untouched.
    """
    target = os.path.abspath(os.fspath(path))
    directory, name = os.path.split(target)
    fd, tmp = _create_temporary(directory, name)
    try:
        with os.fdopen(fd, "wb") as f:
            with contextlib.suppress(FileNotFoundError):
                os.chmod(tmp, os.stat(target).st_mode & 0o7777)
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


def _create_temporary(directory: str, name: str) -> tuple[int, str]:
    """A new, empty, uniquely named file beside ``name``, created with the umask's mode."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = os.path.join(directory, f".{name}.{secrets.token_hex(8)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file beside {name!r} in {directory!r}")


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
