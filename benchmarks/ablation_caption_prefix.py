"""Ablation of the caption-prefix extension (docs/method.md §5a): count tokens and the class token.

On task families of ``_families.py`` (issue 21), per seed, the same cohort is trained through the CLI once per
variant (``napari-pathm3 train ... --seed S`` plus the variant's flags) and evaluated on the **validation**
split (which chooses) and the test split (reported only). Figures from ``evaluate``'s JSON: accuracy, BLEU-4,
count-word accuracy and caption-class agreement of the model, and the stock caption of the predicted class.

    python benchmarks/ablation_caption_prefix.py --families presence counting --seeds 0 1 2 --jobs 2

One JSON line per run and a last line with means per family and variant.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, load_average, machine  # noqa: E402
from _families import FAMILIES, make_cohort, write_cohort  # noqa: E402

#: variant name -> extra ``napari-pathm3 train`` flags
VARIANTS: dict[str, tuple[str, ...]] = {
    "off": (),
    "class": ("--class-token", "on"),
    "count_attention": ("--count-tokens", "2", "--count-source", "attention", "--class-token", "off"),
    "count_attention+class": ("--count-tokens", "2", "--count-source", "attention", "--class-token", "on"),
    "count_gate+class": ("--count-tokens", "2", "--count-source", "gate", "--class-token", "on"),
}


def _cli(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "napari_pathm3.cli", *args, "--threads", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return proc


def _scores(path: Path) -> dict[str, Any]:
    ev = json.loads(path.read_text())
    base = ev.get("baselines") or {}
    stock = base.get("stock_predicted_class") or {}
    return {
        "accuracy": ev["accuracy"],
        "bleu_4": ev.get("bleu_4"),
        "stock_predicted_bleu_4": stock.get("bleu_4"),
        "count_word_accuracy": base.get("count_word_accuracy"),
        "caption_class_agreement": base.get("caption_class_agreement"),
        "distinct_captions": len({p["caption"] for p in ev.get("predictions", [])}),
    }


def run(family: str, seed: int, variant: str, bags: int, work: Path) -> dict[str, Any]:
    fam = FAMILIES[family]
    data = work / f"{family}_s{seed}"
    manifest = data / "manifest.csv"
    if not manifest.exists():
        write_cohort(make_cohort(fam, seed, bags), data)
    out = work / f"{family}_s{seed}_{variant}"
    done = out / "ablation_record.json"
    if done.exists():  # a kept folder: a finished run is reused (a stopped ablation keeps its runs)
        return json.loads(done.read_text())
    t0 = time.perf_counter()
    summary = json.loads(
        _cli("train", "--manifest", str(manifest), "--features", str(data), "--out", str(out),
             "--seed", str(seed), *VARIANTS[variant]).stdout
    )  # fmt: skip
    train_s = time.perf_counter() - t0
    rec: dict[str, Any] = {"family": family, "seed": seed, "variant": variant, "train_seconds": round(train_s, 1),
                           "epochs_run": summary.get("epochs_run"), "best_epoch": summary.get("best_epoch")}  # fmt: skip
    for split in ("val", "test"):
        path = out / f"{split}.json"
        _cli("evaluate", str(out / "best"), "--manifest", str(manifest), "--features", str(data),
             "--split", split, "--predictions", "--out", str(path))  # fmt: skip
        rec[split] = _scores(path)
    done.write_text(json.dumps(rec))
    print(json.dumps({"bench": "ablation_caption_prefix", "run": rec}), flush=True)
    return rec


def _mean(vals: list[Any]) -> float | None:
    vals = [v for v in vals if v is not None]
    return round(sum(vals) / len(vals), 3) if vals else None


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Means per family and variant over the seeds that ran (``seeds`` lists them)."""
    out: dict[str, Any] = {}
    for f, v in sorted({(r["family"], r["variant"]) for r in runs}):
        rows = [r for r in runs if r["family"] == f and r["variant"] == v]
        means = {
            split: {k: _mean([r[split][k] for r in rows]) for k in rows[0][split]}
            for split in ("val", "test")
        }
        out[f"{f}/{v}"] = {**means, "train_seconds": _mean([r["train_seconds"] for r in rows]),
                           "seeds": sorted(r["seed"] for r in rows)}  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--families", nargs="+", choices=sorted(FAMILIES), default=["presence", "counting"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    ap.add_argument("--bags", type=int, default=600, help="bags per cohort (20/40/40)")
    ap.add_argument("--jobs", type=int, default=1, help="CLI runs at once")
    ap.add_argument("--keep", type=Path, default=None, help="keep bags and runs in this folder")
    ap.add_argument(
        "--summarise",
        action="store_true",
        help="only summarise the finished runs kept in --keep (no training)",
    )
    args = ap.parse_args(argv)
    if args.summarise:
        if args.keep is None:
            ap.error("--summarise reads the runs kept in --keep")
        runs = [json.loads(p.read_text()) for p in sorted(args.keep.glob("*/ablation_record.json"))]
        record = {"bench": "ablation_caption_prefix", "summary": _summary(runs), "runs": runs,
                  "load_average": load_average(), "machine": machine()}  # fmt: skip
        emit(record)
        return record
    t0, load0 = time.perf_counter(), load_average()
    jobs = [(f, s, v) for f in args.families for s in args.seeds for v in args.variants]
    with tempfile.TemporaryDirectory(prefix="ablation_prefix_") as tmp:
        work = args.keep or Path(tmp)
        for f in args.families:  # cohorts first, so parallel runs never write the same folder
            for s in args.seeds:
                if not (work / f"{f}_s{s}" / "manifest.csv").exists():
                    write_cohort(make_cohort(FAMILIES[f], s, args.bags), work / f"{f}_s{s}")
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            runs = list(pool.map(lambda j: run(*j, args.bags, work), jobs))
    record = {
        "bench": "ablation_caption_prefix",
        "bags": args.bags,
        "seeds": args.seeds,
        "summary": _summary(runs),
        "runs": runs,
        "seconds": round(time.perf_counter() - t0, 1),
        "load_average_start": load0,
        "load_average": load_average(),
        "machine": machine(),
    }
    emit(record)
    return record


if __name__ == "__main__":
    main()
