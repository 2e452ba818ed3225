"""``napari-pathm3 train``: train PathM3 on a manifest of feature bags, or run the paper's protocol.

    napari-pathm3 train --manifest bags.csv --features FEATS --out RUN [--size tiny|small|paper] [--mode image]
    napari-pathm3 train --protocol patchgastric --features FEATS --out RUN [--captions captions.csv]
    torchrun --nproc-per-node 4 -m napari_pathm3.cli train ...       # DistributedDataParallel

The manifest has a slide/id column (a feature file or a key in FEATS), a label/subtype column, an optional
caption/text column and an optional split column (train/val/test); without splits, ``--val-fraction`` of the
bags (stratified) is held out for validation and early stopping.

The default size, ``small``, trains offline on a CPU (scratch caption LM with a word vocabulary of the training
captions); ``paper`` needs the Flan-T5-XL weights. One line per epoch goes to stderr (a tqdm bar on a terminal);
the summary JSON on stdout has ``warnings`` when the model has not learned to classify or caption.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from ..config import DEFAULT_SIZE, MODEL_SIZES, VAL_METRICS
from ._checks import (
    BATCH,
    COUNT,
    EPOCHS,
    FRACTION,
    LR,
    MAX_PATCHES,
    SEED,
    STEPS,
    VAL_FRACTION,
    add_device,
)
from .train_inputs import feature_width, manifest_records, store_encoder, store_tiling

log = logging.getLogger(__name__)

EXAMPLES = """examples:
  napari-pathm3 train --manifest bags.csv --features features/ --out runs/gastric
  napari-pathm3 train --manifest bags.csv --features features/ --out runs/quick --size tiny --epochs 5
  napari-pathm3 train --protocol patchgastric --features features/ --out runs/protocol --captions captions.csv
  napari-pathm3 train --list-encoders
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train a PathM3 model on feature bags (manifest or the paper's protocol)"
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--manifest", help="CSV: slide,label[,caption][,split] (PatchGastric captions.csv works)"
    )
    src.add_argument("--protocol", choices=("patchgastric",), help="the paper's PatchGastric protocol")
    p.add_argument("--features", required=True, help="feature folder: one store/file per slide id")
    p.add_argument("--out", required=True, help="run folder (checkpoints best/ and last/, log.csv)")
    p.add_argument("--captions", help="PatchGastric captions.csv (protocol; default: $NAPARI_PATHM3_DATA)")
    p.add_argument("--model-config", help="PathM3Config JSON (e.g. a checkpoint's config.json)")
    p.add_argument("--init", help="checkpoint folder to fine-tune instead of a new model")
    p.add_argument(
        "--size",
        choices=MODEL_SIZES,
        default=None,
        help=f"model size preset, as in the GUI and API (default: {DEFAULT_SIZE}, works offline; the Train "
        "widget starts at tiny, for a few drawn regions; 'paper' needs the Flan-T5-XL weights)",
    )
    p.add_argument("--tiny", action="store_true", help="same as --size tiny")
    p.add_argument(
        "--lm", help="caption LM: HF id or folder; 'scratch' builds a small one (default: the size preset's)"
    )
    p.add_argument(
        "--qformer-init",
        metavar="BLIP2",
        help="start the Q-Former (and query tokens; the LM projection when it fits) from a BLIP-2 checkpoint: "
        "HF id (e.g. Salesforce/blip2-flan-t5-xl) or a local folder of safetensors; 'none' = random. "
        "Default: BLIP-2-FlanT5-XL for --size paper, random otherwise",
    )
    p.add_argument("--classes", nargs="+", help="class names, in order (default: sorted manifest labels)")
    p.add_argument("--mode", choices=("image", "image_text", "text"), help="classification inputs")
    p.add_argument("--alpha", type=FRACTION, help="eq. (4) weight of the classification loss, 0-1")
    p.add_argument(
        "--count-tokens",
        type=COUNT,
        help="caption prefix: K count tokens (gated sum-pooling soft counts; not in the paper, "
        "docs/method.md §5a); 0 = off",
    )
    p.add_argument(
        "--count-source",
        choices=("gate", "attention"),
        help="what the count tokens read: their own gated sum-pooling heads (gate) or the Q-Former queries' "
        "cross-attention log-normalisers (attention)",
    )
    p.add_argument(
        "--class-token",
        choices=("on", "off"),
        help="caption prefix: a class token (true class in training, predicted class when captioning), so the "
        "caption is decoded for the class the classifier reports (not in the paper, docs/method.md §5a)",
    )
    p.add_argument(
        "--epochs", type=EPOCHS, default=None, help="default: the size preset's (see docs/training.md)"
    )
    p.add_argument("--batch-size", type=BATCH, help="bags per optimiser step (default: 16, Table 6)")
    p.add_argument("--lr", type=LR, help="peak learning rate (default: 1e-4, Table 6)")
    p.add_argument("--grad-accum", type=STEPS, default=1, help="micro-batches per optimiser step")
    p.add_argument("--max-patches", type=MAX_PATCHES, help="random patches per training bag (memory cap)")
    p.add_argument(
        "--val-metric",
        default="combined",
        choices=VAL_METRICS,
        help="chooses best/ and drives early stopping; combined = mean of accuracy and caption "
        "BLEU-4 on the validation bags",
    )
    p.add_argument("--patience", type=COUNT, default=10, help="early stopping patience in epochs (0: off)")
    p.add_argument("--min-epochs", type=COUNT, default=10, help="never stop early before this many epochs")
    p.add_argument(
        "--val-fraction",
        type=VAL_FRACTION,
        default=0.2,
        help="held-out share when the manifest has no split, in [0, 1)",
    )
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument(
        "--restarts",
        type=STEPS,
        default=1,
        help="train this many models (seeds SEED, SEED+1000, ...) and keep the best on the validation split "
        "(docs/training.md); costs that many runs",
    )
    p.add_argument("--seeds", type=SEED, nargs="+", default=[0, 1, 2], help="protocol seeds")
    p.add_argument("--no-generate", action="store_true", help="protocol: skip caption generation on test")
    p.add_argument(
        "--variants",
        nargs="+",
        default=["image", "image_text"],
        help="protocol: the paper's rows to run (image, image_text, text, image_no_correlation, "
        "image_single_task, ..., or all; see docs/training.md)",
    )
    p.add_argument(
        "--caption-style",
        choices=("paper", "raw"),
        default="paper",
        help="protocol: captions as the paper's references (lower-case, subtype sentence removed) or raw",
    )
    p.add_argument(
        "--split",
        choices=("stratified", "caption_disjoint"),
        default="stratified",
        help="protocol: the paper's random 20/40/40 split (stratified), or caption_disjoint: identical "
        "captions kept in one split, so no test caption occurs in training (not the paper's protocol)",
    )
    add_device(p)
    p.add_argument("--resume", action="store_true", help="continue from RUN/last")
    p.set_defaults(func=run)


