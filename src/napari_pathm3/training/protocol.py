"""The paper's PatchGastric protocol behind one entry point (:func:`run_patchgastric`).

PathM3 §4.1: the three main subtypes of PatchGastric (well / moderately differentiated tubular
adenocarcinoma, poorly differentiated adenocarcinoma = its solid and non-solid types together: 283 / 265 / 145
= 693 slides), random 20 / 40 / 40 % train / val / test splits (stratified by class here; the paper does not
say), three seeds, mean ± std.

Captions (:func:`paper_caption`): by default as the paper's reference captions (supplementary Table 5) —
lower-case, without the subtype sentence (97 % of the raw captions end by naming the class, so a keyword rule
on the raw text alone is ~97 % accurate) and without the final full stop. ``captions="raw"`` keeps them as
published.

Each row of the paper's Tables 1-4 is a named :data:`VARIANTS` entry (mode, correlation on/off, α); every
variant runs on any feature folder. Plain ``accuracy`` is always image-only (a new slide has no caption); the
image & text and text-only rows are ``text_conditioned_accuracy`` (the reference caption is an input).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._types import CancelToken, PathLike, ProgressFn
from ..errors import PathM3Error
from .data import BagRecord, read_manifest
from .dedup import SPLIT_STYLES, caption_disjoint_split
from .shortcuts import caption_scores, predicted_class_captions, shortcut_baselines

log = logging.getLogger(__name__)

PATCHGASTRIC_CLASSES = (
    "well differentiated tubular adenocarcinoma",
    "moderately differentiated tubular adenocarcinoma",
    "poorly differentiated adenocarcinoma",
)
# subtype string in captions.csv (lower-case) -> class of the 3-class subset; every other subtype (papillary,
# signet ring, mixed "well to moderately", ...) is left out, like in the paper (and CITE)
PATCHGASTRIC_SUBTYPES = {
    "well differentiated tubular adenocarcinoma": 0,
    "moderately differentiated tubular adenocarcinoma": 1,
    "poorly differentiated adenocarcinoma, solid type": 2,
    "poorly differentiated adenocarcinoma, non-solid type": 2,
}
SPLIT_FRACTIONS = (0.2, 0.4, 0.4)  # §4.1: train 20 %, validation 40 %, test 40 %
SEEDS = (0, 1, 2)  # §4.2: "three times with different random seeds"


CAPTION_STYLES = ("paper", "raw")
SPLIT_STYLE_TEXT = {
    "stratified": "stratified: random 20/40/40 per class, 3 seeds (the paper's protocol)",
    "caption_disjoint": "caption_disjoint: identical captions kept in one split, no test caption in training "
    "(not the paper's protocol)",
}
CAPTION_STYLE_TEXT = {
    "paper": "paper: lower-case, subtype sentence(s) removed, no final full stop (as the paper's Table 5)",
    "raw": "raw: captions.csv text as published (names the subtype: not comparable with the paper)",
}
# a sentence that names the diagnosis: the subtype sentence ("Moderately differentiated adenocarcinoma.", and
# its variants "Group 5, Adenocarcinoma.", "... diffentiated ...", "Well-differentiated ... that grows ...")
_DIAGNOSIS = re.compile(r"adenocarcinoma|differentiated|diffentiated", re.IGNORECASE)
_SENTENCE_BREAK = re.compile(r"(?<=\.)\s+")


def paper_caption(text: str | None) -> str | None:
    """A PatchGastric caption as the paper's references: sentences (split after a full stop) that name the
    diagnosis are dropped, the rest is lower-cased and loses its final full stop; None when nothing is left
    (17 of the 693 subset captions are only a diagnosis: those slides have no caption)."""
    if text is None:
        return None
    kept = [p for p in _SENTENCE_BREAK.split(" ".join(text.split())) if p and not _DIAGNOSIS.search(p)]
    out = " ".join(kept).lower().rstrip(" .").strip()
    return out or None


def patchgastric_subset(captions_csv: PathLike, *, captions: str = "paper") -> list[BagRecord]:
    """The 693 slides of the paper's 3-class subset, labelled with :data:`PATCHGASTRIC_CLASSES` names;
    captions preprocessed as the paper's references (``captions="paper"``) or as published (``"raw"``)."""
    if captions not in CAPTION_STYLES:
        raise PathM3Error(f"captions: one of {', '.join(CAPTION_STYLES)}, got {captions!r}")
    out = []
    for r in read_manifest(captions_csv):
        cls = PATCHGASTRIC_SUBTYPES.get((r.label or "").strip().lower())
        if cls is not None:
            cap = paper_caption(r.caption) if captions == "paper" else r.caption
            out.append(dataclasses.replace(r, label=PATCHGASTRIC_CLASSES[cls], caption=cap, split=None))
    if not out:
        raise PathM3Error(
            f"{captions_csv}: no slide of the three PatchGastric subtypes (is it captions.csv?)"
        )
    return out


