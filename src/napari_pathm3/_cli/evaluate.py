"""``napari-pathm3 evaluate MODEL --manifest bags.csv --features FEATS``: test metrics as JSON.

Classification (accuracy, balanced accuracy, macro-F1, one-vs-rest AUC, confusion matrix) on labelled bags from
the **images only** (no text, as for a new slide). A model that reads text (mode image_text / text) is also
scored with the manifest caption as input: those figures are under ``text_conditioned_*`` keys and never replace
the plain ones. Captions generated from the images are scored against the manifest captions where one exists:
BLEU-1..4, ``meteor_nltk`` (exact-match METEOR), ROUGE-L (β=1.2), CIDEr-D; no SPICE.
"""

from __future__ import annotations

import argparse
import sys

from ._checks import BATCH, BEAMS, add_device

EXAMPLES = """examples:
  napari-pathm3 evaluate runs/gastric/best --manifest bags.csv --features features/ --split test
  napari-pathm3 evaluate runs/gastric/best --manifest bags.csv --features features/ --no-generate --out m.json
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="metrics of a trained model on feature bags, as JSON")
    p.add_argument("model", help="checkpoint folder (a run's best/ or last/)")
    p.add_argument("--manifest", required=True, help="CSV: slide,label[,caption][,split]")
    p.add_argument("--features", required=True, help="feature folder: one store/file per slide id")
    p.add_argument("--split", help="only rows of this split (e.g. test)")
    p.add_argument(
        "--mode",
        choices=("image", "image_text", "text"),
        help="evaluate the model in this mode (default: its own); accuracy etc. are image-only "
        "always, image_text/text add text_conditioned_* keys from the manifest captions",
    )
    p.add_argument(
        "--tokenizer",
        choices=("paper", "words"),
        default="paper",
        help="caption tokens: paper = lower-case whitespace split (default), words = [a-z0-9]+ runs",
    )
    p.add_argument("--no-generate", action="store_true", help="skip caption generation and caption metrics")
    p.add_argument("--batch-size", type=BATCH, default=1, help="bags per forward pass, 1-4096")
    p.add_argument("--num-beams", type=BEAMS, default=1, help="beam search width of captions, 1-64")
    p.add_argument("--predictions", action="store_true", help="include per-bag predictions and captions")
    p.add_argument("--out", help="write the JSON here instead of stdout")
    p.add_argument(
        "--cohort",
        help="also write one AnnData table (.h5ad: a row per slide with label, prediction, probabilities, "
        "caption, verdict fields, features path; slide embeddings as X) and the same rows as .csv beside it "
        "(needs the [spatialdata] extra)",
    )
    add_device(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import PathM3Error
    from ..training.data import canonical_split, read_manifest
    from ..training.evaluate import evaluate_model

    everything = read_manifest(args.manifest)
    records = everything
    if args.split:
        split = canonical_split(args.split, where="--split")
        records = [r for r in records if (r.split or "train") == split]
    if not records:
        raise PathM3Error(f"{args.manifest}: no rows" + (f" with split {args.split!r}" if args.split else ""))
    if args.cohort:
        from ..io.extras import require

        require("anndata", purpose="--cohort")  # before the evaluation, not after it
    metrics = evaluate_model(
        args.model,
        records,
        features_dir=args.features,
        mode=args.mode,
        generate=not args.no_generate,
        batch_size=args.batch_size,
        device=args.device,
        return_predictions=True,  # the baselines are scored bag by bag
        generate_kwargs={"num_beams": args.num_beams},
        tokenizer=args.tokenizer,
    )
    _add_baselines(args, everything, records, metrics)
    if args.cohort:
        _write_cohort(args, records, metrics)
    if not args.predictions:
        metrics.pop("predictions", None)
    from ..jsonfile import finite_or_null, json_text, write_json_atomic

    if args.out:
        write_json_atomic(args.out, finite_or_null(metrics))
    else:
        sys.stdout.write(json_text(finite_or_null(metrics)) + "\n")
    return 0


def _add_baselines(args: argparse.Namespace, everything: list, records: list, metrics: dict) -> None:
    """The ``baselines`` block (from the manifest's training rows) into ``metrics``; its table to stderr."""
    from ..training.evaluate_baselines import caption_baselines, format_table

    if "predictions" not in metrics or metrics.get("bleu_4") is None:
        block = {"skipped": "no generated captions to compare (--no-generate or no references)"}
    else:
        evaluated = {r.key for r in records}
        train = [r for r in everything if (r.split or "train") == "train" and r.key not in evaluated]
        block = (
            caption_baselines(
                metrics["predictions"],
                train,
                metrics.get("class_names") or [],
                eval_keys=[r.key for r in records],
                features_dir=args.features,
                tokenizer=args.tokenizer,
            )
            if train
            else {"skipped": "the manifest has no training rows (other than the evaluated ones)"}
        )
    # beside the model's plain figures: before the text-conditioned keys and the per-bag rows, which stay last
    keys = list(metrics)
    at = next(
        (i for i, k in enumerate(keys) if k.startswith("text_conditioned_") or k == "predictions"), len(keys)
    )
    items = list(metrics.items())
    metrics.clear()
    metrics.update([*items[:at], ("baselines", block), *items[at:]])
    print(format_table(metrics), file=sys.stderr)


def _write_cohort(args: argparse.Namespace, records: list, metrics: dict) -> None:
    """The cohort table: rows from the predictions, embeddings from a second image-only pass per slide."""
    from ..inference import load_model
    from ..io.cohort import write_cohort
    from ..model.verdict import verdict_of
    from ..training.cohort import cohort_rows, slide_embeddings
    from ..training.data import BagDataset, resolve_features

    model = load_model(args.model, device=args.device, text_side=False)
    if args.mode is not None and args.mode != model.config.mode:
        import dataclasses

        model.config = dataclasses.replace(model.config, mode=args.mode)
    ds = BagDataset(records, model.config.class_names, args.features)
    paths = {ds[i].slide_id: str(resolve_features(r.key, args.features)) for i, r in enumerate(records)}
    recorded = verdict_of(model)
    verdict = recorded.to_dict() if recorded is not None else {}
    rows = cohort_rows(metrics, paths=paths, verdict=verdict)
    uns = {
        "model": str(args.model),
        "class_names": list(model.config.class_names),
        "mode": metrics.get("mode"),
        "verdict": {k: v for k, v in verdict.items() if not isinstance(v, (dict, list))},
        "verdict_warnings": list(verdict.get("warnings") or []),
    }
    h5ad, csv_path = write_cohort(args.cohort, rows, embeddings=slide_embeddings(model, ds), uns=uns)
    print(f"cohort table: {h5ad} and {csv_path}", file=sys.stderr)
