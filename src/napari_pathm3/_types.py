"""Shared type aliases and protocols (stdlib only)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Protocol, Union, runtime_checkable

PathLike = Union[str, "os.PathLike[str]"]

#: ``progress(done, total, stage)``; ``total`` may be 0 when unknown.
ProgressFn = Callable[[int, int, str], None]


@runtime_checkable
class CancelToken(Protocol):
    """Anything with ``is_set()`` (e.g. :class:`threading.Event`) works as a cancel token."""

    def is_set(self) -> bool: ...


class CancelFlag:
    """A minimal cancel token: ``flag.set()`` from the GUI thread, core loops poll ``is_set()``."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()


def check_cancel(cancel: CancelToken | None) -> None:
    """Raise :class:`~napari_pathm3.errors.Cancelled` when ``cancel`` is set."""
    if cancel is not None and cancel.is_set():
        from .errors import Cancelled

        raise Cancelled("cancelled by the user")


def report(progress: ProgressFn | None, done: int, total: int, stage: str) -> None:
    if progress is not None:
        progress(done, total, stage)
