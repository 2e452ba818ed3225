"""Shared type aliases and protocols (stdlib only)."""

from __future__ import annotations

import dataclasses
import enum
import os
import threading
from collections.abc import Callable
from typing import Protocol, TypeAlias, Union, runtime_checkable

PathLike = Union[str, "os.PathLike[str]"]

#: a value as ``json.loads`` returns it
JSONValue: TypeAlias = "None | bool | int | float | str | list[JSONValue] | dict[str, JSONValue]"
#: a JSON object as ``json.loads`` returns it
JSONObject: TypeAlias = "dict[str, JSONValue]"


class Stage(str, enum.Enum):
    """What a long-running call is doing. The value is the stage's display name."""

    LOAD_MODEL = "loading model"
    TISSUE = "tissue"
    PATCHES = "patches"
    FEATURES = "features"
    MODEL = "model"
    CAPTION = "caption"
    DONE = "done"
    EXTRACT = "extract"  # patch features of one slide (features.extract)
    SLIDES = "slides"  # slides of a batch (features.batch)
    REGIONS = "regions"  # features of the slides under labelled regions (training.region_trainer)
    TRAIN = "train"  # optimiser steps (training.loop)
    VALIDATE = "validate"  # validation after an epoch (training.loop)

    def __str__(self) -> str:
        return self.value


@dataclasses.dataclass(frozen=True)
class Progress:
    """One progress event: ``done`` of ``total`` (``total`` 0 when unknown) in ``stage``.

    Attributes:
        detail: display text only (a slide name, "cached"); nothing parses it.
        epoch, epochs: training: the epoch the step belongs to (1-based) and the number of epochs.
        demo: the event comes from training the demo model (on first use of ``"demo"``).
        within: the stage of the caller this event is part of (extraction reports ``EXTRACT`` within
            ``FEATURES`` of captioning).
    """

    stage: Stage
    done: int
    total: int
    detail: str = ""
    epoch: int | None = None
    epochs: int | None = None
    demo: bool = False
    within: Stage | None = None

    @property
    def fraction(self) -> float | None:
        """``done / total`` in [0, 1], or ``None`` when the total is unknown."""
        return None if self.total <= 0 else min(1.0, max(0.0, self.done / self.total))

    def label(self) -> str:
        """A short human-readable line, e.g. ``"demo model: train (epoch 3/20)"``, ``"features (cached)"``."""
        head = str(self.within or self.stage)
        extra = [] if self.within in (None, self.stage) else [str(self.stage)]
        if self.epoch is not None:
            extra.append(f"epoch {self.epoch}/{self.epochs}")
        if self.detail:
            extra.append(self.detail)
        text = f"{head} ({', '.join(extra)})" if extra else head
        return f"demo model: {text}" if self.demo else text


#: ``progress(event)``: called with a :class:`Progress` event.
ProgressFn = Callable[[Progress], None]


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


def report(
    progress: ProgressFn | None,
    done: int,
    total: int,
    stage: Stage | str,
    *,
    detail: str = "",
    epoch: int | None = None,
    epochs: int | None = None,
) -> None:
    """Send a :class:`Progress` event to ``progress`` (when given). ``stage``: a :class:`Stage` or its value."""
    if progress is not None:
        progress(Progress(Stage(stage), int(done), int(total), detail, epoch, epochs))


def within(progress: ProgressFn | None, stage: Stage) -> ProgressFn | None:
    """``progress`` for a callee: its events are marked as part of the caller's ``stage``."""
    if progress is None:
        return None
    return lambda event: progress(dataclasses.replace(event, within=event.within or stage))


def as_demo(progress: ProgressFn | None) -> ProgressFn | None:
    """``progress`` for training the demo model: its events are marked ``demo``."""
    if progress is None:
        return None
    return lambda event: progress(dataclasses.replace(event, demo=True))
