"""Running the protocol: every seed and variant, the results table and its provenance."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..._types import CancelToken, PathLike, ProgressFn
from ...errors import PathM3Error
from ..data import BagRecord
from ..shortcuts import caption_scores, predicted_class_captions, shortcut_baselines
from .subset import (
    CAPTION_STYLE_TEXT,
    PATCHGASTRIC_CLASSES,
    SEEDS,
    SPLIT_STYLE_TEXT,
    keyword_rule_accuracy,
    patchgastric_splits,
)
from .variants import CAPTION_ROWS, DEFAULT_VARIANTS, VARIANTS, variant_configs

log = logging.getLogger(__name__)


@dataclass
class ProtocolResult:
    """Per-seed test metrics of each variant, their mean ± std, and what the captions were."""

    runs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # variant -> one dict per seed
    summary: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)
    captions: str = "paper"
    keyword_rule_accuracy: float = float("nan")  # on the test captions, all seeds together
    split: str = "stratified"  # SPLIT_STYLES: the paper's random split, or caption-disjoint
    provenance: dict[str, Any] = field(default_factory=dict)  # RunProvenance.to_dict() of the run
    deviations: list[str] = field(default_factory=list)  # switches that differ from the paper
    shortcuts: list[dict[str, Any]] = field(default_factory=list)  # shortcut_baselines() per seed
    shortcut_summary: dict[str, tuple[float, float]] = field(default_factory=dict)

    def header(self) -> list[str]:
        """What ran (first line) and how it differs from the paper (second line)."""
        from ...model.provenance import RunProvenance

        first = RunProvenance.from_dict(self.provenance).header() if self.provenance else "run: unrecorded"
        second = (
            "differs from the paper: " + "; ".join(self.deviations)
            if self.deviations
            else "differs from the paper: none of the recorded switches (see docs/method.md §10 for the rest)"
        )
        return [first, second]

    def table(self) -> str:
        """What ran, then the paper's rows (Tables 1-4) as plain text: each variant's row metric, its caption
        metrics, and the shortcut baselines beside them."""

        def cell(mode: str, key: str, pct: bool) -> str:
            mean, std = self.summary.get(mode, {}).get(key, (float("nan"), float("nan")))
            return f"{mean * 100:.2f} ± {std * 100:.2f}" if pct else f"{mean:.3f} ± {std:.3f}"

        lines = [
            *self.header(),
            f"split: {SPLIT_STYLE_TEXT[self.split]}",
            f"captions: {CAPTION_STYLE_TEXT[self.captions]}",
            f"keyword rule on the test captions alone: {self.keyword_rule_accuracy * 100:.1f} % accuracy",
            "accuracy = image-only inputs; text-conditioned accuracy = the reference caption is an input",
            f"{'variant':<38}{'metric':<44}{'mean ± std':>18}",
        ]
        for name in self.runs:
            v = VARIANTS[name]
            rows = [(v.row_metric, v.row_metric != "bleu_4")]
            if v.row_metric != "accuracy" and v.mode != "text" and v.alpha != 0.0:
                rows.append(("accuracy", True))  # the image-only accuracy of a text-reading model, too
            if v.captions:  # when captions were generated
                have = self.summary.get(name, {})
                rows += [(key, False) for _, key in CAPTION_ROWS if key != v.row_metric and key in have]
            if "predicted_class_caption_bleu_4" in self.summary.get(name, {}):
                rows.append(("predicted_class_caption_bleu_4", False))
            for key, pct in rows:
                title = dict((k, t) for t, k in CAPTION_ROWS).get(key, key)
                title = SHORTCUT_TITLES.get(key, title)
                label = f"{title} (%)" if pct else title
                lines.append(f"{name:<38}{label:<44}{cell(name, key, pct):>18}")
        summary = self.shortcut_summary
        for key, title, pct in SHORTCUT_ROWS:
            if key in summary:
                mean, std = summary[key]
                value = f"{mean * 100:.2f} ± {std * 100:.2f}" if pct else f"{mean:.3f} ± {std:.3f}"
                label = f"{title} (%)" if pct else title
                lines.append(f"{'shortcut (no model)':<38}{label:<44}{value:>18}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "captions": self.captions,
            "split": self.split,
            "captions_preprocessing": CAPTION_STYLE_TEXT[self.captions],
            "keyword_rule_accuracy": self.keyword_rule_accuracy,
            "provenance": self.provenance,
            "deviations_from_paper": self.deviations,
            "shortcuts": self.shortcuts,
            "shortcut_summary": self.shortcut_summary,
            "variants": {n: dataclasses.asdict(VARIANTS[n]) for n in self.runs},
            "runs": self.runs,
            "summary": self.summary,
        }


#: shortcut rows of the table: (key of shortcut_baselines, title, shown as a percentage)
SHORTCUT_ROWS = (
    ("verbatim_overlap", "test captions verbatim in training", True),
    ("caption_lookup_accuracy", "caption-lookup label accuracy", True),
    ("nn_label_accuracy", "nearest-neighbour label accuracy", True),
    ("most_frequent_caption_bleu_4", "most-frequent caption BLEU@4", False),
    ("true_class_caption_bleu_4", "true class's top caption BLEU@4", False),
    ("nn_caption_bleu_4", "nearest-neighbour caption BLEU@4", False),
)
SHORTCUT_TITLES = {"predicted_class_caption_bleu_4": "shortcut: predicted class's caption BLEU@4"}


def _provenance(
    model_config: Any, train_config: Any, captions: str, seeds: Sequence[int], variants: Sequence[str]
):
    from ...model.provenance import RunProvenance, paper_deviations

    prov = RunProvenance.of(
        model_config, train_config=train_config, caption_style=captions, seed=tuple(seeds)
    )
    prov = dataclasses.replace(prov, mode=f"per variant ({', '.join(variants)})")
    return prov, paper_deviations(prov)


def run_patchgastric(
    features_dir: PathLike,
    *,
    out_dir: PathLike,
    captions_csv: PathLike,
    model_config: Any,
    train_config: Any,
    seeds: Sequence[int] = SEEDS,
    variants: Sequence[str] = DEFAULT_VARIANTS,
    captions: str = "paper",
    generate: bool = True,
    split: str = "stratified",
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> ProtocolResult:
    """Train and test PathM3 on PatchGastric as in the paper, for every seed and variant.

    Args:
        features_dir: one feature store/file per slide, named by the slide id of ``captions.csv``.
        out_dir: gets ``seed<k>/<variant>/`` training runs, ``results.json`` and ``table.txt``.
        captions_csv: PatchGastric ``captions.csv``.
        model_config: a ``PathM3Config``; its ``class_names`` are replaced by the three subtypes.
        train_config: a ``TrainConfig``; seed, mode, α (and val_metric for text rows) come from the variant.
        seeds: the random seeds (split and training).
        variants: names from :data:`VARIANTS` (the paper's rows), or ``("all",)``.
        captions: ``"paper"`` (lower-case, subtype sentence removed) or ``"raw"``; stated in the output.
        generate: generate test captions for variants with a caption branch (caption metrics).
        split: ``"stratified"`` (the paper's) or ``"caption_disjoint"`` (no test caption in training).

    Returns:
        The per-seed metrics and their mean ± std; ``result.table()`` prints the paper's rows.
    """
    from ..evaluate import evaluate_model
    from ..loop import train
    from ..metrics import mean_std

    variants = tuple(VARIANTS) if list(variants) == ["all"] else tuple(variants)
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise PathM3Error(f"unknown protocol variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    out = Path(out_dir)
    model_config = dataclasses.replace(model_config, class_names=PATCHGASTRIC_CLASSES)
    prov, deviations = _provenance(model_config, train_config, captions, seeds, variants)
    result = ProtocolResult(captions=captions, split=split, provenance=prov.to_dict(), deviations=deviations)
    log.info("protocol: %s", prov.header())
    if deviations:
        log.warning("protocol: this run's objective differs from the paper: %s", "; ".join(deviations))
    test_records: list[BagRecord] = []
    for seed in seeds:
        splits = patchgastric_splits(captions_csv, seed=seed, captions=captions, split=split)
        test_records += splits["test"]
        result.shortcuts.append(
            {
                **shortcut_baselines(
                    splits["train"], splits["test"], PATCHGASTRIC_CLASSES, features_dir=features_dir
                ),
                "seed": seed,
            }
        )
        for name in variants:
            mcfg, cfg = variant_configs(VARIANTS[name], model_config, train_config, seed=seed)
            tr, va = splits["train"], splits["val"]
            if VARIANTS[name].mode == "text":  # text only: a slide without a caption has no input
                tr, va = [r for r in tr if r.caption], [r for r in va if r.caption]
            run_dir = out / f"seed{seed}" / name
            log.info("protocol: seed %d, variant %s (captions %s) -> %s", seed, name, captions, run_dir)
            res = train(
                mcfg,
                tr,
                va,
                cfg,
                out_dir=run_dir,
                features_dir=features_dir,
                progress=progress,
                cancel=cancel,
                caption_style=captions,
            )
            image_path = VARIANTS[name].mode != "text" and VARIANTS[name].alpha != 0.0
            metrics = evaluate_model(
                res.best_dir,
                splits["test"],
                features_dir=features_dir,
                generate=generate and VARIANTS[name].captions,
                device=cfg.device,
                cancel=cancel,
                return_predictions=image_path,
            )
            rows = metrics.pop("predictions", None)
            if rows:  # the shortcut a classifier enables: paste its predicted class's top training caption
                pred = [int(np.argmax(r["probabilities"])) if r["probabilities"] else -1 for r in rows]
                hyps = predicted_class_captions(splits["train"], PATCHGASTRIC_CLASSES, pred)
                refs = [r["reference"] for r in rows]
                scores = caption_scores(refs, hyps)
                metrics.update({f"predicted_class_caption_{k}": v for k, v in scores.items()})
            metrics["seed"] = seed
            result.runs.setdefault(name, []).append(metrics)
    result.keyword_rule_accuracy = keyword_rule_accuracy(test_records)
    result.shortcut_summary = mean_std(result.shortcuts)
    result.summary = {name: mean_std(runs) for name, runs in result.runs.items()}
    out.mkdir(parents=True, exist_ok=True)
    from ...jsonfile import finite_or_null, write_json_atomic

    write_json_atomic(out / "results.json", finite_or_null(result.to_dict()))
    (out / "table.txt").write_text(result.table() + "\n")
    return result
