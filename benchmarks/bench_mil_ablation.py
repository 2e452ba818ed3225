"""Ablation on the bench_mil bags: what each training change does to both heads, per seed.

Every variant starts from the default recipe of ``napari-pathm3 train`` (``--size small``, 30 epochs, 16 bags
per step, val_metric "combined") and changes one thing. Trained with ``napari_pathm3.training.train`` on the
same bags as ``bench_mil.py`` (made in memory, not written as h5). Reported per variant and seed, on the test
bags of the best checkpoint: accuracy, BLEU-4, distinct captions, per-phrase accuracy of the captions
(threes / sevens / zeros), linear-probe accuracy of the image-only query outputs for each caption fact, and
the caption loss with each bag's own prefix against a shuffled bag's (does the LM read the prefix).

    python benchmarks/bench_mil_ablation.py                       # default and no_itc, seeds 0-2
    python benchmarks/bench_mil_ablation.py --variants no_itc itc_0.1 --seeds 2 3 4
    python benchmarks/bench_mil_ablation.py --quick                # 1 seed, small bags, 4 epochs (smoke)
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import emit, load_average, machine  # noqa: E402
from _mil_data import CLASSES, caption_of, label_of, make_bags  # noqa: E402
from _mil_probe import grad_norms, phrase_accuracy, prefix_use, probes  # noqa: E402

FULL = {"train": 300, "val": 100, "test": 200}
QUICK = {"train": 48, "val": 24, "test": 24}

HISTORY = (
    "epoch",
    "train_loss_cls",
    "train_loss_caption",
    "val_accuracy",
    "val_bleu_4",
    "val_distinct_captions",
)
Change = Callable[[Any, Any], tuple[Any, Any]]


def _set(
    model: dict[str, Any] | None = None, train: dict[str, Any] | None = None, *, seed_offset: int = 0
) -> Change:
    def change(cfg: Any, tcfg: Any) -> tuple[Any, Any]:
        tcfg = dataclasses.replace(tcfg, **(train or {}), seed=tcfg.seed + seed_offset)
        return dataclasses.replace(cfg, **(model or {})), tcfg

    return change


def _qformer(**changes: Any) -> Change:
    def change(cfg: Any, tcfg: Any) -> tuple[Any, Any]:
        return dataclasses.replace(cfg, qformer=dataclasses.replace(cfg.qformer, **changes)), tcfg

    return change


#: variant name -> (what it changes, the change). "default" is the recipe as shipped.
VARIANTS: dict[str, tuple[str, Change]] = {
    "default": ("the default recipe (`--size small`: α 0.1, no ITC, mode image_text)", _set()),
    "itc_0.5": (
        "ITC weight 0.5 (the scratch presets' default from issue 11 to issue 24)",
        _set({"itc_weight": 0.5}),
    ),
    "no_itc": ("no contrastive loss (ITC weight 0: the default since issue 24)", _set({"itc_weight": 0.0})),
    "no_itc_other_init": (
        "no contrastive loss, another initialisation (training seed + 100)",
        _set({"itc_weight": 0.0}, seed_offset=100),
    ),
    "no_itc_no_early_stop": (
        "no contrastive loss, no early stopping",
        _set({"itc_weight": 0.0}, {"patience": None}),
    ),
    "itc_0.1": ("ITC weight 0.1", _set({"itc_weight": 0.1})),
    "itc_1": ("ITC weight 1", _set({"itc_weight": 1.0})),
    "itc_2": ("ITC weight 2", _set({"itc_weight": 2.0})),
    "xattn_4_layers": (
        "4 Q-Former layers, cross-attention in every layer (input-dependent queries from layer 2)",
        _qformer(num_hidden_layers=4, cross_attention_frequency=1),
    ),
    "mode_image": (
        "classify from the image only (mode image: no caption text in the Q-Former)",
        _set({"mode": "image"}),
    ),
    "no_itc_mode_image": ("no contrastive loss, mode image", _set({"itc_weight": 0.0, "mode": "image"})),
    "no_itc_alpha_0.5": ("no contrastive loss, α 0.5", _set({"itc_weight": 0.0, "alpha": 0.5})),
    "alpha_0.5": ("α 0.5", _set({"alpha": 0.5})),
    "itc_0.5_alpha_0.5": ("ITC weight 0.5, α 0.5", _set({"itc_weight": 0.5, "alpha": 0.5})),
}
#: what ``run_all.py`` (no ``--variants``) measures: the shipped recipe and the ITC term it dropped
DEFAULT_VARIANTS = ("default", "itc_0.5")


def _bags(seed: int, sizes: dict[str, int]) -> tuple[dict[str, list[Any]], dict[str, list[list[int]]]]:
    from napari_pathm3.training.data import SlideBag

    names = tuple(sorted(CLASSES))
    raw = make_bags(seed, sizes)
    bags = {
        s: [
            SlideBag(f, names.index(label_of(d)), caption_of(d), f"{s}_{i:04d}")
            for i, (f, d) in enumerate(items)
        ]
        for s, items in raw.items()
    }
    return bags, {s: [d for _, d in items] for s, items in raw.items()}


def run_variant(
    name: str, seed: int, sizes: dict[str, int], work: Path, *, epochs: int | None
) -> dict[str, Any]:
    from napari_pathm3.config import PathM3Config, TrainConfig
    from napari_pathm3.model import PathM3Model
    from napari_pathm3.training.evaluate import metrics_of, predict
    from napari_pathm3.training.loop import train

    bags, digits = _bags(seed, sizes)
    cfg = PathM3Config.preset("small", feature_dim=64, encoder_name="", class_names=tuple(sorted(CLASSES)))
    tcfg = TrainConfig.preset("small", epochs=epochs, seed=seed, device="cpu")
    cfg, tcfg = VARIANTS[name][1](cfg, tcfg)
    t0 = time.perf_counter()
    result = train(cfg, bags["train"], bags["val"], tcfg, out_dir=work / f"{name}_s{seed}")
    seconds = time.perf_counter() - t0
    model = PathM3Model.from_pretrained(result.best_dir)
    pred = predict(model, bags["test"], batch_size=16, generate=True, device="cpu")
    m = metrics_of(pred, cfg.num_classes)
    refs, gens = [str(r) for r in pred.references], list(pred.captions or [])
    return {
        "variant": name,
        "seed": seed,
        "accuracy": m["accuracy"],
        "bleu_4": m["bleu_4"],
        "distinct_captions": len(set(gens)),
        "distinct_references": len(set(refs)),
        "phrase_accuracy": phrase_accuracy(refs, gens),
        "probes": probes(model, bags["train"], bags["test"], digits["train"], digits["test"]),
        "caption_loss": prefix_use(model, bags["test"]),
        "grad_norms": grad_norms(model, bags["train"][:16]),
        "history": [
            {k: (round(v, 4) if isinstance(v, float) else v) for k, v in h.items() if k in HISTORY}
            for h in result.history
        ],
        # validation figures of the best checkpoint: what a recipe constant may be chosen on
        "val": {
            k: result.history[result.best_epoch - 1].get(f"val_{k}")
            for k in ("accuracy", "bleu_4", "combined")
        }
        if result.best_epoch
        else {},
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "train_seconds": round(seconds, 1),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one seed, small bags, 4 epochs (smoke test)")
    ap.add_argument("--seeds", type=int, nargs="+", default=None)
    ap.add_argument("--variants", nargs="+", default=None, choices=sorted(VARIANTS))
    ap.add_argument("--epochs", type=int, default=None, help="override the preset's epochs (diagnosis only)")
    ap.add_argument("--workers", type=int, default=2, help="runs in parallel (one torch thread each)")
    args = ap.parse_args(argv)
    os.environ.setdefault("NAPARI_PATHM3_THREADS", "1")
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    names = args.variants or (["default"] if args.quick else list(DEFAULT_VARIANTS))
    sizes = QUICK if args.quick else FULL
    epochs = 4 if args.quick else args.epochs
    t0 = time.perf_counter()
    jobs = [(name, seed) for seed in seeds for name in names]
    with tempfile.TemporaryDirectory(prefix="mil_ablation_") as tmp:
        if args.workers <= 1 or len(jobs) == 1:
            runs = [run_variant(n, s, sizes, Path(tmp), epochs=epochs) for n, s in jobs]
        else:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(args.workers, mp_context=mp.get_context("spawn")) as pool:
                futures = [pool.submit(run_variant, n, s, sizes, Path(tmp), epochs=epochs) for n, s in jobs]
                runs = [f.result() for f in futures]
    record = {
        "bench": "mil_ablation",
        "quick": args.quick,
        "sizes": sizes,
        "seeds": seeds,
        "variants": names,
        "descriptions": {n: VARIANTS[n][0] for n in names},
        "epochs": epochs,
        "runs": runs,
        "seconds": round(time.perf_counter() - t0, 1),
        "load_average": load_average(),
        "machine": machine(),
    }
    emit(record)
    return record


def _row(r: dict[str, Any], desc: str) -> str:
    ph = " / ".join(f"{r['phrase_accuracy'][k]:.2f}" for k in ("threes", "sevens", "zeros"))
    z = r["probes"]["zeros"]
    cl = r["caption_loss"]
    hist = r.get("history") or [{}]
    last = hist[-1].get("train_loss_caption")
    return (
        f"| {r['seed']} | {desc} | {r['accuracy']:.3f} | {r['bleu_4']:.3f} | {r['distinct_captions']} / "
        f"{r['distinct_references']} | {ph} | {z['probe']:.2f} ({z['base_rate']:.2f}) | "
        f"{cl['own_prefix']:.3f} / {cl['shuffled_prefix']:.3f} | {'-' if last is None else f'{last:.3f}'} | "
        f"{r['best_epoch']} / {r['epochs_run']} |"
    )


def to_markdown(record: dict[str, Any]) -> str:
    """One row per run (seed, variant): test accuracy, BLEU-4, distinct captions, phrase accuracy, the probe for
    0s, the caption loss with own / shuffled prefix, the last epoch's training caption loss, best epoch."""
    runs = record.get("runs", [])
    if not runs:
        return "_not measured_\n"
    order = {n: i for i, n in enumerate(VARIANTS)}
    descs = record.get("descriptions", {})
    head = (
        "| seed | change | acc | BLEU-4 | distinct gen / ref | phrase acc 3s / 7s / 0s | probe 0s (base) | "
        "caption loss own / shuffled prefix | final train L_G | best / last epoch |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = [
        _row(r, descs.get(r["variant"], VARIANTS.get(r["variant"], (r["variant"],))[0]))
        for r in sorted(runs, key=lambda r: (r["seed"], order.get(r["variant"], 99)))
    ]
    sizes = record.get("sizes", {})
    note = (
        f"\nBags train/val/test {sizes.get('train')}/{sizes.get('val')}/{sizes.get('test')} per seed (bench_mil's); "
        f"test figures of each run's best checkpoint; whole ablation {record.get('seconds')} s, load average "
        f"{record.get('load_average')}. Phrase acc: share of test bags whose caption has the reference's phrase. "
        'Probe: logistic regression on the image-only query outputs (fit on training bags) for "the bag holds a '
        '0"; base = the test share of the most frequent answer. Own / shuffled prefix: caption loss (nats/token) '
        "given each bag's query prefix or another bag's (equal = the LM ignores the prefix).\n"
    )
    return head + "\n".join(rows) + "\n" + note


if __name__ == "__main__":
    main()
