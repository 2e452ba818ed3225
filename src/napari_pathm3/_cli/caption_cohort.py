"""``napari-pathm3 caption SLIDE [SLIDE ...] --cohort OUT.h5ad``: batch captioning into one cohort table.

One row per slide (prediction, probabilities, caption, warnings, paths, the checkpoint's verdict fields) and
the slide embeddings (mean image-only query output) as ``X``; the same rows as ``OUT.csv``. A slide that
fails gets a row with its ``error`` and the batch goes on (exit status 1).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

PER_SLIDE = ("out", "heatmap", "csv", "geojson", "spatialdata", "ome_zarr")


def run_cohort(args: argparse.Namespace, caption_one: Callable[..., Any]) -> int:
    from .. import api
    from ..errors import PathM3Error
    from ..io.cohort import write_cohort
    from ..io.extras import require
    from ..model.verdict import verdict_of
    from ..training.cohort import slide_embeddings

    if args.cohort is None:
        raise PathM3Error("several slides: pass --cohort OUT.h5ad (one row per slide)")
    named = [f"--{o.replace('_', '-')}" for o in PER_SLIDE if getattr(args, o) is not None]
    if len(args.slide) > 1 and named:
        raise PathM3Error(f"{', '.join(named)} name one slide's files; with several slides use --cohort only")
    stems = [Path(s).stem for s in args.slide]
    repeated = sorted({s for s in stems if stems.count(s) > 1})
    if repeated:
        raise PathM3Error(f"slide ids (file names) repeat: {repeated[:3]}; a cohort row needs a unique id")
    require("anndata", purpose="--cohort")  # before captioning, not after it
    model = api.load_model(args.model, device=args.device, text_side=False)
    recorded = verdict_of(model)
    verdict = recorded.to_dict() if recorded is not None else {}
    rows: list[dict[str, Any]] = []
    embeddings: list[np.ndarray | None] = []
    failed = 0
    for slide in args.slide:
        one = argparse.Namespace(**vars(args))
        one.slide = slide
        try:
            result, features = caption_one(one, keep_features=True)
        except PathM3Error as err:
            failed += 1
            print(f"napari-pathm3 caption: {Path(slide).name}: {err}", file=sys.stderr)
            rows.append({"slide_id": Path(slide).stem, "slide_path": str(slide), "error": str(err)})
            embeddings.append(None)
            continue
        rows.append(_row(result, slide, verdict))
        bag = argparse.Namespace(features=features)
        embeddings.append(slide_embeddings(model, [bag])[0])
    width = next((len(e) for e in embeddings if e is not None), 0)
    x = np.stack([np.full(width, np.nan, np.float32) if e is None else e for e in embeddings])
    uns = {"model": str(args.model), "class_names": list(model.config.class_names), "verdict": verdict}
    h5ad, csv_path = write_cohort(args.cohort, rows, embeddings=x, uns=uns)
    print(
        f"cohort table: {h5ad} and {csv_path} ({len(rows) - failed} of {len(rows)} slides)", file=sys.stderr
    )
    return 1 if failed else 0


def _row(result: Any, slide: str, verdict: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {
        "slide_id": Path(slide).stem,
        "slide_path": str(slide),
        "prediction": result.label,
    }
    row.update({f"prob_{c}": float(p) for c, p in result.probabilities.items()})
    row.update(
        caption=result.caption,
        num_patches=result.num_patches,
        model=result.model_name,
        encoder=result.encoder_name,
        warnings=" | ".join(result.warnings),
        error="",
    )
    for k in ("learned_to_classify", "learned_to_caption"):
        if k in verdict:
            row[f"model_{k}"] = bool(verdict[k])
    return row
