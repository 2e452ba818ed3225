"""Progress on stderr for the commands that run the captioning pipeline (``caption``, ``demo``).

Two tqdm lines: the first counts the pipeline's stages and moves at every stage (``caption: 3/5 stages
[00:04], features``; the old per-stage bars stayed at ``tissue: 0/5`` … ``done: 0/5``); the second shows the
current stage's own counts with the time left (``features: 37%|███| 412/1100 patches [00:09<00:15]``; tissue
in read steps, model loading in bytes, the caption in decoding steps), and training in epochs
(``3.4/30 epochs [elapsed<remaining]``), never a per-step rate.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from .._types import Progress, Stage

#: the pipeline's stages (napari_pathm3.inference.STAGES, then DONE); the CLI does not import inference
#: at start-up for this, and a test checks the two lists agree
PIPELINE = (Stage.TISSUE, Stage.PATCHES, Stage.FEATURES, Stage.MODEL, Stage.CAPTION, Stage.DONE)

STAGES_FORMAT = "{desc}: {n}/{total} stages [{elapsed}]{postfix}"
COUNT_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt}{unit} [{elapsed}<{remaining}]"
EPOCH_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.0f} epochs [{elapsed}<{remaining}]"
UNITS = {
    Stage.EXTRACT: " patches",
    Stage.SLIDES: " slides",
    Stage.REGIONS: " slides",
    Stage.TISSUE: " steps",  # the blocks of the low-resolution read, then the mask
    Stage.CAPTION: " tokens",  # decoding steps of max_new_tokens (an early end stops short)
    Stage.LOAD_MODEL: "B",  # bytes of model.safetensors read (shown as k/M/G)
}
#: stages counted in bytes: tqdm shows them scaled (``120M/440MB``)
SCALED = frozenset({Stage.LOAD_MODEL})


def second_line(wanted: bool = True) -> int | None:
    """tqdm ``position`` of a bar under another: 1 on a terminal; on a log file (CI) tqdm's cursor moves
    would print as ``ESC[A`` noise, so bars follow each other there."""
    return 1 if wanted and sys.stderr.isatty() else None


class StageProgress:
    """``progress`` callback for :func:`napari_pathm3.api.caption_slide` and the demo (see module doc)."""

    def __init__(self, disable: bool, *, name: str = "caption") -> None:
        self.disable = disable
        self.name = name
        self.stages: Any = None  # the stage counter
        self.bar: Any = None  # the current stage's own counts
        self.stage = ""  # the name of ``bar``
        self._t0: float | None = None  # start of the pipeline (log mode)

    def __call__(self, event: Progress) -> None:
        prefix = "demo model: " if event.demo else ""
        if event.epochs:  # training: done/total = optimiser steps over the whole run
            self._show(
                f"{prefix}training", event.epochs, event.epochs * (event.fraction or 0.0), EPOCH_FORMAT
            )
        elif event.within is None and event.stage in PIPELINE and event.total and not event.demo:
            self._advance(event)
        else:
            unit = UNITS.get(event.stage, "")
            fmt = COUNT_FORMAT.replace("{unit}", unit) if event.total else "{desc} [{elapsed}]"
            name = f"{prefix}{event.within or event.stage}"
            self._show(name, event.total, event.done, fmt, scale=event.stage in SCALED)

    def _advance(self, event: Progress) -> None:
        """A pipeline stage begins (``done`` stages are behind it): move the counter, end the stage's bar."""
        from tqdm.auto import tqdm

        self.close_bar()
        if not sys.stderr.isatty():  # a log (CI): one line per stage, no cursor moves between two bars
            self._t0 = self._t0 if self._t0 is not None else time.monotonic()
            if not self.disable:
                now = f"{time.monotonic() - self._t0:.0f} s"
                what = "" if event.stage is Stage.DONE else f", {event.stage}"
                print(
                    f"{self.name}: {min(event.done, event.total)}/{event.total} stages [{now}]{what}",
                    file=sys.stderr,
                )
            return
        if self.stages is None:
            self.stages = tqdm(
                total=event.total,
                desc=self.name,
                leave=False,
                disable=self.disable,
                file=sys.stderr,
                bar_format=STAGES_FORMAT,
            )
        self.stages.n = min(event.done, event.total)
        self.stages.set_postfix_str("" if event.stage is Stage.DONE else str(event.stage), refresh=False)
        self.stages.refresh()

    def _show(self, name: str, total: float, done: float, fmt: str, *, scale: bool = False) -> None:
        from tqdm.auto import tqdm

        if name != self.stage:
            self.close_bar()
            self.stage = name
            # smoothing=0: the remaining time comes from the average rate since the stage began
            self.bar = tqdm(
                total=total or None,
                desc=name,
                leave=False,
                disable=self.disable,
                file=sys.stderr,
                bar_format=fmt,
                smoothing=0,
                unit_scale=scale,
                position=second_line(self.stages is not None),
            )
        if self.bar is not None:
            if total and self.bar.total != total:
                self.bar.total = total
            if done >= self.bar.n:
                self.bar.update(done - self.bar.n)
            else:
                self.bar.n = done
                self.bar.refresh()

    def close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
            self.stage = ""

    def close(self) -> None:
        self.close_bar()
        if self.stages is not None:
            self.stages.close()
            self.stages = None
