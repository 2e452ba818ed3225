"""``napari-pathm3 score REFERENCES PREDICTIONS``: caption metrics of any captioner, as JSON.

Both files are CSV or JSON, keyed by an id (a slide or image id):

* CSV with a header: an id column (``id``, ``slide``, ``slide_id``, ``image_id``) and a text column (``caption``,
  ``text``, ``reference``, ``prediction``). Several reference rows with one id are that id's references.
* JSON: ``{"id": "caption", ...}`` (a list of strings for several references), a list of
  ``{"id"|"image_id"|"slide_id": ..., "caption"|"text": ...}`` records (a coco-caption results file), or
  ``{"annotations": [...]}`` with such records (a coco-caption annotation file).

Every prediction id needs a reference and every reference id a prediction (else a one-line error). The metrics
are the project's (see ``napari_pathm3.training.metrics``): BLEU-1..4, ``meteor_nltk`` (nltk METEOR, exact
matches only), ROUGE-L (β=1.2), CIDEr-D, on lower-case whitespace tokens by default. SPICE is not computed.
"""

from __future__ import annotations

import argparse
import sys

EXAMPLES = """examples:
  napari-pathm3 score references.csv predictions.csv
  napari-pathm3 score coco_annotations.json coco_results.json --per-example --out scores.json
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "score", help="caption metrics of predicted captions against references (CSV/JSON in, JSON out)"
    )
    p.add_argument("references", help="CSV or JSON: id -> reference caption(s)")
    p.add_argument("predictions", help="CSV or JSON: id -> one predicted caption")
    p.add_argument(
        "--tokenizer",
        choices=("paper", "words"),
        default="paper",
        help="paper = lower-case whitespace split (default), words = [a-z0-9]+ runs",
    )
    p.add_argument("--per-example", action="store_true", help="add each id's sentence BLEU@4")
    p.add_argument("--out", help="write the JSON here instead of stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .. import api

    metrics = api.score(
        args.references, args.predictions, tokenizer=args.tokenizer, per_example=args.per_example
    )
    from ..jsonfile import finite_or_null, json_text, write_json_atomic

    if args.out:
        write_json_atomic(args.out, finite_or_null(metrics))
    else:
        sys.stdout.write(json_text(finite_or_null(metrics)) + "\n")
    return 0
