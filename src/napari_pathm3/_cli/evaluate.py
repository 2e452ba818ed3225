"""``napari-pathm3 evaluate MODEL --manifest bags.csv --features FEATS``: test metrics as JSON.

Classification (accuracy, balanced accuracy, macro-F1, one-vs-rest AUC, confusion matrix) on labelled bags;
captions generated from the images (BLEU-1..4, METEOR exact-match, ROUGE-L, CIDEr-D) where a reference exists.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="metrics of a trained model on feature bags, as JSON")
    p.add_argument("model", help="checkpoint folder (a run's best/ or last/)")
    p.add_argument("--manifest", required=True, help="CSV: slide,label[,caption][,split]")
    p.add_argument("--features", required=True, help="feature folder: one store/file per slide id")
    p.add_argument("--split", help="only rows of this split (e.g. test)")
    p.add_argument("--mode", choices=("image", "image_text", "text"),
                   help="classification inputs (default: the model's); image_text/text use the manifest captions")  # fmt: skip
    p.add_argument("--no-generate", action="store_true", help="skip caption generation and caption metrics")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--num-beams", type=int, default=1)
    p.add_argument("--predictions", action="store_true", help="include per-bag predictions and captions")
    p.add_argument("--out", help="write the JSON here instead of stdout")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import PathM3Error
    from ..training.data import read_manifest
    from ..training.evaluate import evaluate_model

    records = read_manifest(args.manifest)
    if args.split:
        records = [r for r in records if (r.split or "") == args.split.lower()]
    if not records:
        raise PathM3Error(f"{args.manifest}: no rows" + (f" with split {args.split!r}" if args.split else ""))
    metrics = evaluate_model(
        args.model, records, features_dir=args.features, mode=args.mode, generate=not args.no_generate,
        batch_size=args.batch_size, device=args.device, return_predictions=args.predictions,
        generate_kwargs={"num_beams": args.num_beams},
    )  # fmt: skip
    text = json.dumps(metrics, indent=2, default=str)
    if args.out:
        Path(args.out).write_text(text + "\n")
    else:
        sys.stdout.write(text + "\n")
    return 0
