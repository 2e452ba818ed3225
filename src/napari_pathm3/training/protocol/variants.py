"""The rows of the paper's Tables 1-4 as named training variants."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ...errors import PathM3Error


@dataclass(frozen=True)
class Variant:
    """One row of the paper's ablations: how to train, and which test metric is the row's figure.

    ``alpha`` None keeps the configured α (multi-task); 1.0 is single-task classification, 0.0 single-task
    captioning (selected on validation loss). ``row_metric`` ``text_conditioned_accuracy`` marks a row whose
    classifier reads the reference caption; such a variant is selected on that metric on validation. The
    text-only variant classifies from the caption alone (the Q-Former queries see no patches) and trains
    single-task, so no image enters it; slides without a caption are left out of its training and
    validation, and its test figure counts only slides with one (``text_conditioned_n``).
    """

    name: str
    mode: str
    use_correlation: bool = True
    alpha: float | None = None
    row_metric: str = "accuracy"
    captions: bool = False  # generate test captions (a multi-task or caption-only model)
    paper: str = ""  # the paper's table row and value


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("image", "image", paper="Tables 1, 3: image only, correlation, multi-task: 71.48 ± 1.30"),
        Variant(
            "image_single_task",
            "image",
            alpha=1.0,
            paper="Table 3: image only, correlation, single-task: 70.88 ± 1.85",
        ),
        Variant(
            "image_no_correlation",
            "image",
            use_correlation=False,
            paper="Table 3: image only, no correlation, multi-task: 69.07 ± 1.46",
        ),
        Variant(
            "image_no_correlation_single_task",
            "image",
            use_correlation=False,
            alpha=1.0,
            paper="Table 3: image only, no correlation, single-task: 68.59 ± 0.72",
        ),
        Variant(
            "image_text",
            "image_text",
            row_metric="text_conditioned_accuracy",
            captions=True,
            paper="Tables 1, 3: image & text, correlation: 86.40 ± 0.21; Tables 2, 4: BLEU@4 0.520 ± 0.011",
        ),
        Variant(
            "image_text_no_correlation",
            "image_text",
            use_correlation=False,
            row_metric="text_conditioned_accuracy",
            captions=True,
            paper="Table 3: image & text, no correlation: 84.60 ± 0.91; Table 4 (multi-task only): BLEU@4 0.508",
        ),
        Variant(
            "text",
            "text",
            alpha=1.0,
            row_metric="text_conditioned_accuracy",
            paper="Table 3: text only: 79.79 ± 1.25",
        ),
        Variant(
            "captions_single_task",
            "image",
            alpha=0.0,
            row_metric="bleu_4",
            captions=True,
            paper="Table 4: correlation, single-task: BLEU@4 0.508",
        ),
        Variant(
            "captions_single_task_no_correlation",
            "image",
            use_correlation=False,
            alpha=0.0,
            row_metric="bleu_4",
            captions=True,
            paper="Table 4: no correlation, single-task: BLEU@4 0.503",
        ),
    )
}
DEFAULT_VARIANTS = ("image", "image_text")
CAPTION_ROWS = (
    ("BLEU@4", "bleu_4"),
    ("METEOR (nltk, exact)", "meteor_nltk"),
    ("ROUGE-L (β=1.2)", "rouge_l"),
    ("CIDEr-D", "cider_d"),
)


def variant_configs(variant: Variant, model_config: Any, train_config: Any, *, seed: int) -> tuple[Any, Any]:
    """The ``PathM3Config`` and ``TrainConfig`` of one variant and seed."""
    fields = {f.name for f in dataclasses.fields(model_config)}
    if "use_correlation" in fields:
        model_config = dataclasses.replace(model_config, use_correlation=variant.use_correlation)
    elif not variant.use_correlation:
        raise PathM3Error(
            f"variant {variant.name!r} needs PathM3Config.use_correlation, which this version lacks"
        )
    changes: dict[str, object] = {"seed": seed, "mode": variant.mode}
    if variant.alpha is not None:
        changes["alpha"] = variant.alpha
    if variant.row_metric == "text_conditioned_accuracy":
        changes["val_metric"] = "text_conditioned_accuracy"
    elif variant.alpha == 0.0:  # caption-only: no classifier to select on; validation has no captions
        changes["val_metric"] = "loss"
    return model_config, dataclasses.replace(train_config, **changes)
