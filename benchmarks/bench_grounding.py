"""Grounding benchmark: do word maps and phrase maps point at the patches a word or phrase names?

Data (``_grounding_data.py``): bags of scikit-learn 8x8 digits whose captions name the key-instance kinds they
hold ("threes and zeros ."), so the truth of every kind word is known: the patches holding that digit. PathM3
is trained through the public CLI (``napari-pathm3 train``, ``--size small`` defaults, ``--epochs`` below) and
evaluated on held-out bags (test digits never seen in training).

Per test bag and kind word in its generated caption (the kind present and not filling the whole bag):
ROC-AUC and precision at k (k = number of that kind's patches) of the word's map against that kind's patches;
the same for the aggregate attention map and a random map. Phrase maps: the phrase = the kind word, for
every test bag holding that kind, by each method (lm, itc, joint). Means over bags, then over seeds.

Reference (not shipped, n model passes per bag): occlusion, the drop in log p(word) when one patch is masked
out: how much the trained model's own output depends on each patch, the ceiling a faithful map can reach.

Targets (issue 25): word-map and phrase-map ROC-AUC >= 0.9 (mean over seeds) and above the aggregate map.

    python benchmarks/bench_grounding.py            # 3 seeds, 200/50/60 bags, 20 epochs
    python benchmarks/bench_grounding.py --quick    # smoke test: an untrained tiny model, 6 bags, seconds
"""

from __future__ import annotations

import argparse
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
from _grounding_data import KINDS, make_bags, write_bags  # noqa: E402

FULL = {"train": 200, "val": 50, "test": 60}
METHODS = ("singleton", "lm", "itc", "joint")
WORD_METHODS = ("singleton", "gradient x attention")
TARGET_AUC = 0.9


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, s))


def _precision_at_k(y: np.ndarray, s: np.ndarray) -> float:
    k = int(y.sum())
    return float(y[np.argsort(-s, kind="stable")[:k]].mean())


