"""Task families (issue 21): does today's default recipe beat ABMIL and the stock caption on MIL + caption
tasks nobody tuned it for, on every seed?

For each family of ``_families.py`` and each seed: a cohort of synthetic bags (stratified 20/40/40
train/val/test; 600 bags = 120 training bags by default) is written as CLAM/TRIDENT-style ``.h5`` bags + a
manifest, then run through the CLI a user runs::

    napari-pathm3 train --manifest M --features F --out RUN --seed S --threads 1
    napari-pathm3 evaluate RUN/best --manifest M --features F --split test --predictions

Baselines on the same bags and split, in the same run: gated-attention ABMIL and a mean-pool linear model
(``napari_pathm3.training.baselines``; epoch / weight decay chosen on the validation split), and from the
evaluate JSON's ``baselines`` block: the constant caption (most frequent training caption), the stock caption
of the predicted and of the true class (most frequent training caption of that class), and nearest-training-
caption retrieval (cosine of mean-pooled features). PathM3's own checkpoint is the epoch its default
``val_metric`` chose on the validation split. Nothing is chosen on the test split.

Per family one JSON line (means, spread, per-seed rows, the acceptance checks); the last line is the
record ``run_all.py`` reads.

    python benchmarks/bench_families.py                       # all families x 5 seeds, 600 bags each
    python benchmarks/bench_families.py --quick               # 2 seeds x 150 bags (recipe iteration)
    python benchmarks/bench_families.py --families counting --seeds 0 1 --bags 300 --width 1024
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
from _families import FAMILIES, Family, make_cohort, write_cohort  # noqa: E402

#: acceptance bar of issue 21
ACC_MARGIN, SEED_SLACK, BLEU_MARGIN, COUNT_BAR, AGREE_BAR = 0.05, 0.02, 0.03, 0.5, 0.9


def _cli(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "napari_pathm3.cli", *args, "--threads", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return proc


def _bags(items: list, classes: tuple[str, ...]) -> list[tuple[np.ndarray, int]]:
    return [(f, classes.index(b.label)) for f, b in items]


def run_seed(family: Family, seed: int, bags: int, work: Path, *, width: int | None) -> dict[str, Any]:
    from napari_pathm3.training.baselines import AbmilConfig, fit_abmil, fit_mean_pool_linear

    cohort = make_cohort(family, seed, bags, width=width)
    data = work / f"{family.name}_s{seed}"
    manifest = write_cohort(cohort, data)
    run = work / f"{family.name}_run{seed}"
    t0 = time.perf_counter()
    train = subprocess.Popen(
        [sys.executable, "-m", "napari_pathm3.cli", "train", "--manifest", str(manifest), "--features",
         str(data), "--out", str(run), "--seed", str(seed), "--threads", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    # the classification baselines train meanwhile, on one thread
    tr, va, te = (_bags(cohort[s], family.classes) for s in ("train", "val", "test"))
    test_y = np.asarray([y for _, y in te])
    n_cls = len(family.classes)
    abmil = fit_abmil(tr, va, num_classes=n_cls, config=AbmilConfig(seed=seed, epochs=30))
    linear = fit_mean_pool_linear(tr, va, num_classes=n_cls, seed=seed)
    base = {
        "abmil_accuracy": float((abmil.predict([f for f, _ in te]) == test_y).mean()),
        "abmil_chosen": abmil.chosen,
        "mean_pool_linear_accuracy": float((linear.predict([f for f, _ in te]) == test_y).mean()),
        "mean_pool_linear_chosen": linear.chosen,
    }
    out, err = train.communicate()
    train_s = time.perf_counter() - t0
    if train.returncode != 0:
        raise RuntimeError(f"napari-pathm3 train failed:\n{err[-3000:]}")
    summary = json.loads(out)
    test_json = run / "test.json"
    _cli("evaluate", str(run / "best"), "--manifest", str(manifest), "--features", str(data), "--split",
         "test", "--predictions", "--out", str(test_json))  # fmt: skip
    ev = json.loads(test_json.read_text())
    cb = ev.get("baselines") or {}
    model = {
        "accuracy": ev["accuracy"],
        "bleu_4": ev.get("bleu_4"),
        "caption_class_agreement": cb.get("caption_class_agreement"),
        "count_word_accuracy": cb.get("count_word_accuracy"),
        "distinct_captions": len({p["caption"] for p in ev.get("predictions", [])}),
        "best_epoch": summary.get("best_epoch"),
        "epochs_run": summary.get("epochs_run"),
        "train_seconds": round(train_s, 1),
        "verdict_warnings": summary.get("warnings", []),
    }
    for key in ("constant", "stock_predicted_class", "stock_true_class", "retrieval"):
        base[f"{key}_bleu_4"] = cb.get(key, {}).get("bleu_4")
        base[f"{key}_count_word_accuracy"] = cb.get(key, {}).get("count_word_accuracy")
    return {"seed": seed, "model": model, "baselines": base}


def _run_seeds(
    fam: Family,
    seeds: list[int],
    bags: int,
    work: Path,
    *,
    width: int | None,
    jobs: int,
    cache: Path | None,
    keep: bool = False,
    only_cached: bool = False,
) -> list[dict[str, Any]]:
    """Every seed's result, ``jobs`` at a time; with ``cache``, results already there are reused and new
    ones written (a long run that is stopped keeps what it finished). A seed's bags are deleted after it
    unless ``keep``."""
    import shutil
    from concurrent.futures import ThreadPoolExecutor

    def one(seed: int) -> dict[str, Any]:
        path = cache / f"{fam.name}_w{width or fam.width}_b{bags}_s{seed}.json" if cache else None
        if path is not None and path.is_file():
            return json.loads(path.read_text())
        res = run_seed(fam, seed, bags, work, width=width)
        for sub in () if keep else (f"{fam.name}_s{seed}", f"{fam.name}_run{seed}"):
            shutil.rmtree(work / sub, ignore_errors=True)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(res))
        print(
            f"[families] {fam.name} seed {seed}: {json.dumps(res['model'])[:300]}",
            file=sys.stderr,
            flush=True,
        )
        return res

    if only_cached and cache is not None:
        seeds = [
            s for s in seeds if (cache / f"{fam.name}_w{width or fam.width}_b{bags}_s{s}.json").is_file()
        ]
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        return list(pool.map(one, seeds))


def _cached_bags(cache: Path, fam: Family, width: int | None) -> int:
    """The largest cohort size with a cached result for ``fam`` (0 when none)."""
    sizes = [
        int(p.stem.split("_b")[-1].split("_s")[0])
        for p in cache.glob(f"{fam.name}_w{width or fam.width}_b*_s*.json")
    ]
    return max(sizes, default=0)


def _stats(vals: list[float | None]) -> dict[str, float] | None:
    v = [float(x) for x in vals if x is not None]
    if not v:
        return None
    return {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
            "min": float(np.min(v)), "max": float(np.max(v))}  # fmt: skip


def summarise(family: Family, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Means/spread of every figure over seeds and the acceptance checks of issue 21."""
    col = lambda part, key: [r[part].get(key) for r in runs]  # noqa: E731
    stats = {f"model_{k}": _stats(col("model", k)) for k in
             ("accuracy", "bleu_4", "caption_class_agreement", "count_word_accuracy", "train_seconds")}  # fmt: skip
    stats.update({k: _stats(col("baselines", k)) for k in runs[0]["baselines"] if not k.endswith("_chosen")})
    acc = np.asarray(col("model", "accuracy"), float)
    ab = np.asarray(col("baselines", "abmil_accuracy"), float)
    bleu = [r["model"]["bleu_4"] for r in runs]
    stock = [r["baselines"]["stock_predicted_class_bleu_4"] for r in runs]
    checks = {
        "mean_accuracy_vs_abmil": bool(acc.mean() >= ab.mean() + ACC_MARGIN),
        "every_seed_accuracy_vs_abmil": bool((acc >= ab - SEED_SLACK).all()),
        "every_seed_bleu4_vs_stock": all(
            b is not None and s is not None and b >= s + BLEU_MARGIN for b, s in zip(bleu, stock, strict=True)
        ),
        "caption_class_agreement": bool(
            stats["model_caption_class_agreement"]
            and stats["model_caption_class_agreement"]["mean"] >= AGREE_BAR
        ),
    }
    if family.counting:
        cw = stats["model_count_word_accuracy"]
        checks["count_words"] = bool(cw and cw["mean"] >= COUNT_BAR)
    return {"family": family.name, "classes": list(family.classes), "what": family.what,
            "counting": family.counting, "stats": stats, "checks": checks, "runs": runs}  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 seeds x 150 bags: for iterating on the recipe")
    ap.add_argument("--families", nargs="+", choices=sorted(FAMILIES), default=None)
    ap.add_argument("--seeds", type=int, nargs="+", default=None)
    ap.add_argument("--bags", type=int, default=None, help="bags per cohort (20/40/40); default 600")
    ap.add_argument(
        "--width", type=int, default=None, help="feature width for every family (default: each own)"
    )
    ap.add_argument("--keep", type=Path, default=None, help="keep bags and runs in this folder")
    ap.add_argument("--jobs", type=int, default=1, help="seeds run at once (each: one CLI run + baselines)")
    ap.add_argument(
        "--results", type=Path, default=None, help="cache each seed's result here; a re-run skips those done"
    )
    ap.add_argument(
        "--only-cached", action="store_true", help="summarise the --results seeds only; train none"
    )
    ap.add_argument("--note", action="append", default=[], help="a note for the record (e.g. the load seen)")
    ap.add_argument("--splice", type=Path, default=None, help="write this record's section into this page")
    args = ap.parse_args(argv)
    if args.only_cached and args.results is None:
        ap.error("--only-cached needs --results")
    os.environ.setdefault("NAPARI_PATHM3_THREADS", "1")
    import torch

    torch.set_num_threads(1)  # baselines on one core, the CLI run on the other
    seeds = args.seeds or ([0, 1] if args.quick else [0, 1, 2, 3, 4])
    bags = args.bags or (150 if args.quick else 600)
    names = args.families or list(FAMILIES)
    t0, load0 = time.perf_counter(), load_average()
    families = []
    with tempfile.TemporaryDirectory(prefix="bench_families_") as tmp:
        work = args.keep or Path(tmp)
        for name in names:
            fam = FAMILIES[name]
            tf = time.perf_counter()
            fam_bags = (
                _cached_bags(args.results, fam, args.width) if args.only_cached and not args.bags else bags
            )
            runs = _run_seeds(
                fam,
                seeds,
                fam_bags,
                work,
                width=args.width,
                jobs=args.jobs,
                cache=args.results,
                keep=args.keep is not None,
                only_cached=args.only_cached,
            )
            if not runs:
                print(f"[families] {name}: no cached seeds, left out", file=sys.stderr)
                continue
            rec = {**summarise(fam, runs), "width": args.width or fam.width, "bags": fam_bags,
                   "seconds": round(time.perf_counter() - tf, 1), "load_average": load_average()}  # fmt: skip
            print(json.dumps({"bench": "families", "family_record": rec}), flush=True)
            families.append(rec)
    record = {
        "bench": "families",
        "quick": args.quick,
        "bags": bags,
        "split": "20/40/40 stratified",
        "seeds": seeds,
        "families": families,
        "recipe": "napari-pathm3 train --manifest M --features F --out RUN --seed S --threads 1 (defaults)",
        "seconds": round(time.perf_counter() - t0, 1),
        "load_average_start": load0,
        "load_average": load_average(),
        "machine": machine(),
        "notes": args.note,
    }
    if args.only_cached:  # the figures were measured earlier: this run's time and load say nothing
        record.update(
            seconds=None, load_average_start=None, load_average=None, summarised_from=str(args.results)
        )
    emit(record)
    if args.splice:
        splice(record, args.splice)
    return record


