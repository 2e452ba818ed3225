"""Time left for the widgets' stage line: ``", 12 s left"`` from the average rate since the stage began (like
the CLI's tqdm bars with ``smoothing=0``), shown once a stage has run a few seconds."""

from __future__ import annotations

import time
from collections.abc import Callable

from .._types import Progress, Stage

#: below this many seconds into a stage the rate is noise (first batch, model warm-up): say nothing yet
MIN_ELAPSED_S = 3.0


def format_left(seconds: float) -> str:
    """``"8 s"``, ``"2 min 05 s"``, ``"1 h 03 min"``."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class TimeLeft:
    """Tracks one stage at a time (a key such as ``"features"``); a new key starts the clock again."""

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self._clock = clock or (lambda: time.monotonic())  # looked up per call (tests replace it)
        self._key: object = None
        self._t0 = 0.0
        self._done0 = 0.0

    def text(self, key: object, done: float, total: float) -> str:
        """``", 12 s left"`` for ``done`` of ``total`` in stage ``key``, or ``""`` while it cannot be told."""
        now = self._clock()
        if key != self._key or done < self._done0:
            self._key, self._t0, self._done0 = key, now, done
            return ""
        elapsed, progressed = now - self._t0, done - self._done0
        if elapsed < MIN_ELAPSED_S or progressed <= 0 or total <= 0 or done >= total:
            return ""
        return f", {format_left(elapsed / progressed * (total - done))} left"


def stage_bar(event: Progress, current: float, time_left: TimeLeft) -> tuple[float, str]:
    """``(bar percent, stage line)`` of "Caption slide" after ``event``: one fifth of the bar per captioning
    stage, a stage's own counts (tissue read, extraction, decoding) advancing it inside; the demo model's
    one-off training fills the bar once, then captioning starts over."""
    from ..api import STAGES

    stage = event.within or event.stage
    frac = event.fraction or 0.0
    pct = current
    if event.demo:  # one-off training of the demo model
        if event.total:
            pct = min(100.0, 100.0 * frac)
    elif stage in STAGES:
        within_stage = frac if event.within is not None else 0.0
        floor = 0.0 if stage is Stage.TISSUE else current  # after demo training: start over
        pct = max(floor, min(100.0, 100.0 * (STAGES.index(stage) + within_stage) / len(STAGES)))
    elif stage is Stage.DONE:
        pct = 100.0
    label = event.label()
    if event.within is Stage.FEATURES and event.total and not event.demo:  # extraction: patches
        label = f"{label}: {event.done}/{event.total} patches"
    if event.total:  # patches, demo-training steps: the time left once the stage has run a few seconds
        label += time_left.text((event.demo, event.within or event.stage), event.done, event.total)
    return pct, label