def _train(seed: int, work: Path, epochs: int, threads: int) -> Path:
    bags = make_bags(seed, FULL)
    data = work / f"seed{seed}"
    manifest = write_bags(bags, data)
    run = work / f"run{seed}"
    cmd = [
        sys.executable,
        "-m",
        "napari_pathm3.cli",
        "train",
        "--manifest",
        str(manifest),
        "--features",
        str(data),
    ]
    cmd += ["--out", str(run), "--seed", str(seed), "--epochs", str(epochs), "--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"train failed:\n{proc.stderr[-2000:]}")
    return run / "best"


def occlusion(model: Any, feats: np.ndarray, text: str) -> np.ndarray:
    """Reference, not a map we ship (n model passes): drop in log p(text) when each patch is masked out."""
    import torch

    from napari_pathm3.model import grounding as g

    n = len(feats)
    ids = torch.tensor(g._encode_tokens(model.lm_tokenizer, text)[0])
    mask = torch.ones(n + 1, n, dtype=torch.bool)
    mask[torch.arange(1, n + 1), torch.arange(n)] = False  # row i + 1 without patch i
    with torch.no_grad():
        x = torch.from_numpy(feats)[None].expand(n + 1, -1, -1)
        z = model.qformer(model.correlation(x, mask), mask, need_weights=False).query_output
        lp = g._token_log_probs(model, model.language_projection(z), ids).sum(dim=-1)
    return (lp[0] - lp[1:]).numpy()


def evaluate(
    model: Any, bags: list[tuple[np.ndarray, list[int]]], seed: int, *, max_new_tokens: int | None = None
) -> dict[str, Any]:
    """Mean AUC / precision@k of word maps, phrase maps (per method), aggregate attention and random maps."""
    import torch

    from napari_pathm3.grounding import phrase_map, word_maps

    rng = np.random.default_rng(seed + 7)
    rows: dict[str, list[float]] = {}
    seconds: list[float] = []
    add = lambda key, v: rows.setdefault(key, []).append(v)  # noqa: E731
    for feats, digits in bags:
        d = np.asarray(digits)
        x = torch.from_numpy(feats)[None]
        with torch.no_grad():
            agg = model(x).query_attention[0].mean(0).float().numpy()
        caption = model.generate_captions(x, max_new_tokens=max_new_tokens)[0]
        wms = {m: word_maps(model, feats, caption, method=m) for m in WORD_METHODS} if caption else {}
        wm = wms.get(WORD_METHODS[0])
        seconds.append(wm.seconds if wm else 0.0)
        for word, kind in KINDS.items():
            y = d == kind
            if not y.any() or y.all():
                continue
            rand = rng.random(len(d))
            for name, score in (("aggregate", agg), ("random", rand)):
                add(f"{name}_auc", _auc(y, score))
                add(f"{name}_precision_at_k", _precision_at_k(y, score))
            if wm is not None and word in wm.words:
                m = wm.maps[wm.words.index(word)]
                add("word_map_auc", _auc(y, m))
                add("word_map_precision_at_k", _precision_at_k(y, m))
                add(f"word_map_auc_{word}", _auc(y, m))
                gxa = wms["gradient x attention"]
                add("word_map_auc_gxa", _auc(y, gxa.maps[gxa.words.index(word)]))
                add("occlusion_auc", _auc(y, occlusion(model, feats, word)))
            for method in METHODS:
                pm = phrase_map(model, feats, word, method=method)
                add(f"phrase_map_auc_{method}", _auc(y, pm.values))
                add(f"phrase_map_precision_at_k_{method}", _precision_at_k(y, pm.values))
    out = {k: round(float(np.mean(v)), 4) for k, v in sorted(rows.items())}
    out["word_cases"] = len(rows.get("word_map_auc", []))
    out["phrase_cases"] = len(rows.get("phrase_map_auc_lm", []))
    out["word_maps_seconds_per_caption"] = round(float(np.mean(seconds)), 4) if seconds else None
    return out


def cost(n: int, *, feature_dim: int = 1024, words: int = 20) -> dict[str, Any]:
    """Seconds for the word maps of a ``words``-word caption on ``n`` random patches (``--size small`` model,
    untrained), beside the model stage they follow (classification over the same patches)."""
    import dataclasses

    import torch

    from napari_pathm3.config import PathM3Config
    from napari_pathm3.grounding import word_maps
    from napari_pathm3.model.language import build_word_tokenizer
    from napari_pathm3.model.pathm3 import PathM3Model

    vocab = [f"w{i}" for i in range(50)]
    cfg = PathM3Config.preset("small", feature_dim=feature_dim, encoder_name="", class_names=("a", "b"))
    cfg = dataclasses.replace(cfg, qformer=dataclasses.replace(cfg.qformer, text_init=None))
    torch.manual_seed(0)
    model = PathM3Model(
        cfg, lm_tokenizer=build_word_tokenizer([" ".join(vocab)]), pretrained_init=False
    ).eval()
    feats = np.random.default_rng(0).normal(size=(n, feature_dim)).astype(np.float32)
    caption = " ".join(vocab[:words])
    t0 = time.perf_counter()
    model.classify(torch.from_numpy(feats)[None])
    classify_s = time.perf_counter() - t0
    out: dict[str, Any] = {"patches": n, "words": words, "classify_seconds": round(classify_s, 3)}
    for method in WORD_METHODS:
        wm = word_maps(model, feats, caption, method=method)
        out[f"word_maps_seconds_{method}"] = round(wm.seconds, 3)
        out[f"ratio_{method}"] = round(wm.seconds / classify_s, 2)
    return out


def _tiny_model() -> Any:
    import torch

    from napari_pathm3.config import PathM3Config
    from napari_pathm3.model import build_model

    torch.manual_seed(0)
    cfg = PathM3Config.tiny(feature_dim=64, class_names=("negative", "single", "both"))
    return build_model(type(cfg)(**{**cfg.__dict__, "itc_weight": 0.5})).eval()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="untrained tiny model, 6 bags (smoke test)")
    ap.add_argument("--seeds", type=int, nargs="+", default=None)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--keep", type=Path, default=None, help="keep bags and runs in this folder")
    ap.add_argument(
        "--from-runs",
        type=Path,
        default=None,
        help="evaluate the runs kept by an earlier --keep (no training)",
    )
    ap.add_argument(
        "--cost", type=int, nargs="*", default=None, help="only time word maps at these patch counts"
    )
    args = ap.parse_args(argv)
    os.environ.setdefault("NAPARI_PATHM3_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    if args.cost is not None:
        record = {
            "bench": "grounding_cost",
            "cost": [cost(n) for n in (args.cost or [10_000, 100_000])],
            "load_average": load_average(),
            "machine": machine(),
            "torch_threads": torch.get_num_threads(),
        }
        emit(record)
        return record
    runs = []
    if args.quick:
        bags = make_bags(0, {"test": 4})["test"]
        runs.append({"seed": 0, "trained": False, **evaluate(_tiny_model(), bags, 0, max_new_tokens=6)})
    else:
        from napari_pathm3.model.pathm3 import PathM3Model

        with tempfile.TemporaryDirectory(prefix="bench_grounding_") as tmp:
            work = args.keep or Path(tmp)
            for seed in args.seeds or [0, 1, 2]:
                ts = time.perf_counter()
                if args.from_runs is not None:
                    best = args.from_runs / f"run{seed}" / "best"
                else:
                    best = _train(seed, work, args.epochs, args.threads)
                train_s = time.perf_counter() - ts
                model = PathM3Model.from_pretrained(best).eval()
                test = make_bags(seed, FULL)["test"]
                runs.append(
                    {
                        "seed": seed,
                        "trained": True,
                        "train_seconds": round(train_s, 1),
                        **evaluate(model, test, seed),
                    }
                )
    keys = [k for k in runs[0] if k.endswith("_auc") or "_auc_" in k or "precision" in k]
    mean = {k: round(float(np.mean([r[k] for r in runs if k in r])), 4) for k in keys}
    spread = {
        k: [
            round(float(min(r[k] for r in runs if k in r)), 4),
            round(float(max(r[k] for r in runs if k in r)), 4),
        ]
        for k in keys
    }
    best_phrase = max((mean.get(f"phrase_map_auc_{m}", 0.0), m) for m in METHODS)
    record = {
        "bench": "grounding",
        "quick": args.quick,
        "seeds": [r["seed"] for r in runs],
        "epochs": None if args.quick else args.epochs,
        "from_runs": None if args.from_runs is None else str(args.from_runs),
        "runs": runs,
        "mean": mean,
        "min_max": spread,
        "word_map_auc": mean.get("word_map_auc"),
        "phrase_map_auc": best_phrase[0],
        "phrase_map_best_method": best_phrase[1],
        "aggregate_auc": mean.get("aggregate_auc"),
        "occlusion_auc": mean.get("occlusion_auc"),
        "random_auc": mean.get("random_auc"),
        "targets_met": {
            "word_map_auc": (mean.get("word_map_auc") or 0) >= TARGET_AUC
            and (mean.get("word_map_auc") or 0) > (mean.get("aggregate_auc") or 0),
            "phrase_map_auc": best_phrase[0] >= TARGET_AUC
            and best_phrase[0] > (mean.get("aggregate_auc") or 0),
        },
        "seconds": round(time.perf_counter() - t0, 1),
        "load_average": load_average(),
        "machine": machine(),
    }
    emit(record)
    return record


if __name__ == "__main__":
    main()


# ------------------------------------------------------------------------------------------------ report
def checks(record: dict[str, Any]) -> list[tuple[str, str, str]]:
    if record.get("quick") or "mean" not in record:
        return []
    m, agg = record["mean"], record.get("aggregate_auc") or 0.0
    out = []
    for key, what in (("word_map_auc", "word maps"), ("phrase_map_auc", "phrase maps (best method)")):
        v = record.get(key) or 0.0
        ok = v >= TARGET_AUC and v > agg
        out.append(
            (
                f"grounding ROC-AUC, {what}, >= {TARGET_AUC} and above the aggregate map ({agg:.3f})",
                f"{v:.3f}",
                "met" if ok else "**not met**",
            )
        )
    return out + [
        (
            "grounding, occlusion reference ROC-AUC (the model's own evidence)",
            f"{m.get('occlusion_auc', 0):.3f}",
            "-",
        )
    ]


def to_markdown(record: dict[str, Any]) -> str:
    runs = record.get("runs", [])
    if not runs or record.get("quick"):
        return "_not measured (quick run)_\n"
    cols = [
        ("word_map_auc", "word map (singleton)"),
        ("word_map_auc_gxa", "word map (gradient x attention)"),
        ("phrase_map_auc_singleton", "phrase: singleton"),
        ("phrase_map_auc_lm", "phrase: lm"),
        ("phrase_map_auc_itc", "phrase: itc"),
        ("phrase_map_auc_joint", "phrase: joint"),
        ("aggregate_auc", "aggregate attention"),
        ("random_auc", "random"),
        ("occlusion_auc", "occlusion (reference)"),
    ]
    head = (
        "| seed | "
        + " | ".join(c for _, c in cols)
        + " | word map P@k | aggregate P@k | cases (words / phrases) |\n"
    )
    head += "|---" * (len(cols) + 4) + "|\n"
    rows = []
    for r in runs:
        vals = " | ".join(f"{r.get(k, float('nan')):.3f}" for k, _ in cols)
        rows.append(
            f"| {r['seed']} | {vals} | {r.get('word_map_precision_at_k', float('nan')):.3f} | "
            f"{r.get('aggregate_precision_at_k', float('nan')):.3f} | {r['word_cases']} / {r['phrase_cases']} |"
        )
    m, mm = record["mean"], record["min_max"]
    rows.append(
        "| mean (min–max) | "
        + " | ".join(
            f"{m.get(k, float('nan')):.3f} ({mm[k][0]:.2f}–{mm[k][1]:.2f})" for k, _ in cols if k in mm
        )
        + f" | {m.get('word_map_precision_at_k', float('nan')):.3f} | {m.get('aggregate_precision_at_k', float('nan')):.3f} | |"
    )
    per_word = ", ".join(
        f"{w} {m.get(f'word_map_auc_{w}', float('nan')):.3f}" for w in KINDS if f"word_map_auc_{w}" in m
    )
    notes = (
        f"\nROC-AUC of each map against the patches of the kind a word names (held-out bags; "
        f"{record.get('epochs')} epochs of `napari-pathm3 train` per seed). Word maps per kind: {per_word}. "
        f"P@k: precision at k = number of that kind's patches. Whole run {record.get('seconds')} s, load average "
        f"{record.get('load_average')} (2 cores shared with other work). Targets: ROC-AUC >= {TARGET_AUC} and above "
        "the aggregate attention map.\n"
    )
    return head + "\n".join(rows) + "\n" + notes
