"""Checkpoint files: ``config.json`` (the :class:`~napari_pathm3.config.PathM3Config`, with class names and
encoder name), ``model.safetensors`` (all tensors; tied tensors stored once, aliases in the metadata),
``qformer_tokenizer/``, ``lm_tokenizer/`` and ``language_model/config.json`` (so the LM architecture is
rebuilt offline). Written to a temporary folder beside the target, then moved into place. No pickle.

The patch grid the model was trained with is part of the config (``tiling``). Checkpoints written before that
kept it in a ``pathm3_tiling.json`` sidecar: :func:`read_config` folds the sidecar into the config, so they
load unchanged. Importing this module does not import torch (reading a config needs none).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._types import PathLike, ProgressFn, Stage, report
from ..config import TilingConfig
from ..errors import CheckpointError
from ..jsonfile import write_json_atomic

if TYPE_CHECKING:
    from torch import Tensor

__all__ = [
    "CONFIG_NAME",
    "FORMAT_VERSION",
    "WEIGHTS_NAME",
    "check_compatibility",
    "check_state_dict",
    "is_checkpoint_dir",
    "load_tensors",
    "non_finite_tensors",
    "read_config",
    "read_provenance",
    "read_tiling",
    "write_checkpoint",
]

CONFIG_NAME = "config.json"
#: config.json key of the run record (RunProvenance) beside the model settings
PROVENANCE_KEY = "provenance"
WEIGHTS_NAME = "model.safetensors"
FORMAT_VERSION = 1
#: where checkpoints written before ``PathM3Config.tiling`` existed kept the patch grid (read, never written)
LEGACY_TILING_NAME = "pathm3_tiling.json"


def _dedupe(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Tied tensors (T5/GPT-2 embeddings and LM head) share storage; safetensors refuses that, so keep one
    name per storage and record the others as aliases."""
    seen: dict[tuple[int, int, tuple[int, ...], tuple[int, ...]], str] = {}
    tensors: dict[str, Tensor] = {}
    aliases: dict[str, str] = {}
    for name in sorted(state):
        t = state[name]
        key = (t.untyped_storage().data_ptr(), int(t.storage_offset()), tuple(t.shape), tuple(t.stride()))
        if t.numel() and key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        tensors[name] = t.detach().to("cpu").contiguous()
    return tensors, aliases


