"""Configs of training: the optimiser (Table 6) and the training run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ._base import _check, _in, _JsonMixin

#: AdamWConfig.weight_decay_rule values
WEIGHT_DECAY_RULES = ("lavis", "norms_biases_embeddings")


@dataclass(frozen=True, kw_only=True)
class AdamWConfig(_JsonMixin):
    """Optimiser settings of Table 6, carried to the trainer."""

    lr: float = 1e-4
    warmup_lr: float = 1e-5  # linear warm-up starts here
    warmup_steps: int = 1000
    weight_decay: float = 0.05  # not applied to biases and LayerNorm weights (BLIP-2 / LAVIS convention)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8  # torch default
    batch_size: int = 16
    # Which parameters skip weight decay. "lavis": BLIP-2's trainer (LAVIS Blip2Base.get_optimizer_params):
    # only 1-D tensors and biases, so embeddings and the query tokens are decayed (the paper's recipe).
    # "norms_biases_embeddings" (older checkpoints, the scratch presets): also the embeddings and query tokens,
    # the usual transformer convention (a scratch model's word/position tables shrink otherwise).
    weight_decay_rule: Literal["lavis", "norms_biases_embeddings"] = "norms_biases_embeddings"

    def __post_init__(self) -> None:
        _check(
            self.weight_decay_rule in WEIGHT_DECAY_RULES,
            "weight_decay_rule",
            f"one of {WEIGHT_DECAY_RULES}, got {self.weight_decay_rule!r}",
        )
        _check(_in(self.lr, 0, 10) and self.lr > 0, "lr", "must be in (0, 10]")
        _check(_in(self.warmup_lr, 0, 10), "warmup_lr", "must be in [0, 10]")
        _check(_in(self.weight_decay, 0, 10), "weight_decay", "must be in [0, 10]")
        _check(
            len(self.betas) == 2 and all(_in(b, 0, 0.999999) for b in self.betas),
            "betas",
            "two values in [0, 1)",
        )
        _check(_in(self.eps, 0, 1) and self.eps > 0, "eps", "must be in (0, 1]")
        _check(_in(self.warmup_steps, 0, 10**9), "warmup_steps", "must be in [0, 1e9]")
        _check(_in(self.batch_size, 1, 65_536), "batch_size", "must be in [1, 65536]")


#: validation metrics that choose the best epoch and drive early stopping (see TrainConfig.val_metric)
VAL_METRICS = (
    "combined",
    "accuracy",
    "balanced_accuracy",
    "macro_f1",
    "auc",
    "bleu_4",
    "loss",
    "text_conditioned_accuracy",
)


@dataclass(frozen=True, kw_only=True)
class TrainConfig(_JsonMixin):
    """How to train. Optimiser settings (lr, warm-up, weight decay, betas, batch size: Table 6) come from
    ``PathM3Config.optim``; α and the mode from ``PathM3Config`` unless overridden here."""

    epochs: int = 50  # the paper does not say; early stopping usually ends runs sooner
    batch_size: int | None = None  # global bags per optimiser step; None: PathM3Config.optim.batch_size (16)
    grad_accum_steps: int = 1  # micro-batches per optimiser step (per process: batch_size / world / accum)
    max_patches: int | None = None  # random subset of patches per training bag (memory cap); None: all
    min_lr: float = 0.0  # cosine decay floor (LAVIS's BLIP-2 fine-tuning default)
    warmup_max_fraction: float = (
        0.1  # warm-up lasts min(optim.warmup_steps, fraction x total steps): short runs
    )
    grad_clip: float | None = (
        1.0  # max gradient norm (not in the paper; steadies tiny/scratch LMs); None: off
    )
    # Learning-rate schedule. "capped" (default): linear warm-up over min(optim.warmup_steps,
    # warmup_max_fraction x total steps), then a per-step cosine to min_lr. "lavis": BLIP-2's trainer
    # (LAVIS linear_warmup_cosine_lr, the paper's Table 6): linear warm-up over optim.warmup_steps during
    # the first epoch only (cut short when that epoch has fewer steps), then a cosine per epoch (lr of
    # epoch e = min_lr + (lr - min_lr) (1 + cos(pi e / epochs)) / 2).
    lr_schedule: Literal["capped", "lavis"] = "capped"
    mode: Literal["image", "image_text", "text"] | None = None  # None: PathM3Config.mode
    alpha: float | None = None  # eq. (4) weight of L_cls; None: PathM3Config.alpha
    # early stopping / best checkpoint. "combined": mean of validation accuracy and caption BLEU-4 (greedy
    # captions of the validation bags), so a caption head that learned nothing does not win; it is accuracy
    # alone when the validation bags have no captions or alpha is 1. Also: accuracy, balanced_accuracy,
    # macro_f1, auc, bleu_4, loss.
    val_metric: str = "combined"
    patience: int | None = 10  # epochs without improvement before stopping; None: never stop early
    min_epochs: int = 10  # never stop before this many epochs, nor before the learning-rate warm-up ends
    min_delta: float = 0.0  # smallest change of val_metric that counts as an improvement
    seed: int = 0
    device: str = "auto"  # cuda, then mps, then cpu
    bf16: bool = True  # bf16 autocast on CUDA only
    num_workers: int = 0  # DataLoader worker processes (feature files are read in them)
    log_every: int = 10  # optimiser steps between progress reports

    @classmethod
    def preset(cls, size: str, **overrides: Any) -> TrainConfig:
        """Epochs and bags per step of a model size preset (``paper``: Table 6's batch, 50 epochs; the scratch
        presets: 30 epochs of 16 bags), with ``overrides`` (``None`` values keep the preset's)."""
        base: dict[str, Any] = (
            # LAVIS: its schedule, no gradient clipping
            {"epochs": 50, "batch_size": None, "lr_schedule": "lavis", "grad_clip": None}
            if size == "paper"
            else {"epochs": 30, "batch_size": 16}
        )
        return cls(**{**base, **{k: v for k, v in overrides.items() if v is not None or k not in base}})

    def __post_init__(self) -> None:
        _check(self.epochs >= 1, "epochs", "must be >= 1")
        _check(self.batch_size is None or self.batch_size >= 1, "batch_size", "must be >= 1 or None")
        _check(self.grad_accum_steps >= 1, "grad_accum_steps", "must be >= 1")
        _check(self.max_patches is None or self.max_patches >= 1, "max_patches", "must be >= 1 or None")
        _check(0.0 < self.warmup_max_fraction <= 1.0, "warmup_max_fraction", "must be in (0, 1]")
        _check(self.min_lr >= 0, "min_lr", "must be >= 0")
        _check(self.lr_schedule in ("capped", "lavis"), "lr_schedule", f"unknown {self.lr_schedule!r}")
        _check(self.mode in (None, "image", "image_text", "text"), "mode", f"unknown mode {self.mode!r}")
        _check(self.alpha is None or 0.0 <= self.alpha <= 1.0, "alpha", "must be in [0, 1] or None")
        _check(
            self.val_metric in VAL_METRICS,
            "val_metric",
            f"unknown metric {self.val_metric!r}",
        )
        _check(self.patience is None or self.patience >= 1, "patience", "must be >= 1 or None")
        _check(self.min_epochs >= 0, "min_epochs", "must be >= 0")
        _check(self.num_workers >= 0, "num_workers", "must be >= 0")
        _check(self.log_every >= 1, "log_every", "must be >= 1")