_KEYWORDS = (
    (re.compile(r"\bwell\b"), 0),
    (re.compile(r"\bmoderately\b"), 1),
    (re.compile(r"\bpoorly\b|\bsolid\b"), 2),
)


def keyword_rule(text: str | None) -> int | None:
    """The text-only shortcut the preprocessing removes: the class whose keyword (well / moderately /
    poorly|solid) comes first in the caption, None when there is none."""
    hits = [(m.start(), c) for rx, c in _KEYWORDS if (m := rx.search((text or "").lower()))]
    return min(hits)[1] if hits else None


def keyword_rule_accuracy(records: Sequence[BagRecord]) -> float:
    """Accuracy of :func:`keyword_rule` on the records' captions (no keyword: the most frequent class)."""
    labels = [PATCHGASTRIC_CLASSES.index(r.label) for r in records if r.label in PATCHGASTRIC_CLASSES]
    if not labels:
        return float("nan")
    majority = max(set(labels), key=labels.count)
    preds = [keyword_rule(r.caption) for r in records if r.label in PATCHGASTRIC_CLASSES]
    return float(np.mean([(majority if p is None else p) == y for p, y in zip(preds, labels, strict=True)]))


def stratified_split(
    labels: Sequence[int | str], *, fractions: Sequence[float] = SPLIT_FRACTIONS, seed: int = 0
) -> tuple[np.ndarray, ...]:
    """Disjoint index arrays, one per fraction, with each class split in the same proportions.

    Per class, the counts are ``floor(n_c * f)`` plus the largest remainders (so they add up to ``n_c``);
    the order inside a class is a permutation drawn from ``numpy.random.default_rng(seed)``.
    """
    f = np.asarray(fractions, dtype=np.float64)
    if f.ndim != 1 or (f < 0).any() or not np.isclose(f.sum(), 1.0):
        raise ValueError(f"fractions: must be non-negative and sum to 1, got {list(fractions)}")
    labels_arr = np.asarray([str(x) for x in labels])
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in f]
    for cls in sorted(set(labels_arr.tolist())):
        idx = np.flatnonzero(labels_arr == cls)
        idx = idx[rng.permutation(idx.size)]
        exact = idx.size * f
        counts = np.floor(exact).astype(int)
        for j in np.argsort(-(exact - counts), kind="stable")[: idx.size - counts.sum()]:
            counts[j] += 1
        start = 0
        for p, c in zip(parts, counts, strict=True):
            p.extend(idx[start : start + c].tolist())
            start += c
    return tuple(np.sort(np.asarray(p, dtype=np.int64)) for p in parts)


def patchgastric_splits(
    captions_csv: PathLike, *, seed: int, captions: str = "paper", split: str = "stratified"
) -> dict[str, list[BagRecord]]:
    """``{"train", "val", "test"}`` records of the 3-class subset for one seed. ``split="stratified"`` is the
    paper's random split (it does not depend on the caption style); ``"caption_disjoint"`` keeps identical
    captions (in the chosen style) in one split, so no test caption occurs in training (:mod:`.dedup`)."""
    if split not in SPLIT_STYLES:
        raise PathM3Error(f"split: one of {', '.join(SPLIT_STYLES)}, got {split!r}")
    records = patchgastric_subset(captions_csv, captions=captions)
    labels = [r.label for r in records]
    if split == "caption_disjoint":
        parts = caption_disjoint_split(
            labels,  # type: ignore[arg-type]
            [r.caption for r in records],
            fractions=SPLIT_FRACTIONS,
            seed=seed,
        )
    else:
        parts = stratified_split(labels, seed=seed)  # type: ignore[arg-type]
    tr, va, te = parts
    return {name: [records[i] for i in idx] for name, idx in (("train", tr), ("val", va), ("test", te))}


# --------------------------------------------------------------------------------------------- variants


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
    changes: dict[str, Any] = {"seed": seed, "mode": variant.mode}
    if variant.alpha is not None:
        changes["alpha"] = variant.alpha
    if variant.row_metric == "text_conditioned_accuracy":
        changes["val_metric"] = "text_conditioned_accuracy"
    elif variant.alpha == 0.0:  # caption-only: no classifier to select on; validation has no captions
        changes["val_metric"] = "loss"
    return model_config, dataclasses.replace(train_config, **changes)


# --------------------------------------------------------------------------------------------- running it


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
        from ..model.provenance import RunProvenance

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
    from ..model.provenance import RunProvenance, paper_deviations

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
    from .evaluate import evaluate_model
    from .loop import train
    from .metrics import mean_std

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
    from ..jsonfile import finite_or_null, write_json_atomic

    write_json_atomic(out / "results.json", finite_or_null(result.to_dict()))
    (out / "table.txt").write_text(result.table() + "\n")
    return result