def _size(args: argparse.Namespace) -> str:
    return "tiny" if args.tiny else (args.size or DEFAULT_SIZE)


def _model_config(args: argparse.Namespace, class_names: tuple[str, ...], feature_dim: int):
    import dataclasses

    from ..config import PathM3Config

    if args.model_config:
        from ..errors import CheckpointError
        from ..schemas import load_config

        source = f"--model-config {args.model_config}"
        try:
            data = json.loads(Path(args.model_config).read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise CheckpointError(f"{source}: unreadable ({err}); pass a checkpoint's config.json") from err
        if isinstance(data, dict):
            data.pop("pathm3_format", None)
        fix = "fix that value or pass a checkpoint's config.json"
        cfg = load_config(PathM3Config, data, source=source, fix=fix, error=CheckpointError)
    else:
        cfg = PathM3Config.preset(
            _size(args), feature_dim=feature_dim, encoder_name="", class_names=class_names
        )
    cfg = dataclasses.replace(cfg, feature_dim=feature_dim, class_names=class_names)
    if args.lm:
        name = None if args.lm == "scratch" else args.lm
        cfg = dataclasses.replace(cfg, language=dataclasses.replace(cfg.language, name=name))
    if args.lr:
        cfg = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, lr=args.lr))
    cfg = _caption_prefix(cfg, args)
    init = getattr(args, "qformer_init", None)
    if init is not None:
        cfg = dataclasses.replace(
            cfg, qformer_init=None if init.strip().lower() in ("none", "random") else init
        )
    return cfg