START, END = "<!-- bench_families:start -->", "<!-- bench_families:end -->"


def splice(record: dict[str, Any], doc: Path) -> None:
    """Write this benchmark's section (from ``record`` only) into ``doc`` between the START/END markers,
    or before its ``## Notes`` section the first time; the rest of the page is left as it is."""
    rows = "\n".join(f"| {a} | {b} | {c} |" for a, b, c in checks(record))
    section = (
        f"{START}\n## Learning: task families against ABMIL and stock captions (`bench_families.py`)\n\n"
        f"{to_markdown(record).strip()}\n\nAcceptance checks of issue 21 on these figures:\n\n"
        f"| check | measured | verdict |\n|---|---|---|\n{rows}\n{END}\n"
    )
    text = doc.read_text()
    if START in text and END in text:
        head, rest = text.split(START, 1)
        text = head + section.rstrip("\n") + rest.split(END, 1)[1]
    else:
        at = text.find("\n## Notes")
        at = len(text) if at < 0 else at + 1
        text = text[:at] + section + "\n" + text[at:]
    doc.write_text(text)


def checks(record: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Rows of run_all's target table: per family, each acceptance check of issue 21."""
    rows = []
    for fam in record.get("families", []):
        st = fam["stats"]
        fig = {
            "mean_accuracy_vs_abmil": f"{st['model_accuracy']['mean']:.3f} vs ABMIL {st['abmil_accuracy']['mean']:.3f} + {ACC_MARGIN}",
            "every_seed_accuracy_vs_abmil": f"min {st['model_accuracy']['min']:.3f} (ABMIL − {SEED_SLACK} per seed)",
            "every_seed_bleu4_vs_stock": _pair(st, "model_bleu_4", "stock_predicted_class_bleu_4"),
            "caption_class_agreement": _fmt(st.get("model_caption_class_agreement"), "mean"),
            "count_words": _fmt(st.get("model_count_word_accuracy"), "mean"),
        }
        for key, ok in fam["checks"].items():
            rows.append((f"{fam['family']}: {key}", fig.get(key, ""), "met" if ok else "**not met**"))
    return rows


def _fmt(s: dict[str, float] | None, key: str) -> str:
    return "-" if not s else f"{s[key]:.3f}"


def _pair(st: dict[str, Any], a: str, b: str) -> str:
    return f"{_fmt(st.get(a), 'mean')} vs stock {_fmt(st.get(b), 'mean')} + {BLEU_MARGIN}"


def _split(bags: int | None) -> str:
    return "-" if not bags else f"{bags} ({bags // 5}/{2 * bags // 5}/{2 * bags // 5})"


def _ms(s: dict[str, float] | None) -> str:
    return "-" if not s else f"{s['mean']:.3f} ± {s['std']:.3f}"


def to_markdown(record: dict[str, Any]) -> str:
    """One table of means ± std over seeds (model against every baseline), then the checks."""
    fams = record.get("families", [])
    if not fams:
        return "_not measured_\n"
    head = (
        "| family | bags (train/val/test) | width | PathM3 acc | ABMIL acc | mean-pool acc | PathM3 BLEU-4 | stock (pred. class) | "
        "stock (true class) | constant | retrieval | count words right | caption–class agreement | "
        "train s/seed |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for f in fams:
        st = f["stats"]
        rows.append(
            f"| {f['family']} | {_split(f.get('bags'))} | {f['width']} | {_ms(st['model_accuracy'])} | {_ms(st['abmil_accuracy'])} | "
            f"{_ms(st['mean_pool_linear_accuracy'])} | {_ms(st['model_bleu_4'])} | "
            f"{_ms(st.get('stock_predicted_class_bleu_4'))} | {_ms(st.get('stock_true_class_bleu_4'))} | "
            f"{_ms(st.get('constant_bleu_4'))} | {_ms(st.get('retrieval_bleu_4'))} | "
            f"{_ms(st.get('model_count_word_accuracy')) if f['counting'] else 'n/a'} | "
            f"{_ms(st.get('model_caption_class_agreement'))} | {_fmt(st.get('model_train_seconds'), 'mean')} |"
        )
    per_seed = ["", "Per seed (accuracy / ABMIL; BLEU-4 / stock of predicted class):", ""]
    for f in fams:
        cells = [
            f"s{r['seed']}: {r['model']['accuracy']:.3f} / {r['baselines']['abmil_accuracy']:.3f}; "
            f"{(r['model']['bleu_4'] or 0):.3f} / {(r['baselines']['stock_predicted_class_bleu_4'] or 0):.3f}"
            for r in f["runs"]
        ]
        per_seed.append(f"- {f['family']}: " + " · ".join(cells))
    what = ["", "Families:", ""] + [
        f"- **{f['family']}** ({', '.join(f['classes'])}): {f['what']}" for f in fams
    ]
    seeds_run = sorted({r["seed"] for f in fams for r in f["runs"]})
    timing = (
        f"Whole run {record.get('seconds')} s, load average {record.get('load_average_start')} at start, "
        f"{record.get('load_average')} at the end (2 cores shared with other work)."
        if record.get("seconds") is not None
        else "Summarised from per-seed results measured earlier (`--only-cached`); see the notes for the load."
    )
    notes = (
        f"\nSplit {record.get('split')}; seeds run: {seeds_run} (per family "
        f"above); recipe `{record.get('recipe')}`; ABMIL's epoch and the linear model's weight decay chosen on "
        "the validation split, PathM3's checkpoint by its default `val_metric` on the validation split, the "
        f"caption baselines from the training split only; all figures on the test split. {timing}\n"
    )
    notes += "".join(f"\n- {n}" for n in record.get("notes") or [])
    return head + "\n".join(rows) + "\n" + "\n".join(per_seed + what) + "\n" + notes


if __name__ == "__main__":
    main()
