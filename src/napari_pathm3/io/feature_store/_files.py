"""Files of a feature store: the ownership test, per-chunk digests and the checked read (see
:mod:`.feature_store` for the layout and the rules)."""

from __future__ import annotations

import hashlib
import json
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import FeatureStoreError

SUFFIX = ".zarr"
#: ``attrs[MARKER_KEY] == MARKER`` marks a folder as a feature store this package created (and may replace)
MARKER_KEY, MARKER = "napari_pathm3", "feature-bag"
#: the only entries a store folder holds; a folder with anything else is never removed
_STORE_ENTRIES = frozenset({"zarr.json", "features", "coords"})


def coords_sha256(coords: np.ndarray | None) -> str | None:
    if coords is None:
        return None
    return hashlib.sha256(np.ascontiguousarray(coords, dtype=np.int64).tobytes()).hexdigest()


def require_finite(features: np.ndarray, *, source: str) -> None:
    """Raise :class:`FeatureStoreError` naming ``source`` when ``features`` hold NaN or Inf."""
    bad = ~np.isfinite(features)
    if bad.any():
        rows = np.unique(np.nonzero(bad)[0])
        raise FeatureStoreError(
            f"{source}: {int(bad.sum())} non-finite feature values (NaN/Inf) in {len(rows)} patch(es), first "
            f"patch {int(rows[0])}; re-extract this bag (e.g. `napari-pathm3 extract --overwrite`) or leave it out"
        )


def _digest(block: np.ndarray) -> str:
    """CRC-32 of a chunk's values as stored, with its shape: catches accidental damage (the job here) at
    several GB/s, so checking every chunk on read costs a few percent of decoding it."""
    crc = zlib.crc32(repr(block.shape).encode())
    return f"{zlib.crc32(np.ascontiguousarray(block).tobytes(), crc):08x}"


