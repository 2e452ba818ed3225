"""Many slides' results as one table: AnnData ``.h5ad`` (a row per slide, slide embeddings as ``X``) and the
same rows as CSV beside it.

``obs`` holds the per-slide fields (strings, numbers, booleans; ``None`` becomes "" / NaN); ``X`` the slide
embeddings ``(n_slides, d)`` (``d = 0`` when there are none); ``uns`` run-level fields (model, class names,
verdict). The CSV is written from the same frame, so the two never disagree.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._types import PathLike
from ..errors import PathM3Error
from .extras import require


def _column(values: list[Any]) -> Any:
    """One obs column: numeric when every present value is a number, else strings ("" for missing)."""
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, (bool, np.bool_)) for v in present) and len(present) == len(values):
        return np.asarray(values, bool)
    if present and all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in present):
        return np.asarray([np.nan if v is None else float(v) for v in values], np.float64)
    return np.asarray(["" if v is None else str(v) for v in values], dtype=object)


def _uns_value(value: Any) -> Any:
    """h5ad stores str/number/bool, lists of them and dicts; JSON-like ``None`` becomes ""."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if isinstance(value, Mapping):
        return {str(k): _uns_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [_uns_value(v) for v in value]
        return items if items and not any(isinstance(v, dict) for v in items) else [str(v) for v in items]
    return value


def write_cohort(
    path: PathLike,
    rows: Sequence[Mapping[str, Any]],
    *,
    embeddings: np.ndarray | None = None,
    uns: Mapping[str, Any] | None = None,
    index_key: str = "slide_id",
    csv: bool = True,
) -> tuple[Path, Path | None]:
    """Write ``rows`` (one mapping per slide) as ``path`` (.h5ad) and, with ``csv``, ``path`` with ``.csv``.

    Returns:
        ``(h5ad path, csv path or None)``.
    """
    ad = require("anndata", purpose="the cohort table (.h5ad)")
    import pandas as pd

    path = Path(path)
    if path.suffix != ".h5ad":
        raise PathM3Error(f"{path}: the cohort table must end in .h5ad")
    if not rows:
        raise PathM3Error(f"{path}: no slides to write")
    keys = list(dict.fromkeys(k for r in rows for k in r))
    frame = pd.DataFrame({k: _column([r.get(k) for r in rows]) for k in keys})
    ids = frame[index_key].astype(str) if index_key in frame else pd.Series(map(str, range(len(rows))))
    if ids.duplicated().any():
        raise PathM3Error(f"{path}: slide ids repeat ({sorted(set(ids[ids.duplicated()]))[:3]})")
    frame.index = pd.Index(ids.to_list())
    x = np.zeros((len(rows), 0), np.float32) if embeddings is None else np.asarray(embeddings, np.float32)
    if x.shape[0] != len(rows) or x.ndim != 2:
        raise PathM3Error(f"{path}: embeddings must be ({len(rows)}, d), got {x.shape}")
    table = ad.AnnData(X=x, obs=frame, uns=_uns_value(dict(uns or {})))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    table.write_h5ad(tmp)
    tmp.replace(path)
    csv_path = None
    if csv:
        csv_path = path.with_suffix(".csv")
        frame.to_csv(csv_path, index=False)
    return path, csv_path


__all__ = ["write_cohort"]
