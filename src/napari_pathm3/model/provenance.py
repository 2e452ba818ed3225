"""What a run ran, in one record: :class:`RunProvenance`, built in one place (:meth:`RunProvenance.of`) and
written into every output — checkpoints (config.json ``provenance``), ``evaluate`` JSON, protocol tables and
caption results — so a figure never travels without the objective, initialisation and code that made it.

Torch-free (configs and the standard library only): the CLI and the protocol build it cheaply.
"""

from __future__ import annotations

import dataclasses
import functools
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import PathM3Config

__all__ = ["PAPER_VALUES", "RunProvenance", "code_version", "paper_deviations", "provenance_of"]


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """``napari-pathm3 <version>``, plus the git commit (``+dirty`` with uncommitted changes) when the
    package runs from a git checkout; the version alone otherwise (an installed wheel)."""
    from importlib.metadata import PackageNotFoundError, version

    try:  # the distribution's metadata: importing the package root would reach the api layer
        __version__ = version("napari-pathm3")
    except PackageNotFoundError:
        __version__ = "unknown"
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "describe", "--always", "--dirty=+dirty", "--abbrev=10"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        out = ""
    return f"napari-pathm3 {__version__}" + (f" (git {out})" if out else "")


@dataclass(frozen=True, kw_only=True)
class RunProvenance:
    """The switches that decide what a PathM3 figure means (see docs/method.md §10 for each one's paper value).

    ``seed`` is one seed, or the seeds of a protocol run; None when unknown (a checkpoint saved before
    provenance was recorded). ``preset`` is ``"custom"`` for a config built by hand or read from JSON.
    """

    preset: str
    mode: str
    alpha: float
    contrastive_weight: float  # PathM3Config.itc_weight: 0 = the paper's eq. (4)
    image_only_path: bool  # PathM3Config.train_image_only_path (acts in image_text training only)
    qformer_init: str  # a BLIP-2 source, or "random"
    attention: str  # correlation self-attention: auto / nystrom / exact
    use_correlation: bool
    encoder: str
    language_model: str  # HF id / folder, or "scratch"
    weight_decay_rule: str
    lr_schedule: str  # "capped" / "lavis"; "unknown" where no TrainConfig was involved
    caption_style: str  # PatchGastric "paper" / "raw", or "as given" (manifest captions)
    seed: int | tuple[int, ...] | None
    code_version: str
    qformer_init_detail: str = ""  # QFormerInitReport.summary() of the run that loaded it

    @classmethod
    def of(
        cls,
        config: PathM3Config,
        *,
        train_config: Any = None,
        caption_style: str = "as given",
        seed: int | tuple[int, ...] | None = None,
        qformer_init_detail: str = "",
    ) -> RunProvenance:
        """The provenance of a model config (after any TrainConfig mode/α override) and its training run."""
        mode, alpha = config.mode, config.alpha
        if train_config is not None:
            mode = train_config.mode or mode
            alpha = config.alpha if train_config.alpha is None else train_config.alpha
            seed = train_config.seed if seed is None else seed
        return cls(
            preset=config.preset_name or "custom",
            mode=mode,
            alpha=float(alpha),
            contrastive_weight=float(config.itc_weight),
            image_only_path=bool(config.train_image_only_path),
            qformer_init=config.qformer_init or "random",
            attention=config.correlation.attention,
            use_correlation=bool(config.use_correlation),
            encoder=config.encoder_name or "unrecorded",
            language_model=config.language.name or "scratch",
            weight_decay_rule=config.optim.weight_decay_rule,
            lr_schedule=getattr(train_config, "lr_schedule", "unknown"),
            caption_style=caption_style,
            seed=tuple(seed) if isinstance(seed, (list, tuple)) else seed,
            code_version=code_version(),
            qformer_init_detail=qformer_init_detail,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunProvenance:
        """From :meth:`to_dict` output; unknown keys are an error (a newer writer), missing ones too."""
        fields = dataclasses.fields(cls)
        names = {f.name for f in fields}
        required = {f.name for f in fields if f.default is dataclasses.MISSING}
        if not set(data) <= names or not required <= set(data):
            raise ValueError(
                f"provenance: unknown keys {sorted(set(data) - names)}, missing {sorted(required - set(data))}"
            )
        seed = data["seed"]
        return cls(**{**data, "seed": tuple(seed) if isinstance(seed, list) else seed})

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        if isinstance(self.seed, tuple):
            out["seed"] = list(self.seed)
        return out

    def header(self) -> str:
        """One line for the top of a table or a log: every switch, in words."""
        seed = ",".join(map(str, self.seed)) if isinstance(self.seed, tuple) else self.seed
        parts = [
            f"preset {self.preset}",
            f"mode {self.mode}",
            f"alpha {self.alpha:g}",
            f"contrastive {self.contrastive_weight:g}",
            f"image-only path {'on' if self.image_only_path else 'off'}",
            f"Q-Former init {self.qformer_init}",
            f"attention {self.attention}" + ("" if self.use_correlation else " (no correlation)"),
            f"encoder {self.encoder}",
            f"LM {self.language_model}",
            f"decay {self.weight_decay_rule}",
            f"lr {self.lr_schedule}",
            f"captions {self.caption_style}",
            f"seed {seed if seed is not None else 'unknown'}",
            self.code_version,
        ]
        return "run: " + " | ".join(parts)


#: what the paper (eq. (1)-(4), Table 6, as BLIP-2's trainer runs it) has for each recorded switch
PAPER_VALUES: dict[str, Any] = {
    "mode": "image_text",
    "contrastive_weight": 0.0,
    "image_only_path": False,
    "attention": "nystrom",
    "use_correlation": True,
    "language_model": "google/flan-t5-xl",
    "weight_decay_rule": "lavis",
    "lr_schedule": "lavis",
}


def paper_deviations(prov: RunProvenance) -> list[str]:
    """The recorded switches of ``prov`` that differ from the paper, in words (empty: none of them)."""
    out = [
        f"{name} {getattr(prov, name)!r} (paper: {value!r})"
        for name, value in PAPER_VALUES.items()
        if getattr(prov, name) != value and not (name == "mode" and prov.mode.startswith("per variant"))
    ]
    if prov.qformer_init == "random":
        out.append("qformer_init 'random' (paper: BLIP-2's pre-trained Q-Former)")
    return out


def provenance_of(model: Any) -> dict[str, Any]:
    """The run record of a ``PathM3Model``: the one its checkpoint (or its trainer) recorded, else one read off
    its config (caption style and seed then unknown), with the code that uses it now (``used_with``)."""
    saved = getattr(model, "provenance", None)
    record = dict(saved) if saved else RunProvenance.of(model.config, caption_style="unknown").to_dict()
    record["used_with"] = code_version()
    return record