def _group_attrs(path: Path) -> dict[str, Any] | None:
    """The attributes in ``path/zarr.json`` when it is a zarr group's metadata, else ``None`` (read as plain
    JSON: deciding what a folder is never needs zarr to accept it)."""
    try:
        data = json.loads((path / "zarr.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("node_type") != "group":
        return None
    attrs = data.get("attributes", {})
    return attrs if isinstance(attrs, dict) else None


def attrs_problem(attrs: dict[str, Any]) -> str | None:
    """What is wrong with a store's attributes (``"n = 'abc': Input should be a valid integer"``), or
    ``None``. Hand-edited or damaged attributes make the store *damaged*: never served, rebuilt on the next
    extraction (it is still ours: the marker says so)."""
    from pydantic import BaseModel, ConfigDict, Field, ValidationError

    from ...schemas import _error_line

    class StoreAttrs(BaseModel):  # the attributes reading and resuming rely on; identity ones are compared
        model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)
        slide_id: str
        n: int = Field(ge=0)
        chunk_rows: int = Field(ge=1)
        done: int = Field(ge=0)
        complete: bool
        chunk_digests: list[str] = []
        coords_sha256: str | None = None
        dtype: str = "float32"
        encoder: dict[str, Any] = {}
        grid: dict[str, Any] = {}

    try:
        parsed = StoreAttrs.model_validate(attrs)
    except ValidationError as err:
        return _error_line(err)
    if parsed.done > parsed.n:
        return f"done = {parsed.done}: more than n = {parsed.n}"
    if parsed.dtype not in ("float32", "float16"):
        return f"dtype = {parsed.dtype!r}: not float32 or float16"
    return None


def _owned_but_unreadable(path: Path) -> bool:
    """True when ``path/zarr.json`` is damaged (truncated, garbage) but the folder is still recognisably a
    store of ours: only the store's entries, its arrays' metadata intact, and our marker in the features
    array's attributes (stores made since the marker was put there) or in what is left of the damaged file.
    Only then may extraction rebuild it without the user deleting anything."""
    try:
        raw = (path / "zarr.json").read_bytes()
    except OSError:
        return False
    try:
        json.loads(raw)
        return False  # readable: not this case
    except ValueError:
        pass
    if {p.name for p in path.iterdir()} != _STORE_ENTRIES:
        return False
    arrays = {}
    for name in ("features", "coords"):
        try:
            meta = json.loads((path / name / "zarr.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        if not isinstance(meta, dict) or meta.get("node_type") != "array":
            return False
        arrays[name] = meta
    marker_attrs = arrays["features"].get("attributes") or {}
    return (isinstance(marker_attrs, dict) and marker_attrs.get(MARKER_KEY) == MARKER) or (
        f'"{MARKER_KEY}"'.encode() in raw and MARKER.encode() in raw
    )


def _is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


def _ownership(path: Path) -> tuple[dict[str, Any] | None, str]:
    """``(attrs, "")`` when ``path`` (which exists) is a feature store made by this package, else
    ``(None, why not)``. Format-1 stores (before the marker) are recognised by their own attributes."""
    if not path.is_dir():
        return None, "it is a file"
    extra = sorted(p.name for p in path.iterdir() if p.name not in _STORE_ENTRIES)
    attrs = _group_attrs(path)
    legacy = (
        attrs is not None and attrs.get("format_version") == 1 and "done" in attrs and "slide_id" in attrs
    )
    if attrs is None or (attrs.get(MARKER_KEY) != MARKER and not legacy):
        what = (
            "no zarr.json"
            if not (path / "zarr.json").exists()
            else "its zarr.json has no napari-pathm3 marker"
        )
        return None, what + (
            f"; it holds {', '.join(extra[:3])}{', ...' if len(extra) > 3 else ''}" if extra else ""
        )
    if extra:
        return None, f"it holds files a feature store never has: {', '.join(extra[:3])}"
    return attrs, ""


def _foreign_error(path: Path, why: str) -> FeatureStoreError:
    hint = "pass a new folder as the store (or move this one away)"
    if path.is_dir() and any(p.name.endswith(SUFFIX) for p in path.iterdir()):
        hint = "it looks like a folder of stores: pass FeatureStore(folder).path_for(slide_id) as the store"
    return FeatureStoreError(
        f"{path}: exists but is not a napari-pathm3 feature store ({why}); nothing was changed or removed; {hint}"
    )


class _Damaged(Exception):
    def __init__(self, row: int, reason: str) -> None:
        super().__init__(reason)
        self.row, self.reason = row, reason


def _load(path: Path, attrs: dict[str, Any], rows: int) -> tuple[np.ndarray, np.ndarray]:
    """``(features[:rows] in the stored dtype, coords[:rows])``, every chunk checked against its digest.

    Raises:
        _Damaged: with the first row to recompute and why.
    """
    import zarr

    group: Any
    arr: Any
    try:
        group = zarr.open_group(str(path), mode="r")
        arr, coords = group["features"], np.asarray(group["coords"][:], dtype=np.int64)
    except Exception as err:  # zarr and its codecs raise many types for damaged metadata
        raise _Damaged(0, f"arrays unreadable ({type(err).__name__}: {err})") from err
    n, cr = int(attrs["n"]), int(attrs["chunk_rows"])
    if coords_sha256(coords) != attrs.get("coords_sha256") or arr.shape[0] != n:
        raise _Damaged(0, "patch coordinates do not match their checksum")
    digests = list(attrs.get("chunk_digests") or [])
    try:
        out = np.asarray(arr[:rows])  # one read (fast); on a codec error, find the chunk below
    except Exception:
        out = None
    for k, s in enumerate(range(0, rows, cr)):
        e = min(s + cr, rows)
        if out is None:
            try:
                arr[s:e]
            except Exception as err:  # truncated / garbage chunk: a codec error
                raise _Damaged(
                    s, f"chunk {k} (patches {s}-{e - 1}) unreadable ({type(err).__name__}: {err})"
                ) from err
            continue
        if k >= len(digests) or digests[k] != _digest(out[s:e]):
            raise _Damaged(s, f"chunk {k} (patches {s}-{e - 1}) does not match its checksum")
    if out is None:  # the whole read failed but no chunk alone does: report it whole
        raise _Damaged(0, "features unreadable")
    return out, coords[:rows]