def non_finite_tensors(tensors: dict[str, Tensor]) -> list[str]:
    """Names of floating-point tensors holding NaN or Inf."""
    import torch

    return [k for k, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def is_checkpoint_dir(path: PathLike) -> bool:
    """True when ``path`` is a folder this package wrote: its config.json carries ``pathm3_format``."""
    try:
        data = json.loads((Path(path) / CONFIG_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "pathm3_format" in data


def _check_replaceable(target: Path) -> None:
    """Only an empty folder or a checkpoint of ours is ever replaced: anything else stays untouched."""
    # twice: a concurrent writer may move its checkpoint away and its new one in while we look
    for _ in range(2):
        if not target.exists() or is_checkpoint_dir(target):
            return
    if target.is_dir() and not any(target.iterdir()):
        return
    raise CheckpointError(
        f"{target}: exists and is not a napari-pathm3 checkpoint; nothing was changed or removed. "
        "Save to a new folder (or move this one away)"
    )


def write_checkpoint(
    directory: PathLike,
    *,
    config: dict[str, Any],
    state: dict[str, Tensor],
    writers: dict[str, Callable[[Path], None]] | None = None,
    provenance: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint folder atomically.

    Args:
        directory: target folder; an existing checkpoint (or empty folder) is replaced only once the new one
            is complete; any other existing folder or file is an error and is left untouched.
        config: JSON-serialisable model config (saved as config.json with a format version).
        state: tensors to save (tied tensors are stored once).
        writers: ``{subfolder: fn(path)}`` for tokenizers and HF configs (e.g. ``tok.save_pretrained``).
        provenance: what run made these weights (``RunProvenance.to_dict()``), kept in config.json under
            ``"provenance"`` (not a model setting: :func:`read_config` leaves it out).

    Returns:
        The checkpoint folder.
    """
    from safetensors.torch import save_file

    target = Path(directory).expanduser().resolve()
    tensors, aliases = _dedupe(state)
    bad = non_finite_tensors(tensors)
    if bad:  # a diverged model: never written, so no checkpoint on disk is ever non-finite
        raise CheckpointError(
            f"{target}: not saved: {len(bad)} tensor(s) hold NaN/Inf (e.g. {bad[:3]}); training diverged: "
            "lower the learning rate or check the features for NaN/Inf"
        )
    _check_replaceable(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        meta = {"format": "pt", "pathm3_format": str(FORMAT_VERSION), "aliases": json.dumps(aliases)}
        save_file(tensors, str(tmp / WEIGHTS_NAME), metadata=meta)
        canonical_header(tmp / WEIGHTS_NAME)
        payload = {"pathm3_format": FORMAT_VERSION, **config}
        if provenance is not None:
            payload[PROVENANCE_KEY] = provenance
        write_json_atomic(tmp / CONFIG_NAME, payload, sort_keys=True)
        for sub, fn in (writers or {}).items():
            (tmp / sub).mkdir(parents=True, exist_ok=True)
            fn(tmp / sub)
        _move_into_place(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def canonical_header(path: Path) -> None:
    """Rewrite a safetensors file's JSON header with sorted keys, so identical tensors and config give a
    byte-identical file: safetensors writes ``__metadata__`` from a hash map whose order changes per process.
    The tensors' data offsets are relative to the end of the header, so only the header changes; it is
    rewritten in place (same length: same compact JSON, keys reordered), else the file is copied once."""
    import struct

    with path.open("rb") as fh:
        (size,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(size).decode("utf-8"))
    text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the 8-byte alignment safetensors itself pads to
    if len(text) == size:
        with path.open("r+b") as fh:
            fh.seek(8)
            fh.write(text)
        return
    tmp = path.with_name(path.name + ".canonical")
    with path.open("rb") as src, tmp.open("wb") as dst:
        src.seek(8 + size)
        dst.write(struct.pack("<Q", len(text)) + text)
        shutil.copyfileobj(src, dst, 1 << 24)
    os.replace(tmp, path)


def _move_into_place(tmp: Path, target: Path, attempts: int = 20) -> None:
    """Rename the finished folder ``tmp`` to ``target``, moving an existing ``target`` aside first. Another
    process may put its own copy in place between the two renames ("Directory not empty"): move that aside
    too and retry, so concurrent writers of one checkpoint (e.g. the demo model) never fail."""
    import errno
    import uuid

    for _ in range(attempts):
        if target.exists():
            _check_replaceable(target)
            old: Path | None = target.parent / f".{target.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            try:
                os.replace(target, old)  # type: ignore[arg-type]
            except FileNotFoundError:
                old = None  # another writer moved it first
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        try:
            os.replace(tmp, target)
            return
        except OSError as err:
            if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
    raise CheckpointError(f"{target}: could not be replaced ({attempts} concurrent writers); try again")


def read_config(directory: PathLike) -> dict[str, Any]:
    """The checkpoint's config.json as a dict (without the format version); CheckpointError if unusable."""
    path = Path(directory).expanduser()
    cfg_path, weights = path / CONFIG_NAME, path / WEIGHTS_NAME
    if not cfg_path.is_file() or not weights.is_file():
        raise CheckpointError(
            f"no PathM3 checkpoint at {path}: expected {CONFIG_NAME} and {WEIGHTS_NAME}; "
            "create one with PathM3Model.save_pretrained(folder)"
        )
    try:
        data = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{cfg_path}: unreadable config ({err}); re-save the checkpoint") from err
    if not isinstance(data, dict):
        raise CheckpointError(
            f"{cfg_path}: holds a JSON {type(data).__name__}, not an object of model settings; re-save the checkpoint"
        )
    data.pop(PROVENANCE_KEY, None)  # what run made the weights, not a model setting (read_provenance)
    version = data.pop("pathm3_format", None)
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{cfg_path}: checkpoint format {version!r}, this napari-pathm3 reads format {FORMAT_VERSION}; "
            "re-save it with a matching napari-pathm3 version"
        )
    if data.get("tiling") is None:
        legacy = _legacy_tiling(path)
        if legacy is not None:
            data["tiling"] = legacy
    return data


def read_provenance(directory: PathLike) -> dict[str, Any] | None:
    """The ``provenance`` block of a checkpoint's config.json (None for a checkpoint saved without one)."""
    read_config(directory)  # the usual checks and one-line errors
    data = json.loads((Path(directory).expanduser() / CONFIG_NAME).read_text(encoding="utf-8"))
    value = data.get(PROVENANCE_KEY)
    return value if isinstance(value, dict) else None


def _legacy_tiling(path: Path) -> dict[str, Any] | None:
    """The ``pathm3_tiling.json`` sidecar of an older checkpoint (validated), or ``None`` when absent."""
    from ..schemas import load_config

    sidecar = path / LEGACY_TILING_NAME
    if not sidecar.is_file():
        return None
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CheckpointError(
            f"{sidecar}: unreadable tiling settings ({err}); delete or fix the file"
        ) from err
    fix = "delete or fix the file"
    return load_config(TilingConfig, data, source=str(sidecar), fix=fix, error=CheckpointError).to_dict()


def read_tiling(directory: PathLike) -> TilingConfig | None:
    """The patch grid a checkpoint's model was trained with (``None`` when it records none); torch-free."""
    from ..schemas import load_config

    tiling = read_config(directory).get("tiling")
    if tiling is None:
        return None
    source = f"{Path(directory).expanduser() / CONFIG_NAME}: tiling"
    return load_config(TilingConfig, tiling, source=source, fix=CONFIG_FIX, error=CheckpointError)


#: the fix named when a config.json fails validation
CONFIG_FIX = "fix that value (see docs/user-guide.md) or re-save the checkpoint with napari-pathm3"


def model_config(directory: PathLike) -> Any:
    """The :class:`~napari_pathm3.config.PathM3Config` of a checkpoint, validated by schema (types, ranges,
    cross-field rules); :class:`CheckpointError` naming config.json, the key, the value and the fix."""
    from ..config import PathM3Config
    from ..schemas import load_config

    path = Path(directory).expanduser()
    data = read_config(path)
    return load_config(
        PathM3Config, data, source=str(path / CONFIG_NAME), fix=CONFIG_FIX, error=CheckpointError
    )


def check_shapes(
    expected: dict[str, Any],
    directory: PathLike,
    *,
    optional_prefix: str | None = None,
    skip: Callable[[str], bool] | None = None,
) -> None:
    """:func:`check_state_dict` against the tensor *header* of ``model.safetensors`` (no data read): a config
    edited to other sizes is refused before a model of those sizes is built. ``expected``: name -> shape."""
    from safetensors import safe_open

    path = Path(directory).expanduser() / WEIGHTS_NAME
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            names = [k for k in f.keys() if skip is None or not skip(k)]  # noqa: SIM118
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in names}
        aliases = json.loads(meta.get("aliases", "{}"))
        if not isinstance(aliases, dict):
            raise ValueError("aliases is not an object")
        shapes.update(
            {a: shapes[n] for a, n in aliases.items() if n in shapes and (skip is None or not skip(a))}
        )
    except Exception as err:  # safetensors raises its own error types
        raise CheckpointError(f"{path}: unreadable weights ({err}); re-save the checkpoint") from err

    class _Shape:  # what check_state_dict reads of a tensor
        def __init__(self, shape: tuple[int, ...]) -> None:
            self.shape = shape

    check_state_dict(
        {k: _Shape(tuple(v)) for k, v in expected.items()},  # type: ignore[misc]
        {k: _Shape(v) for k, v in shapes.items()},  # type: ignore[misc]
        path=Path(directory).expanduser(),
        optional_prefix=optional_prefix,
    )


def tensor_bytes(path: Path) -> dict[str, int]:
    """Bytes of each tensor of a safetensors file, from its header's data offsets (no tensor data read)."""
    import struct

    with path.open("rb") as fh:
        (size,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(size).decode("utf-8"))
    return {
        k: int(v["data_offsets"][1]) - int(v["data_offsets"][0])
        for k, v in header.items()
        if k != "__metadata__"
    }


def load_tensors(
    directory: PathLike,
    *,
    skip: Callable[[str], bool] | None = None,
    progress: ProgressFn | None = None,
) -> dict[str, Tensor]:
    """The tensors of ``model.safetensors`` on CPU, with tied aliases restored; names for which ``skip``
    is true are not read at all. ``progress``: ``LOAD_MODEL`` events counting the bytes read so far of the
    tensors to read (one event per tensor), so a large checkpoint shows its time left."""
    from safetensors import safe_open

    path = Path(directory).expanduser() / WEIGHTS_NAME
    try:
        sizes = tensor_bytes(path) if progress is not None else {}
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            names = [k for k in f.keys() if skip is None or not skip(k)]  # noqa: SIM118 - no items()
            total, done = sum(sizes.get(k, 0) for k in names), 0
            report(progress, 0, total, Stage.LOAD_MODEL)
            tensors = {}
            for k in names:
                tensors[k] = f.get_tensor(k)
                done += sizes.get(k, 0)
                report(progress, done, total, Stage.LOAD_MODEL)
    except Exception as err:  # safetensors raises its own error types
        raise CheckpointError(f"{path}: unreadable weights ({err}); re-save the checkpoint") from err
    try:
        for alias, name in json.loads(meta.get("aliases", "{}")).items():
            if skip is None or not skip(alias):
                tensors[alias] = tensors[name]
    except (ValueError, KeyError, AttributeError, TypeError) as err:
        raise CheckpointError(f"{path}: damaged tensor aliases ({err}); re-save the checkpoint") from err
    bad = non_finite_tensors(tensors)
    if bad:
        raise CheckpointError(
            f"{path}: {len(bad)} tensor(s) hold NaN/Inf (e.g. {bad[:3]}); the model diverged or the file is "
            "damaged: use another checkpoint (e.g. best/ of an earlier run) or retrain"
        )
    return tensors


def check_compatibility(
    config: Any,
    *,
    path: PathLike,
    expected_feature_dim: int | None = None,
    expected_encoder: str | None = None,
    expected_classes: Iterable[str] | None = None,
) -> None:
    """Raise :class:`CheckpointError` when the checkpoint does not fit the features/encoder/classes asked for."""
    if expected_feature_dim is not None and config.feature_dim != expected_feature_dim:
        raise CheckpointError(
            f"{path}: the checkpoint expects {config.feature_dim}-dim patch features, got {expected_feature_dim}; "
            f"extract features with its encoder ({config.encoder_name or 'unrecorded'}) or train a new model"
        )
    if expected_encoder is not None and config.encoder_name and config.encoder_name != expected_encoder:
        raise CheckpointError(
            f"{path}: the checkpoint was trained on features of {config.encoder_name!r}, not {expected_encoder!r}; "
            f"extract features with {config.encoder_name!r} or train a new model"
        )
    if expected_classes is not None and tuple(expected_classes) != tuple(config.class_names):
        raise CheckpointError(
            f"{path}: the checkpoint predicts classes {list(config.class_names)}, not {list(expected_classes)}; "
            "use those class names (same order) or train a new model"
        )


def check_state_dict(
    expected: dict[str, Tensor],
    loaded: dict[str, Tensor],
    *,
    path: PathLike,
    optional_prefix: str | None = None,
) -> None:
    """Strict key and shape check; keys under ``optional_prefix`` may be absent (an LM stored by id)."""
    missing = [
        k for k in expected if k not in loaded and not (optional_prefix and k.startswith(optional_prefix))
    ]
    unexpected = [k for k in loaded if k not in expected]
    shapes = [
        f"{k}: checkpoint {tuple(loaded[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in loaded and tuple(loaded[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {missing[:3]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
    if shapes:
        problems.append(f"{len(shapes)} with other shapes (e.g. {shapes[:3]})")
    if problems:
        raise CheckpointError(
            f"{path}: weights do not match the model built from its config.json: {'; '.join(problems)}; "
            "the checkpoint is corrupt or from another model version: re-save or retrain it"
        )
