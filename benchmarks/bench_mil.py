"""MIL + captioning benchmark: does PathM3 learn both heads from bags whose label and caption are set by
instance content, better than attention-MIL and than class-conditioned captions?

Data (``_mil_data.py``): MNIST-bags (Ilse et al. 2018) from scikit-learn's offline 8x8 digits; instance feature =
the 64 pixel values; label = a co-occurrence rule on the key digits 3 and 7; caption = a small grammar that
says how many 3s and 7s the bag holds and whether it holds 0s (18 distinct captions). Bags are written as
TRIDENT/CLAM-style ``.h5`` files + a manifest, and PathM3 is trained and evaluated only through the public CLI
(``napari-pathm3 train`` / ``evaluate``) with its documented defaults (``--size small``: 30 epochs, lr 1e-3,
alpha 0.1, word vocabulary, val_metric "combined"); only ``--seed`` and ``--threads`` are passed.

Baselines on the same bags: mean-pool + logistic regression, gated-attention ABMIL, the constant most-frequent
training caption, and the class-conditioned caption (most frequent training caption of the true class).

Targets (every seed): accuracy >= ABMIL + 0.05; BLEU-4 >= class-caption BLEU-4 + 0.05; distinct generated test
captions >= half the distinct reference captions.

    python benchmarks/bench_mil.py            # 3 seeds, 300/100/200 bags (train/val/test)
    python benchmarks/bench_mil.py --quick    # 1 seed, 120/40/80 bags, --epochs 12 (smoke test)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, load_average, machine  # noqa: E402
from _mil_baselines import abmil, class_captions, constant_caption, mean_pool_logreg  # noqa: E402
from _mil_data import CLASSES, caption_of, label_of, make_bags, write_bags  # noqa: E402
from _mil_probe import phrase_accuracy  # noqa: E402

FULL = {"train": 300, "val": 100, "test": 200}
QUICK = {"train": 120, "val": 40, "test": 80}


def _cli(*args: str, threads: int) -> None:
    cmd = [sys.executable, "-m", "napari_pathm3.cli", *args, "--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return proc


def _bleu4(refs: list[str], hyps: list[str]) -> float:
    from napari_pathm3.training.metrics import bleu

    return float(bleu([[r] for r in refs], hyps)["bleu_4"])


def run_seed(seed: int, sizes: dict[str, int], work: Path, *, quick: bool, threads: int) -> dict[str, Any]:
    bags = make_bags(seed, sizes)
    data = work / f"seed{seed}"
    manifest = write_bags(bags, data)
    run = work / f"run{seed}"
    extra = ["--epochs", "12"] if quick else []
    t0 = time.perf_counter()
    train = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "napari_pathm3.cli",
            "train",
            "--manifest",
            str(manifest),
            "--features",
            str(data),
            "--out",
            str(run),
            "--seed",
            str(seed),
            "--threads",
            str(threads),
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # baselines run meanwhile (one more core)
    feats = {s: [f for f, _ in b] for s, b in bags.items()}
    ys = {s: np.asarray([CLASSES.index(label_of(d)) for _, d in b]) for s, b in bags.items()}
    caps = {s: [caption_of(d) for _, d in b] for s, b in bags.items()}
    labs = {s: [label_of(d) for _, d in b] for s, b in bags.items()}
    tb = time.perf_counter()
    base = {
        "mean_pool_logreg_accuracy": mean_pool_logreg(
            feats["train"], feats["val"], feats["test"], ys["train"], ys["val"], ys["test"]
        ),
        "abmil_accuracy": abmil(
            feats["train"],
            feats["val"],
            feats["test"],
            ys["train"],
            ys["val"],
            ys["test"],
            classes=len(CLASSES),
            seed=seed,
            epochs=10 if quick else 30,
        ),
    }
    const = constant_caption(caps["train"])
    per_class = class_captions(caps["train"], labs["train"])
    base["constant_caption_bleu_4"] = _bleu4(caps["test"], [const] * len(caps["test"]))
    base["class_caption_bleu_4"] = _bleu4(caps["test"], [per_class.get(lab, const) for lab in labs["test"]])
    base["baseline_seconds"] = round(time.perf_counter() - tb, 1)
    out, err = train.communicate()
    if train.returncode != 0:
        raise RuntimeError(f"napari-pathm3 train failed:\n{err[-3000:]}")
    train_s = time.perf_counter() - t0
    summary = json.loads(out)
    test_json = run / "test.json"
    _cli(
        "evaluate",
        str(run / "best"),
        "--manifest",
        str(manifest),
        "--features",
        str(data),
        "--split",
        "test",
        "--predictions",
        "--out",
        str(test_json),
        threads=threads,
    )
    ev = json.loads(test_json.read_text())
    gen = [p["caption"] for p in ev["predictions"]]
    refs = [p["reference"] for p in ev["predictions"]]
    pathm3 = {
        "accuracy": ev["accuracy"],
        "bleu_4": ev["bleu_4"],
        "whitespace_bleu_4": _bleu4(refs, gen),
        "distinct_captions": len(set(gen)),
        "distinct_references": len(set(refs)),
        "phrase_accuracy": phrase_accuracy(refs, gen),
        "best_epoch": summary["best_epoch"],
        "epochs_run": summary["epochs_run"],
        "warnings": summary["warnings"],
        "train_seconds": round(train_s, 1),
        "examples": sorted(set(gen))[:5],
    }
    targets = {
        "accuracy": pathm3["accuracy"] >= base["abmil_accuracy"] + 0.05,
        "bleu_4": pathm3["bleu_4"] >= base["class_caption_bleu_4"] + 0.05,
        "distinct": pathm3["distinct_captions"] >= 0.5 * pathm3["distinct_references"],
    }
    return {"seed": seed, "pathm3": pathm3, "baselines": base, "targets_met": targets}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one seed, fewer bags, 12 epochs (smoke test)")
    ap.add_argument("--seeds", type=int, nargs="+", default=None)
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the PathM3 CLI runs")
    ap.add_argument("--keep", type=Path, default=None, help="keep bags and runs in this folder")
    args = ap.parse_args(argv)
    os.environ.setdefault("NAPARI_PATHM3_THREADS", "1")
    import torch

    torch.set_num_threads(1)  # baselines: one core, the PathM3 run the other
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    sizes = QUICK if args.quick else FULL
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_mil_") as tmp:
        work = args.keep or Path(tmp)
        runs = [run_seed(s, sizes, work, quick=args.quick, threads=args.threads) for s in seeds]
    record = {
        "bench": "mil",
        "quick": args.quick,
        "sizes": sizes,
        "seeds": seeds,
        "runs": runs,
        "recipe": "napari-pathm3 train --manifest M --features F --out R --seed S (defaults)"
        + (" --epochs 12" if args.quick else ""),
        "all_targets_met": all(all(r["targets_met"].values()) for r in runs),
        "seconds": round(time.perf_counter() - t0, 1),
        "load_average": load_average(),
        "machine": machine(),
    }
    emit(record)
    return record


def _phrases(p: dict[str, Any]) -> str:
    """Share of test captions with the reference's phrase for the 3s, 7s and 0s ("-" in older records)."""
    ph = p.get("phrase_accuracy")
    return " / ".join(f"{ph[k]:.2f}" for k in ("threes", "sevens", "zeros")) if ph else "-"


