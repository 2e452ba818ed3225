"""Trainer state without pickle: tensors (optimizer moments, torch RNG) in ``trainer_state.safetensors``,
everything else (step, epoch, scheduler, history, numpy/python RNG) in ``trainer_state.json``."""

from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError
from ..jsonfile import write_json_atomic

STATE_TENSORS = "trainer_state.safetensors"
STATE_JSON = "trainer_state.json"


def flatten_optimizer(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into tensors ``optim.state.<param>.<key>`` and a JSON-able rest."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, per_param in state_dict["state"].items():
        for key, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.state.{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[key] = value
    groups = [
        {k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()}
        for g in state_dict["param_groups"]
    ]
    return tensors, {"param_groups": groups, "scalars": scalars}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, t in tensors.items():
        if not name.startswith("optim.state."):
            continue
        pid, key = name[len("optim.state.") :].split(".", 1)
        state.setdefault(int(pid), {})[key] = t
    for pid, extra in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(extra)
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    return {"state": state, "param_groups": groups}


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    py = random.getstate()
    # np.random.get_state(legacy=False) returns a fresh dict; only its "state" arrays need converting
    np_state = dict(np.random.get_state(legacy=False))
    if isinstance(np_state.get("state"), dict):
        np_state["state"] = {
            k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in np_state["state"].items()
        }
    meta = {"python": [py[0], list(py[1]), py[2]], "numpy": np_state}
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
    if "python" in meta:
        v, internal, gauss = meta["python"]
        random.setstate((v, tuple(internal), gauss))
    if "numpy" in meta:
        st = dict(meta["numpy"])
        if isinstance(st.get("state"), dict) and "key" in st["state"]:  # MT19937
            st["state"] = {**st["state"], "key": np.asarray(st["state"]["key"], dtype=np.uint32)}
        np.random.set_state(st)


def save_trainer_state(directory: Path, *, optimizer: torch.optim.Optimizer, meta: dict[str, Any]) -> None:
    """Write the two trainer-state files into ``directory`` (each via a temporary file and ``os.replace``)."""
    from safetensors.torch import save_file

    opt_tensors, opt_meta = flatten_optimizer(optimizer.state_dict())
    rng_tensors, rng_meta = rng_state()
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{STATE_TENSORS}.tmp"
    save_file({**opt_tensors, **rng_tensors}, str(tmp))
    os.replace(tmp, directory / STATE_TENSORS)
    payload = {**meta, "optimizer": opt_meta, "rng": rng_meta}
    write_json_atomic(directory / STATE_JSON, _tag_non_finite(payload), indent=1)


#: a non-finite float in the trainer state (an undefined loss, a best metric not yet set) is written as
#: ``{"__float__": "nan"}`` so the file stays strict JSON and resuming restores the same value
_FLOAT_TAG = "__float__"


def _tag_non_finite(obj: object) -> object:
    if isinstance(obj, float) and not math.isfinite(obj):
        return {_FLOAT_TAG: repr(obj)}
    if isinstance(obj, dict):
        return {k: _tag_non_finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_tag_non_finite(v) for v in obj]
    return obj


def _untag_non_finite(obj: object) -> object:
    if isinstance(obj, dict):
        if set(obj) == {_FLOAT_TAG}:
            return float(obj[_FLOAT_TAG])
        return {k: _untag_non_finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_untag_non_finite(v) for v in obj]
    return obj


def load_trainer_state(directory: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(tensors, json)`` of a saved trainer state; CheckpointError when missing or unreadable."""
    from safetensors.torch import load_file

    t_path, j_path = directory / STATE_TENSORS, directory / STATE_JSON
    if not t_path.is_file() or not j_path.is_file():
        raise CheckpointError(
            f"no trainer state in {directory} ({STATE_TENSORS}, {STATE_JSON}); cannot resume"
        )
    try:
        # states written before the tag held bare NaN literals: json.loads still reads those
        meta = _untag_non_finite(json.loads(j_path.read_text(encoding="utf-8")))
        if not isinstance(meta, dict):
            raise ValueError(f"{STATE_JSON} holds {type(meta).__name__}, not an object")
        return load_file(str(t_path)), meta
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{directory}: unreadable trainer state ({err}); start without resume") from err
