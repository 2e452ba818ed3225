"""The training verdict a checkpoint carries: did its run learn to classify and to caption?

Written by training (:mod:`napari_pathm3.training.verdict` judges a run) as ``training_verdict.json`` into
``best/`` and ``last/``; read here with the model (:func:`verdict_of`), so inference needs no training code.
Typed fields decide (``caption_withheld``); the ``warnings`` are the sentences shown to people, never parsed.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

VERDICT_NAME = "training_verdict.json"
NOT_CAPTIONING = "this model has not learned to caption"
NOT_CLASSIFYING = "this model has not learned to classify"


@dataclass(frozen=True, kw_only=True)
class TrainingVerdict:
    """What the verdict of a training run says (``None``: not judged or not recorded)."""

    evaluated_on: str | None = None  # "validation", "cross-validation" or "training"
    n: int | None = None
    accuracy: float | None = None
    majority_rate: float | None = None
    learned_to_classify: bool | None = None
    learned_to_caption: bool | None = None
    #: the model beat its baselines on the validation split (ABMIL's accuracy, the predicted class's stock
    #: caption); ``None`` when they were not computed (``training.verdict_baselines``)
    beats_baselines: bool | None = None
    warnings: tuple[str, ...] = ()
    #: every field of the stored JSON (the typed ones above included), for reports and round trips
    data: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def caption_withheld(self) -> bool:
        """The run was judged and its captions did not vary with the slide: show no caption."""
        return self.learned_to_caption is False

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingVerdict:
        def num(key: str) -> float | None:
            v = data.get(key)
            return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None

        def flag(key: str) -> bool | None:
            v = data.get(key)
            return v if isinstance(v, bool) else None

        n = data.get("n")
        where = data.get("evaluated_on")
        return cls(
            evaluated_on=str(where) if where is not None else None,
            n=int(n) if isinstance(n, int) and not isinstance(n, bool) else None,
            accuracy=num("accuracy"),
            majority_rate=num("majority_rate"),
            learned_to_classify=flag("learned_to_classify"),
            learned_to_caption=flag("learned_to_caption"),
            beats_baselines=flag("beats_baselines"),
            warnings=tuple(str(w) for w in data.get("warnings") or ()),
            data=dict(data),
        )

    @property
    def baselines(self) -> dict[str, Any]:
        """The baseline figures on the validation split (model accuracy and BLEU-4 beside ABMIL's accuracy,
        the stock and constant captions' BLEU-4, caption–class agreement); empty when not computed."""
        b = self.data.get("baselines")
        return dict(b) if isinstance(b, dict) else {}

    def to_dict(self) -> dict[str, Any]:
        return {**self.data, "warnings": list(self.warnings)}

    def accuracy_record(self) -> dict[str, Any] | None:
        """``accuracy``, ``majority_rate``, ``evaluated_on``, ``n`` where known; ``None`` without accuracy."""
        if self.accuracy is None:
            return None
        rec: dict[str, object] = {"accuracy": self.accuracy, "majority_rate": self.majority_rate}
        rec.update(evaluated_on=self.evaluated_on, n=self.n)
        return {k: v for k, v in rec.items() if v is not None}


def write_verdict(verdict: TrainingVerdict | dict[str, Any], folders: list[Path]) -> None:
    """``training_verdict.json`` into each existing folder of ``folders``."""
    from ..jsonfile import write_json_atomic

    data = verdict.to_dict() if isinstance(verdict, TrainingVerdict) else verdict
    for folder in folders:
        if Path(folder).is_dir():
            write_json_atomic(Path(folder) / VERDICT_NAME, data)


def read_verdict(folder: Any) -> TrainingVerdict | None:
    """The verdict stored with a checkpoint folder, or None (older checkpoints, or not a folder)."""
    if not folder:
        return None
    path = Path(folder) / VERDICT_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        log.warning("%s: unreadable training verdict (%s)", path, err)
        return None
    return TrainingVerdict.from_dict(data) if isinstance(data, dict) else None


def verdict_of(model: Any) -> TrainingVerdict | None:
    """The verdict a model carries: set when it was loaded (or trained in this process)."""
    verdict = getattr(model, "training_verdict", None)
    if isinstance(verdict, dict):  # set by older code paths as a plain dict
        verdict = TrainingVerdict.from_dict(verdict)
    if verdict is None:
        verdict = read_verdict(getattr(model, "checkpoint_dir", None))
    return verdict
