"""PatchGastric's shortcuts on the real captions (no features, no model): what memory alone scores.

For both caption styles (``paper``: the paper's references; ``raw``: as published) and both split styles
(``stratified``: the paper's random 20/40/40; ``caption_disjoint``: no test caption in training), seeds 0-2:
verbatim overlap of test captions with training captions, caption-lookup label accuracy, and BLEU@4 /
CIDEr-D of pasting the most frequent training caption (overall, and of the true class). The
nearest-neighbour and predicted-class rows need features and a model: ``train --protocol patchgastric``
reports them in its table.

    python benchmarks/bench_shortcuts.py [--captions PATH/captions.csv]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import DATA_DIR, emit, load_average  # noqa: E402

KEYS = (
    ("verbatim_overlap", "test captions verbatim in training", True),
    ("caption_lookup_accuracy", "caption-lookup label accuracy", True),
    ("most_frequent_caption_bleu_4", "most-frequent caption BLEU@4", False),
    ("most_frequent_caption_cider_d", "most-frequent caption CIDEr-D", False),
    ("true_class_caption_bleu_4", "true class's top caption BLEU@4", False),
    ("true_class_caption_cider_d", "true class's top caption CIDEr-D", False),
)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from napari_pathm3.training.metrics import mean_std
    from napari_pathm3.training.protocol import PATCHGASTRIC_CLASSES, patchgastric_splits
    from napari_pathm3.training.shortcuts import shortcut_baselines

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--captions", default=str(DATA_DIR / "patchgastric" / "captions.csv"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    cells: dict[str, Any] = {}
    for style in ("paper", "raw"):
        for split in ("stratified", "caption_disjoint"):
            runs = []
            for seed in args.seeds:
                s = patchgastric_splits(args.captions, seed=seed, captions=style, split=split)
                runs.append(
                    {
                        **shortcut_baselines(s["train"], s["test"], PATCHGASTRIC_CLASSES),
                        "n_train": len(s["train"]),
                        "n_test": len(s["test"]),
                    }
                )
            cells[f"{style}/{split}"] = {"runs": runs, "summary": mean_std(runs)}
    record = {
        "bench": "shortcuts",
        "seeds": args.seeds,
        "cells": cells,
        "seconds": round(time.perf_counter() - t0, 1),
        "load_average": load_average(),
    }
    emit(record)
    return record


def to_markdown(record: dict[str, Any]) -> str:
    """One row per shortcut, one column per caption style / split (mean ± std over the seeds)."""
    cells = record.get("cells", {})
    if not cells:
        return "_not measured_\n"
    names = list(cells)
    rows = ["| shortcut | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for key, title, pct in (*KEYS, ("n_train", "training / test slides", False)):
        vals = []
        for n in names:
            mean, std = cells[n]["summary"].get(key, (float("nan"), 0.0))
            if key == "n_train":
                test = cells[n]["summary"]["n_test"][0]
                vals.append(f"{mean:.0f} / {test:.0f}")
            else:
                vals.append(f"{mean * 100:.1f} ± {std * 100:.1f} %" if pct else f"{mean:.3f} ± {std:.3f}")
        rows.append(f"| {title} | " + " | ".join(vals) + " |")
    note = f"\nSeeds {record.get('seeds')}; {record.get('seconds')} s, load average {record.get('load_average')}.\n"
    return "\n".join(rows) + "\n" + note


if __name__ == "__main__":
    main()
