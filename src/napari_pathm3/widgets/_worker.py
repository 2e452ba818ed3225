"""Run core functions (``fn(..., progress=, cancel=)``) in a napari thread worker.

Progress crosses from the worker thread to the GUI thread through a Qt signal (queued connection), errors
become napari notifications: :class:`~napari_pathm3.errors.PathM3Error` shows its message only (the message
says what to fix), cancellation is an info message, anything else goes to napari's error handler (which
offers the traceback).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qtpy.QtCore import QObject, Signal

from .._types import CancelFlag, Progress
from ..api import release_free_memory
from ..errors import Cancelled, PathM3Error

log = logging.getLogger(__name__)


class _Relay(QObject):
    progressed = Signal(object)  # a napari_pathm3._types.Progress event
    metrics = Signal(object)


class Job:
    """One background run: ``job.cancel()`` asks it to stop; ``job.worker`` is the napari worker."""

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        on_done: Callable[[Any], None],
        on_progress: Callable[[Progress], None] | None = None,
        on_metrics: Callable[[dict[str, Any]], None] | None = None,
        on_finished: Callable[[], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        from napari.qt.threading import create_worker

        guard_software_gl()
        self.cancel_flag = CancelFlag()
        self._relay = _Relay()
        if on_progress is not None:
            self._relay.progressed.connect(on_progress)
        if on_metrics is not None:
            self._relay.metrics.connect(on_metrics)
        self.error: BaseException | None = None
        self.result: Any = None
        self._on_done, self._on_error = on_done, on_error

        kwargs: dict[str, Any] = {"progress": self._relay.progressed.emit, "cancel": self.cancel_flag}
        if on_metrics is not None:
            kwargs["metrics"] = self._relay.metrics.emit

        def work() -> Any:
            return fn(**kwargs)

        # connecting "errored" here stops superqt from re-raising the error in the GUI thread
        self.worker = create_worker(
            work, _start_thread=False, _connect={"returned": self._returned, "errored": self._errored}
        )
        if on_finished is not None:
            self.worker.finished.connect(on_finished)
        self.done = False
        self.worker.finished.connect(self._finished)

    def start(self) -> Job:
        self.worker.start()
        return self

    def cancel(self) -> None:
        self.cancel_flag.set()

    @property
    def running(self) -> bool:
        return not self.done

    def _returned(self, value: Any) -> None:
        self.result = value
        self._on_done(value)

    def _finished(self) -> None:
        self.done = True
        release_free_memory()  # the job's buffers were kept for reuse between batches; napari needs them no more

    def _errored(self, err: BaseException) -> None:
        self.error = err
        if self._on_error is not None:
            self._on_error(err)
        notify_error(err)


def error_text(err: BaseException) -> str:
    """The whole message of ``err`` for a widget's result box (a toast truncates it): our errors' message
    says what to fix; anything else gets its type and a pointer to the traceback."""
    if isinstance(err, Cancelled):
        return f"Cancelled: {err}" if str(err) else "Cancelled."
    if isinstance(err, PathM3Error):
        return f"ERROR: {err}"
    return (
        f"ERROR ({type(err).__name__}): {err}\n\nAn unexpected failure: the traceback is in napari's "
        "notification (click it) and in the terminal. Please report it with that traceback."
    )


def notify_error(err: BaseException) -> None:
    """Show ``err`` in napari: expected failures as one clear message, others with their traceback."""
    from napari.utils.notifications import notification_manager, show_error, show_info

    if isinstance(err, Cancelled):
        show_info(f"PathM3: {err}")
    elif isinstance(err, PathM3Error):
        show_error(f"PathM3: {err}")
    else:
        log.error("PathM3 worker failed", exc_info=err)
        notification_manager.receive_error(type(err), err, err.__traceback__)


def guard_software_gl() -> None:
    """Keep ``triton`` from loading beside Mesa's llvmpipe (software OpenGL: Xvfb, VMs, remote desktops).

    Both bundle their own LLVM; importing triton (torch._dynamo does, via transformers) after napari made a
    llvmpipe GL context segfaults the process. When libLLVM is already mapped and triton is not yet
    imported, make ``import triton`` fail cleanly instead: torch then runs without it (triton only serves
    ``torch.compile`` on GPUs, which the widgets do not use).
    """
    if "triton" in sys.modules or not sys.platform.startswith("linux"):
        return
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return
    if "libLLVM" in maps:
        sys.modules["triton"] = None  # type: ignore[assignment]
        log.info(
            "software OpenGL (llvmpipe) detected: triton disabled in this process to avoid an LLVM clash"
        )