def _caption_prefix(cfg, args: argparse.Namespace):
    """``--count-tokens`` / ``--count-source`` / ``--class-token`` over the preset's (or --model-config's) caption prefix."""
    import dataclasses

    count, cls = getattr(args, "count_tokens", None), getattr(args, "class_token", None)
    source = getattr(args, "count_source", None)
    if count is None and cls is None and source is None:
        return cfg
    prefix = cfg.caption_prefix
    if count is not None:
        prefix = dataclasses.replace(prefix, count_tokens=count)
    if source is not None:
        prefix = dataclasses.replace(prefix, count_source=source)
    if cls is not None:
        prefix = dataclasses.replace(prefix, class_token=cls == "on")
    return dataclasses.replace(cfg, caption_prefix=prefix)


def _train_config(args: argparse.Namespace):
    from ..config import TrainConfig

    return TrainConfig.preset(
        _size(args),
        epochs=args.epochs or None,
        batch_size=args.batch_size or None,
        grad_accum_steps=args.grad_accum,
        max_patches=args.max_patches,
        mode=args.mode,
        alpha=args.alpha,
        val_metric=args.val_metric,
        patience=args.patience or None,
        min_epochs=args.min_epochs,
        seed=args.seed,
        device=args.device,
    )


class _EpochLog:
    """One line per epoch (loss, validation metrics, time) on stderr when it is not a terminal; a tqdm bar
    over epochs when it is."""

    KEYS = (
        ("train_loss", "loss"),
        ("train_loss_cls", "cls"),
        ("train_loss_caption", "cap"),
        ("train_loss_itc", "itc"),
        ("val_accuracy", "val_acc"),
        ("val_bleu_4", "val_bleu4"),
        ("val_distinct_captions", "val_distinct"),
        ("val_combined", "val_score"),
    )

    def __init__(self, epochs: int) -> None:
        self.tty = sys.stderr.isatty()
        self.bar = None
        if self.tty:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=epochs, desc="epochs", unit="epoch", file=sys.stderr)

    def __call__(self, record: dict) -> None:
        parts = {
            short: (f"{record[k]:.4g}" if isinstance(record[k], float) else str(record[k]))
            for k, short in self.KEYS
            if k in record and record[k] == record[k]  # NaN: a term this model does not train (e.g. itc)
        }
        if self.bar is not None:
            self.bar.set_postfix(parts, refresh=False)
            self.bar.update(1)
        else:
            items = " ".join(f"{k}={v}" for k, v in parts.items())
            print(
                f"epoch {record['epoch']}: {items} time={record.get('seconds', 0):.1f}s",
                file=sys.stderr,
                flush=True,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _print(obj) -> None:
    if int(os.environ.get("RANK", "0")) == 0:
        from ..jsonfile import finite_or_null

        # valid JSON: an undefined metric (NaN) is printed as null
        json.dump(finite_or_null(obj), sys.stdout, indent=2, default=str, allow_nan=False)
        print()


def run(args: argparse.Namespace) -> int:
    if args.protocol:
        return _run_protocol(args)
    from ..threads import apply_thread_policy
    from ..training.restarts import train_with_restarts

    records, class_names, train_recs, val_recs = manifest_records(args)
    model_or_cfg = _model_or_config(args, class_names, records)
    apply_thread_policy()
    tcfg = _train_config(args)
    epoch_log = _EpochLog(tcfg.epochs)
    try:
        result = train_with_restarts(
            model_or_cfg,
            train_recs,
            val_recs or None,
            tcfg,
            restarts=args.restarts,
            out_dir=args.out,
            features_dir=args.features,
            resume=args.resume,
            epoch_log=epoch_log,
        )
    finally:
        epoch_log.close()
    last = result.history[-1] if result.history else {}
    _print(
        {
            "best_dir": str(result.best_dir),
            "best_epoch": result.best_epoch,
            "best_metric": result.best_metric,
            "val_metric": tcfg.val_metric,
            "epochs_run": result.epochs_run,
            "stopped_early": result.stopped_early,
            "warnings": result.warnings,
            "restarts": result.verdict.get("restarts"),
            "last": {k: v for k, v in last.items() if not isinstance(v, list)},
            "provenance": getattr(result.model, "provenance", None),  # what ran (also in best/config.json)
        }
    )
    for w in result.warnings:
        print(f"napari-pathm3 train: warning: {w}", file=sys.stderr)
    return 0


def _run_protocol(args: argparse.Namespace) -> int:
    """``--protocol patchgastric``: the paper's subset, splits and seeds."""
    from ..errors import PathM3Error
    from ..training.protocol import PATCHGASTRIC_CLASSES, patchgastric_subset, run_patchgastric

    captions = (
        args.captions or Path(os.environ.get("NAPARI_PATHM3_DATA", "")) / "patchgastric" / "captions.csv"
    )
    if not Path(captions).is_file():
        raise PathM3Error(f"PatchGastric captions.csv not found at {captions}; pass --captions")
    dim = feature_width(patchgastric_subset(captions, captions="raw"), args.features)
    model_config, train_config = _model_config(args, PATCHGASTRIC_CLASSES, dim), _train_config(args)
    _announce(args, model_config, train_config)
    result = run_patchgastric(
        args.features,
        out_dir=args.out,
        captions_csv=captions,
        seeds=args.seeds,
        model_config=model_config,
        train_config=train_config,
        generate=not args.no_generate,
        variants=args.variants,
        captions=args.caption_style,
        split=args.split,
    )
    if int(os.environ.get("RANK", "0")) == 0:
        print(result.table())
    return 0


def _announce(args: argparse.Namespace, model_config: Any, train_config: Any) -> None:
    """First lines of a protocol run (stderr): what runs, and loudly how its objective differs from the
    paper's when it does (e.g. the default ``small`` preset), so nothing else is trained silently."""
    from ..training.protocol import _provenance

    prov, deviations = _provenance(model_config, train_config, args.caption_style, args.seeds, args.variants)
    if int(os.environ.get("RANK", "0")) != 0:
        return
    print(f"napari-pathm3 train: {prov.header()}", file=sys.stderr, flush=True)
    if deviations:
        hint = "" if prov.preset == "paper" else "; pass --size paper for the paper's objective"
        print(
            f"napari-pathm3 train: WARNING: not the paper's objective ({'; '.join(deviations)}){hint}",
            file=sys.stderr,
            flush=True,
        )


def _model_or_config(args: argparse.Namespace, class_names: tuple[str, ...], records: list[Any]) -> Any:
    """The config of a new model, or the ``--init`` checkpoint to fine-tune; either carries the grid the
    features were cut with, so `caption` cuts new slides the same way."""
    tiling = store_tiling(args.features)
    if args.init:
        from ..model import PathM3Model

        model = PathM3Model.from_pretrained(args.init, expected_classes=class_names, device=args.device)
        model.config = dataclasses.replace(model.config, tiling=tiling or model.config.tiling)
        return model
    cfg = _model_config(args, class_names, feature_width(records, args.features))
    # the encoder the features came from: `caption` then encodes new slides with it (a UNI-feature model
    # fed the default encoder's features would fail on the width, or worse, not)
    encoder = cfg.encoder_name or store_encoder(args.features)
    return dataclasses.replace(cfg, tiling=tiling or cfg.tiling, encoder_name=encoder)
