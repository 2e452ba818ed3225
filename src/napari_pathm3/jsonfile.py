"""The one JSON writer of the package: strict (NaN/Inf never written as JSON) and atomic (a temporary file
beside the target, then ``os.replace``, so a reader never sees half a file).

Every JSON file the package writes beside a checkpoint, a feature store or a result goes through
:func:`write_json_atomic`; :func:`json_text` gives the same strict text for stdout. It sits beside
``config``/``errors`` (not in ``io``) because ``model`` writes JSON too and must not import ``io``.
zarr's own ``zarr.json`` files are written by zarr (which replaces them atomically itself).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import TypeAlias

import numpy as np

from ._types import PathLike
from .errors import NonFiniteError

#: what :func:`json_text` accepts: JSON values, plus numpy arrays/scalars and paths (converted)
JSONInput: TypeAlias = object


def json_text(
    data: JSONInput, *, what: str = "result", indent: int | None = 2, sort_keys: bool = False
) -> str:
    """Strict JSON text (``indent=None``: compact, no spaces): NaN and Infinity, which are not JSON, raise
    :class:`~napari_pathm3.errors.NonFiniteError` naming the first such value instead of being written."""
    separators = (",", ":") if indent is None else None
    try:
        return json.dumps(
            data,
            indent=indent,
            sort_keys=sort_keys,
            separators=separators,
            default=_json_default,
            allow_nan=False,
        )
    except ValueError as err:
        where = _first_non_finite(json.loads(json.dumps(data, default=_json_default)), "")
        raise NonFiniteError(
            f"{what} not written: {where or 'a value'} is not a finite number (NaN/Inf is not valid JSON); "
            "the model or its features hold NaN/Inf: check the checkpoint and the feature bag"
        ) from err


def finite_or_null(obj: JSONInput) -> JSONInput:
    """A copy of ``obj`` (dicts, lists, tuples, numbers, numpy values) with NaN/Inf replaced by ``None``: for
    summaries where "undefined" is a legitimate value (a metric without a validation set), so the JSON stays
    valid."""
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.ndarray):
        return finite_or_null(obj.tolist())
    if isinstance(obj, dict):
        return {k: finite_or_null(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite_or_null(v) for v in obj]
    return obj


def _first_non_finite(obj: JSONInput, at: str) -> str | None:
    if isinstance(obj, float) and not math.isfinite(obj):
        return f"{at or 'the value'} = {obj}"
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for k, v in items:
        found = _first_non_finite(v, f"{at}[{k!r}]" if at else repr(k))
        if found:
            return found
    return None


def write_text_atomic(path: PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) through a temporary file beside ``path`` and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(
    path: PathLike, data: JSONInput, *, indent: int | None = 2, sort_keys: bool = False
) -> Path:
    """Write strict JSON (see :func:`json_text`) atomically (see :func:`write_text_atomic`); nothing is
    written when ``data`` holds NaN/Inf."""
    text = json_text(data, what=str(path), indent=indent, sort_keys=sort_keys)
    return write_text_atomic(path, text + "\n")


def _json_default(obj: object) -> object:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
