"""Cross-process and cross-thread safety for files the package writes: a lock per path and atomic folder
replacement.

The lock is an OS advisory lock (``filelock``: ``fcntl.flock`` on POSIX, ``msvcrt`` on Windows) on a
``<path>.lock`` file beside the guarded path. The OS releases it when its holder dies (even ``kill -9``), so a
crashed process never leaves a cache locked. Each acquisition opens its own file descriptor, which makes the
same lock exclude threads of one process as well as other processes.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_SUFFIX = ".lock"


def lock_path(path: Path) -> Path:
    return path.with_name(path.name + LOCK_SUFFIX)


@contextmanager
def path_lock(path: Path, *, what: str = "cache entry") -> Iterator[None]:
    """Hold the lock of ``path`` (creating its parent folder); logs once when it has to wait."""
    from filelock import FileLock, Timeout

    path.parent.mkdir(parents=True, exist_ok=True)
    # a fresh, non-singleton, thread-local lock object: two threads never share a file descriptor
    lock = FileLock(str(lock_path(path)), thread_local=True, is_singleton=False)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("%s: waiting for another process or thread using this %s", path, what)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def temp_sibling(path: Path, tag: str) -> Path:
    """A hidden, unique name beside ``path`` (never mistaken for a store: it does not end like one)."""
    return path.with_name(f".{path.name}.{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def remove_leftovers(path: Path) -> None:
    """Remove temporary siblings of ``path`` left by killed processes (``.<name>.tmp-<pid>-<hex>`` and
    ``.<name>.old-...``). Call only while holding ``path_lock(path)``: every live writer holds it while its
    temporaries exist, so any found then are orphans."""
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(tmp|old)-\d+-[0-9a-f]{{8}}$")
    if not path.parent.is_dir():
        return
    for p in path.parent.iterdir():
        if pattern.match(p.name):
            log.info("removing %s, left behind by an interrupted run", p)
            shutil.rmtree(p, ignore_errors=True)


def replace_dir(new: Path, target: Path) -> None:
    """Move the finished folder ``new`` to ``target``; an existing ``target`` is moved aside first and then
    removed. Call only while holding ``path_lock(target)`` and only on a ``target`` this package owns."""
    old = None
    if target.exists():
        old = temp_sibling(target, "old")
        os.replace(target, old)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