def _mean(vals: list[float]) -> str:
    return f"{np.mean(vals):.3f}" if vals else "-"


def to_markdown(record: dict[str, Any]) -> str:
    """Results table: per seed and mean, PathM3 against the baselines, targets met or not."""
    runs = record.get("runs", [])
    if not runs:
        return "_not measured_\n"
    head = (
        "| seed | PathM3 acc | ABMIL acc | mean-pool LR acc | PathM3 BLEU-4 | class-caption BLEU-4 | "
        "constant BLEU-4 | distinct captions (gen / ref) | phrase acc 3s / 7s / 0s | targets met (acc, BLEU, distinct) |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for r in runs:
        p, b, t = r["pathm3"], r["baselines"], r["targets_met"]
        mark = ", ".join("yes" if t[k] else "**no**" for k in ("accuracy", "bleu_4", "distinct"))
        rows.append(
            f"| {r['seed']} | {p['accuracy']:.3f} | {b['abmil_accuracy']:.3f} | {b['mean_pool_logreg_accuracy']:.3f} | "
            f"{p['bleu_4']:.3f} | {b['class_caption_bleu_4']:.3f} | {b['constant_caption_bleu_4']:.3f} | "
            f"{p['distinct_captions']} / {p['distinct_references']} | {_phrases(p)} | {mark} |"
        )
    col = lambda f: [f(r) for r in runs]  # noqa: E731
    rows.append(
        f"| mean | {_mean(col(lambda r: r['pathm3']['accuracy']))} | {_mean(col(lambda r: r['baselines']['abmil_accuracy']))} | "
        f"{_mean(col(lambda r: r['baselines']['mean_pool_logreg_accuracy']))} | {_mean(col(lambda r: r['pathm3']['bleu_4']))} | "
        f"{_mean(col(lambda r: r['baselines']['class_caption_bleu_4']))} | "
        f"{_mean(col(lambda r: r['baselines']['constant_caption_bleu_4']))} | "
        f"{_mean(col(lambda r: r['pathm3']['distinct_captions']))} / {_mean(col(lambda r: r['pathm3']['distinct_references']))} | "
        "| "
        f"{'all met' if record.get('all_targets_met') else 'not all met'} |"
    )
    sizes = record.get("sizes", {})
    notes = (
        f"\nBags train/val/test {sizes.get('train')}/{sizes.get('val')}/{sizes.get('test')}; recipe: "
        f"`{record.get('recipe')}`; whole run {record.get('seconds')} s, load average {record.get('load_average')}. "
        "Targets per seed: accuracy >= ABMIL + 0.05, BLEU-4 >= class-caption + 0.05, distinct generated test "
        "captions >= half the distinct references. Phrase acc: share of test captions with the reference's phrase for "
        "the number of 3s, of 7s and the presence of 0s (0.5 on 0s = chance).\n"
    )
    return head + "\n".join(rows) + "\n" + notes


if __name__ == "__main__":
    main()
