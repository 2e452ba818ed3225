"""Start the Q-Former from BLIP-2 (``PathM3Config.qformer_init``; CLI ``--qformer-init``).

Table 6 is BLIP-2-FlanT5-XL's recipe and BLIP-2 fine-tunes from its pre-trained Q-Former. Our Q-Former uses
transformers' ``Blip2ForConditionalGeneration`` state-dict names (``query_tokens``, ``qformer.layernorm``,
``qformer.encoder.layer.i.{attention,crossattention,intermediate_query,output_query}``), so the tensors map
one to one. Read from safetensors only (a hub id such as ``Salesforce/blip2-flan-t5-xl`` through
``huggingface_hub``, or a local folder with ``model.safetensors`` or a sharded ``model.safetensors.index.json``);
only the shards that hold Q-Former tensors are opened, never the ViT or the LM.

What cannot map is handled explicitly and reported (:class:`QFormerInitReport`):

* the cross-attention key/value weights take BLIP-2's vision width (1408 for ViT-g); when our correlation
  width differs they keep their own initialisation and are listed as re-initialised;
* transformers' BLIP-2 checkpoints carry no Q-Former text side (word/position embeddings, the text FFN):
  ours keeps its initialisation (or ``QFormerConfig.text_init``'s BERT) and the report lists them;
* ``language_projection`` loads when its shape fits and the LM is a pretrained one, else it is kept;
* any other missing, unexpected or differently shaped Q-Former tensor (another depth, width, number of
  queries or cross-attention frequency) is a one-line :class:`~napari_pathm3.errors.CheckpointError` naming
  the keys.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import CheckpointError, PathM3Error
from .qformer import is_text_side_key

__all__ = ["QFormerInitReport", "download_hint", "load_blip2_qformer", "read_blip2_tensors"]

log = logging.getLogger(__name__)

_INDEX = "model.safetensors.index.json"
_SINGLE = "model.safetensors"
_PROJ = "language_projection."
# cross-attention key/value weights: (H, vision width) in BLIP-2, (H, correlation width) here
_CROSS_KV = re.compile(
    r"^qformer\.encoder\.layer\.\d+\.crossattention\.attention\.(key|value)\.(weight|bias)$"
)


def _wanted(key: str) -> bool:
    return key == "query_tokens" or key.startswith(("qformer.", _PROJ))


def download_hint(source: str) -> str:
    """The command that fetches only what :func:`read_blip2_tensors` needs of a hub checkpoint."""
    return f"hf download {source} --include 'model*.safetensors*' config.json --local-dir blip2"


def _local_files(folder: Path) -> dict[str, Path]:
    """``{tensor name: shard}`` for the wanted tensors of a local BLIP-2 folder (safetensors only)."""
    index = folder / _INDEX
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
        return {k: folder / f for k, f in weight_map.items() if _wanted(k)}
    single = folder / _SINGLE
    if single.is_file():
        from safetensors import safe_open

        with safe_open(str(single), framework="pt", device="cpu") as f:
            return {k: single for k in f.keys() if _wanted(k)}  # noqa: SIM118 - safe_open has no items()
    raise CheckpointError(
        f"{folder}: no {_SINGLE} or {_INDEX} (a BLIP-2 checkpoint in safetensors is needed; pickled .bin "
        "files are not read)"
    )


def _hub_files(source: str) -> dict[str, Path]:
    """Download (or find in the HF cache) the index and only the shards holding Q-Former tensors."""
    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    hf_hub_download = huggingface_hub.hf_hub_download  # looked up per call: tests replace it
    try:
        try:
            index = Path(hf_hub_download(source, _INDEX))
        except EntryNotFoundError as err:  # the repo exists but has no index: a single-file checkpoint
            if isinstance(err, LocalEntryNotFoundError):  # offline and not cached
                raise
            return _local_files(Path(hf_hub_download(source, _SINGLE)).parent)
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
        shards = sorted({f for k, f in weight_map.items() if _wanted(k)})
        paths = {f: Path(hf_hub_download(source, f)) for f in shards}
    except Exception as err:  # offline / no such repo: huggingface_hub raises many error types
        raise PathM3Error(
            f"cannot read the BLIP-2 checkpoint {source!r} (offline, or no such hub id/folder: "
            f"{type(err).__name__}); download it with `{download_hint(source)}` and pass --qformer-init blip2, "
            "or --qformer-init none for a randomly initialised Q-Former"
        ) from err
    return {k: paths[f] for k, f in weight_map.items() if _wanted(k)}


def read_blip2_tensors(source: str) -> dict[str, Tensor]:
    """``query_tokens``, ``qformer.*`` and ``language_projection.*`` tensors of a BLIP-2 checkpoint (CPU)."""
    from safetensors import safe_open

    folder = Path(source).expanduser()
    where = _local_files(folder) if folder.is_dir() else _hub_files(source)
    out: dict[str, Tensor] = {}
    by_file: dict[Path, list[str]] = {}
    for key, path in where.items():
        by_file.setdefault(path, []).append(key)
    for path, keys in by_file.items():
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                out.update({k: f.get_tensor(k) for k in keys})
        except Exception as err:  # safetensors raises its own error types
            raise CheckpointError(f"{path}: unreadable BLIP-2 weights ({err})") from err
    if not any(k.startswith("qformer.") for k in out):
        raise CheckpointError(
            f"{source}: no Q-Former tensors (qformer.*): not a BLIP-2 checkpoint (Blip2ForConditionalGeneration "
            "or Blip2Model layout)"
        )
    return out


@dataclass
class QFormerInitReport:
    """What :func:`load_blip2_qformer` did, tensor by tensor (state-dict names of the PathM3 model)."""

    source: str
    loaded: list[str] = field(default_factory=list)
    reinitialised: list[str] = field(default_factory=list)  # "name: BLIP-2 (a, b) vs ours (a, c)"
    not_in_source: list[str] = field(default_factory=list)  # ours, kept (the text side)
    projection: str = "kept"  # "loaded", or why it was kept

    def summary(self) -> str:
        parts = [f"{len(self.loaded)} tensors from BLIP-2 {self.source}"]
        if self.reinitialised:
            parts.append(f"re-initialised (width differs): {', '.join(self.reinitialised)}")
        if self.not_in_source:
            parts.append(f"{len(self.not_in_source)} text-side tensors not in the checkpoint, kept")
        parts.append(f"language_projection {self.projection}")
        return "Q-Former init: " + "; ".join(parts)

    def to_dict(self) -> dict[str, object]:
        return {
            "source": self.source,
            "loaded": len(self.loaded),
            "reinitialised": list(self.reinitialised),
            "not_in_source": len(self.not_in_source),
            "projection": self.projection,
        }


def _check_names(ours: dict[str, Tensor], theirs: dict[str, Tensor], source: str) -> None:
    want = {k for k in ours if k.startswith("qformer.") and not is_text_side_key(k[len("qformer.") :])}
    have = {"qformer.query_tokens" if k == "query_tokens" else k for k in theirs if not k.startswith(_PROJ)}
    missing = sorted(want - have)
    unexpected = sorted(k for k in have - set(ours))
    if missing or unexpected:
        raise CheckpointError(
            f"BLIP-2 checkpoint {source} does not fit this Q-Former: missing {missing[:6]}"
            f"{' ...' if len(missing) > 6 else ''} ({len(missing)}), unexpected {unexpected[:6]}"
            f"{' ...' if len(unexpected) > 6 else ''} ({len(unexpected)}); match num_hidden_layers, "
            "cross_attention_frequency and num_query_tokens to the checkpoint's Q-Former"
        )


@torch.no_grad()
def load_blip2_qformer(model: nn.Module, source: str) -> QFormerInitReport:
    """Copy BLIP-2's Q-Former, query tokens (and the LM projection where it fits) into ``model`` in place.

    Args:
        model: a ``PathM3Model``.
        source: HF hub id or local folder of a BLIP-2 checkpoint in safetensors.

    Returns:
        The report (also logged at INFO, its re-initialised tensors at WARNING).
    """
    theirs = read_blip2_tensors(source)
    ours = model.state_dict()
    _check_names(ours, theirs, source)
    report = QFormerInitReport(source=source)
    # cross-attention key/value linears whose input width differs (BLIP-2's vision width vs our correlation
    # width): weight and bias keep our initialisation together
    stale = {
        k.rsplit(".", 1)[0]
        for k, v in theirs.items()
        if _CROSS_KV.match(k) and k.endswith(".weight") and k in ours and ours[k].shape != v.shape
    }
    wrong = []
    for key, value in sorted(theirs.items()):
        if key.startswith(_PROJ):
            continue
        name = "qformer.query_tokens" if key == "query_tokens" else key
        target = ours[name]
        if name.rsplit(".", 1)[0] in stale:
            if name.endswith(".weight"):
                report.reinitialised.append(
                    f"{name}: BLIP-2 {tuple(value.shape)} vs ours {tuple(target.shape)}"
                )
            continue
        if target.shape != value.shape:
            wrong.append(f"{name} {tuple(value.shape)} vs {tuple(target.shape)}")
            continue
        report.loaded.append(name)
    if wrong:
        raise CheckpointError(
            f"BLIP-2 checkpoint {source}: shapes differ from this Q-Former ({'; '.join(wrong[:4])}"
            f"{' ...' if len(wrong) > 4 else ''}); use the checkpoint's hidden_size, intermediate_size and "
            "num_query_tokens"
        )
    for name in report.loaded:  # only once every shape is known to fit: a failed load changes nothing
        ours[name].copy_(
            theirs["query_tokens" if name == "qformer.query_tokens" else name].to(ours[name].dtype)
        )
    report.not_in_source = sorted(
        k
        for k in ours
        if k.startswith("qformer.") and is_text_side_key(k[len("qformer.") :]) and k not in theirs
    )
    report.projection = _load_projection(model, ours, theirs)
    log.info("%s", report.summary())
    if report.reinitialised:
        log.warning("Q-Former init from %s: re-initialised %s", source, report.reinitialised)
    return report


def _load_projection(model: nn.Module, ours: dict[str, Tensor], theirs: dict[str, Tensor]) -> str:
    w, b = theirs.get(f"{_PROJ}weight"), theirs.get(f"{_PROJ}bias")
    if w is None or b is None:
        return "kept (not in the checkpoint)"
    language = getattr(getattr(model, "config", None), "language", None)
    if getattr(language, "name", None) is None:
        return "kept (our LM is built from scratch, BLIP-2's projection targets another LM)"
    if ours[f"{_PROJ}weight"].shape != w.shape:
        return (
            f"kept (shape {tuple(w.shape)} vs ours {tuple(ours[f'{_PROJ}weight'].shape)}: another LM width)"
        )
    ours[f"{_PROJ}weight"].copy_(w.to(ours[f"{_PROJ}weight"].dtype))
    ours[f"{_PROJ}bias"].copy_(b.to(ours[f"{_PROJ}bias"].dtype))
    return "loaded"
