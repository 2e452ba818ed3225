"""Re-choose the scratch presets' recipe constants on **validation** figures (issue 24): the contrastive weight
(``SCRATCH_ITC``) and α (``SCRATCH_ALPHA``) were first chosen on bench_mil's test figures.

Each candidate is one ``bench_mil_ablation`` variant trained on bench_mil's bags (train/val/test 300/100/200 per
seed, the ``small`` preset, 30 epochs, best epoch by validation "combined" = mean of accuracy and BLEU-4). A
constant is chosen by the mean over seeds of the best checkpoint's **validation** "combined"; the test figures
are printed beside it for the record only. One JSON line per run as it ends (``"run"``), then the summary
(``"choice"``).

    python benchmarks/choose_on_validation.py                       # ITC 0 / 0.1 / 0.5 / 1 and α 0.5, seeds 0-2
    python benchmarks/choose_on_validation.py --quick               # 1 seed, small bags, 4 epochs (smoke)
    python benchmarks/choose_on_validation.py --variants no_itc default --skip no_itc:0 --runs-from earlier.jsonl
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import emit, load_average, machine  # noqa: E402
from bench_mil_ablation import FULL, QUICK, VARIANTS, run_variant  # noqa: E402

#: constant -> {value: the ablation variant that trains it}. The sweep of issue 24 ran while the recipe had ITC
#: 0.5 (then the "default" variant); those runs are stored under the names below (RENAMED maps them).
CANDIDATES: dict[str, dict[float, str]] = {
    "SCRATCH_ITC": {0.0: "no_itc", 0.1: "itc_0.1", 0.5: "itc_0.5", 1.0: "itc_1"},
    "SCRATCH_ALPHA": {
        0.1: "itc_0.5",
        0.5: "itc_0.5_alpha_0.5",
    },  # at the ITC weight the α choice was made with
}
#: variant names of runs recorded before issue 24 changed the default recipe (default had ITC weight 0.5)
RENAMED = {"default": "itc_0.5", "alpha_0.5": "itc_0.5_alpha_0.5"}


def choose(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per constant: mean validation / test "combined" of each value over the seeds it ran, and the value with
    the highest validation mean."""
    out: dict[str, Any] = {}
    for const, values in CANDIDATES.items():
        table = {}
        for value, variant in values.items():
            mine = [r for r in runs if r["variant"] == variant and r.get("val")]
            if not mine:
                continue
            val = [r["val"]["combined"] for r in mine]
            test = [(r["accuracy"] + r["bleu_4"]) / 2 for r in mine]
            table[value] = {
                "variant": variant,
                "seeds": [r["seed"] for r in mine],
                "val_combined": sum(val) / len(val),
                "test_combined": sum(test) / len(test),
            }
        best = max(table, key=lambda v: table[v]["val_combined"]) if table else None
        out[const] = {"values": table, "chosen_on_validation": best}
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one seed, small bags, 4 epochs (smoke test)")
    ap.add_argument("--seeds", type=int, nargs="+", default=None)
    ap.add_argument("--workers", type=int, default=1, help="runs in parallel (one torch thread each)")
    ap.add_argument("--variants", nargs="+", default=None, help="train only these candidates' variants")
    ap.add_argument("--skip", nargs="+", default=[], help="VARIANT:SEED runs already in --runs-from")
    ap.add_argument("--runs-from", help="JSON lines of earlier runs of this script, merged into the choice")
    ap.add_argument(
        "--legacy-names", action="store_true", help="--runs-from holds runs made before issue 24's rename"
    )
    args = ap.parse_args(argv)
    os.environ.setdefault("NAPARI_PATHM3_THREADS", "1")
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    sizes, epochs = (QUICK, 4) if args.quick else (FULL, None)
    variants = args.variants or list(
        dict.fromkeys(v for values in CANDIDATES.values() for v in values.values())
    )
    assert all(v in VARIANTS for v in variants)
    jobs = [(v, s) for s in seeds for v in variants if f"{v}:{s}" not in args.skip]
    earlier = _earlier_runs(args.runs_from, legacy=args.legacy_names) if args.runs_from else []
    t0, loads, runs = time.perf_counter(), [load_average()], []
    with tempfile.TemporaryDirectory(prefix="choose_val_") as tmp:
        if args.workers <= 1:
            for name, seed in jobs:
                runs.append(run_variant(name, seed, sizes, Path(tmp), epochs=epochs))
                loads.append(load_average())
                emit({"bench": "choose_on_validation", "run": _brief(runs[-1])})
        else:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor, as_completed

            with ProcessPoolExecutor(args.workers, mp_context=mp.get_context("spawn")) as pool:
                futures = [pool.submit(run_variant, n, s, sizes, Path(tmp), epochs=epochs) for n, s in jobs]
                for f in as_completed(futures):
                    runs.append(f.result())
                    loads.append(load_average())
                    emit({"bench": "choose_on_validation", "run": _brief(runs[-1])})
    record = {
        "bench": "choose_on_validation",
        "quick": args.quick,
        "sizes": sizes,
        "seeds": seeds,
        "runs": [_brief(r) for r in runs],
        "earlier_runs": earlier,
        "choice": choose([*earlier, *[_brief(r) for r in runs]]),
        "seconds": round(time.perf_counter() - t0, 1),
        "load_average_min_max": [min(loads), max(loads)],
        "machine": machine(),
    }
    emit(record)
    return record


def _earlier_runs(path: str, *, legacy: bool) -> list[dict[str, Any]]:
    import json

    lines = [json.loads(ln) for ln in Path(path).read_text().splitlines() if ln.startswith("{")]
    runs = [ln["run"] for ln in lines if "run" in ln]
    if legacy:  # runs made while "default" meant ITC weight 0.5
        runs = [{**r, "variant": RENAMED.get(r["variant"], r["variant"])} for r in runs]
    return runs


def _brief(r: dict[str, Any]) -> dict[str, Any]:
    keys = ("variant", "seed", "val", "accuracy", "bleu_4", "best_epoch", "epochs_run", "train_seconds")
    return {k: r.get(k) for k in keys}


def to_markdown(record: dict[str, Any]) -> str:
    """One row per constant and value: mean validation and test "combined" over the seeds."""
    rows = [
        "| constant | value | variant | seeds | validation combined | test combined (not used) |",
        "|---|---|---|---|---|---|",
    ]
    for const, c in record.get("choice", {}).items():
        for value, v in c["values"].items():
            chosen = str(value) == str(c["chosen_on_validation"])
            mark = (
                (" **(chosen)**" if len(c["values"]) > 1 else " (the only value run: not re-chosen)")
                if chosen
                else ""
            )
            rows.append(
                f"| {const} | {value}{mark} | {v['variant']} | {', '.join(map(str, v['seeds']))} | "
                f"{v['val_combined']:.3f} | {v['test_combined']:.3f} |"
            )
    runs = [*record.get("earlier_runs", []), *record.get("runs", [])]
    secs = [r["train_seconds"] for r in runs if r.get("train_seconds")]
    note = (
        f"\n{len(runs)} runs, {min(secs, default=0):.0f}-{max(secs, default=0):.0f} s of training each, load "
        f"average {record.get('load_average_min_max')} (2 shared cores).\n"
    )
    return "\n".join(rows) + "\n" + note


if __name__ == "__main__":
    main()
