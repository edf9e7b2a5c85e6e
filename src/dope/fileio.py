"""Crash-safe file writes and advisory locks: the one implementation every writer uses.

A file is replaced atomically: written to a temporary file beside it, fsynced,
renamed over the old one, and the folder fsynced, so a reader (or a process
killed at any moment) sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import fcntl
import json
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Replace ``path`` with what ``write(handle)`` writes into a binary file handle."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_folder(path.parent)


def atomic_write_json(path: Path, value: Any, *, indent: int | None = None) -> None:
    """Replace ``path`` with ``value`` as JSON (keys sorted, so equal values give equal files)."""
    data = json.dumps(value, indent=indent, sort_keys=True).encode()
    atomic_write(path, lambda handle: handle.write(data))


def fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an advisory exclusive lock on ``path`` (created if needed) for the ``with`` block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def try_lock(path: Path) -> IO[bytes]:
    """Take an advisory exclusive lock on ``path`` (created if needed) without waiting.

    The returned handle holds the lock until it is closed or the process dies;
    ``BlockingIOError`` when someone else holds it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+b")  # noqa: SIM115 - the caller owns the handle: it is the lock
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise
    return handle


def file_stamp(path: Path) -> tuple[int, int]:
    """``(mtime_ns, inode)`` of ``path``, ``(0, 0)`` when absent: changes whenever it is replaced atomically."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return (0, 0)
    return (stat.st_mtime_ns, stat.st_ino)
