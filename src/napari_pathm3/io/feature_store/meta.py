"""Typed metadata of a feature bag: what a store records about its slide, encoder and patch grid.

The on-disk format is unchanged (format version 2): the attributes in a store's ``zarr.json`` are the JSON
of :meth:`BagMeta.to_attrs`, and :meth:`BagMeta.from_attrs` reads every store written since format 1 as
well as the attributes of imported feature files (TRIDENT/CLAM ``.h5``, SpatialData tables), whose other
keys are kept verbatim in :attr:`BagMeta.extra`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..._types import JSONObject, JSONValue
from ._files import MARKER, MARKER_KEY

FORMAT_VERSION = 2  # 2: ownership marker and per-chunk digests
#: attributes that are progress, not identity: they may differ between a partial store and the request
PROGRESS_KEYS = ("done", "complete", "chunk_rows", "chunk_digests")


def _int(value: object) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _float(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _object(value: object) -> JSONObject | None:
    return dict(value) if isinstance(value, dict) else None


def _pair(value: object) -> tuple[int, int] | None:
    if isinstance(value, list | tuple) and len(value) == 2 and all(_int(v) is not None for v in value):
        return (int(value[0]), int(value[1]))
    return None


@dataclass(frozen=True, kw_only=True)
class EncoderMeta:
    """The encoder that made the features (``FrozenEncoder.describe()``)."""

    name: str = ""
    dim: int | None = None
    input_size: int | None = None
    mpp: float | None = None
    weights_hash: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> EncoderMeta:
        return cls(
            name=_str(data.get("name")) or "",
            dim=_int(data.get("dim")),
            input_size=_int(data.get("input_size")),
            mpp=_float(data.get("mpp")),
            weights_hash=_str(data.get("weights_hash")),
        )

    def to_json(self) -> JSONObject:
        return {
            "name": self.name,
            "dim": self.dim,
            "input_size": self.input_size,
            "mpp": self.mpp,
            "weights_hash": self.weights_hash,
        }


@dataclass(frozen=True, kw_only=True)
class GridMeta:
    """The patch grid the features were computed on (``PatchGrid.params()``)."""

    patch_size: int | None = None
    mpp: float | None = None
    size_level0: float | None = None
    read_level: int | None = None
    read_size: int | None = None
    step_level0: float | None = None
    slide_dimensions: tuple[int, int] | None = None
    #: the ``TilingConfig`` as a dict (``TilingConfig.to_dict()``); parsed by the caller that needs it
    tiling: JSONObject | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> GridMeta:
        return cls(
            patch_size=_int(data.get("patch_size")),
            mpp=_float(data.get("mpp")),
            size_level0=_float(data.get("size_level0")),
            read_level=_int(data.get("read_level")),
            read_size=_int(data.get("read_size")),
            step_level0=_float(data.get("step_level0")),
            slide_dimensions=_pair(data.get("slide_dimensions")),
            tiling=_object(data.get("tiling")),
        )

    def to_json(self) -> JSONObject:
        dims: JSONValue = None if self.slide_dimensions is None else list(self.slide_dimensions)
        return {
            "patch_size": self.patch_size,
            "mpp": self.mpp,
            "size_level0": self.size_level0,
            "read_level": self.read_level,
            "read_size": self.read_size,
            "step_level0": self.step_level0,
            "slide_dimensions": dims,
            "tiling": self.tiling,
        }


#: keys of :class:`BagMeta` read from and written to the attributes (everything else goes to ``extra``)
_STORE_KEYS = frozenset(
    {MARKER_KEY, "format_version", "slide_id", "slide_fingerprint", "encoder", "grid", "patch_size", "mpp"}
    | {"n", "coords_sha256", "dtype", *PROGRESS_KEYS}
    | {"patch_size_level0", "slide_dimensions", "tile_spec", "source"}
)


@dataclass(frozen=True, kw_only=True)
class BagMeta:
    """Metadata of a feature bag.

    Identity (a store is reused only when all of these match the request): ``format_version``, ``slide_id``,
    ``slide_fingerprint``, ``encoder``, ``grid``, ``patch_size``, ``mpp``, ``n``, ``coords_sha256``, ``dtype``.
    Progress of a store: ``chunk_rows``, ``done``, ``complete``, ``chunk_digests``. Imported bags (no store)
    may carry ``patch_size_level0`` (TRIDENT/CLAM, SpatialData), ``slide_dimensions``, ``tile_spec`` (a
    SpatialData tile spec) and ``source`` (the file read); their other attributes are in ``extra``.
    """

    format_version: int | None = None
    owned: bool = False  # carries this package's ownership marker
    slide_id: str = ""
    slide_fingerprint: str | None = None
    encoder: EncoderMeta | None = None
    grid: GridMeta | None = None
    patch_size: int | None = None
    mpp: float | None = None
    n: int | None = None
    coords_sha256: str | None = None
    dtype: str = "float32"
    chunk_rows: int | None = None
    done: int | None = None
    complete: bool = False
    chunk_digests: tuple[str, ...] = ()
    patch_size_level0: float | None = None
    slide_dimensions: tuple[int, int] | None = None
    tile_spec: JSONObject | None = None
    source: str | None = None
    extra: Mapping[str, JSONValue] = field(default_factory=dict)

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, object]) -> BagMeta:
        """Parse a store's attributes (or an imported file's); values of the wrong type read as missing."""
        data: JSONObject = json.loads(json.dumps(dict(attrs), default=str))  # numpy scalars, tuples -> JSON
        enc, grid = data.get("encoder"), data.get("grid")
        digests = data.get("chunk_digests")
        return cls(
            format_version=_int(data.get("format_version")),
            owned=data.get(MARKER_KEY) == MARKER,
            slide_id=_str(data.get("slide_id")) or "",
            slide_fingerprint=_str(data.get("slide_fingerprint")),
            encoder=EncoderMeta.from_json(enc) if isinstance(enc, dict) else None,
            grid=GridMeta.from_json(grid) if isinstance(grid, dict) else None,
            patch_size=_int(data.get("patch_size")),
            mpp=_float(data.get("mpp")),
            n=_int(data.get("n")),
            coords_sha256=_str(data.get("coords_sha256")),
            dtype=_str(data.get("dtype")) or "float32",
            chunk_rows=_int(data.get("chunk_rows")),
            done=_int(data.get("done")),
            complete=data.get("complete") is True,
            chunk_digests=tuple(d for d in digests if isinstance(d, str))
            if isinstance(digests, list)
            else (),
            patch_size_level0=_float(data.get("patch_size_level0")),
            slide_dimensions=_pair(data.get("slide_dimensions")),
            tile_spec=_object(data.get("tile_spec")),
            source=_str(data.get("source")),
            extra={k: v for k, v in data.items() if k not in _STORE_KEYS},
        )

    def identity(self) -> JSONObject:
        """The identity attributes as stored (the keys a store must match to be reused)."""
        return {
            **({MARKER_KEY: MARKER} if self.owned else {}),
            "format_version": self.format_version,
            "slide_id": self.slide_id,
            "slide_fingerprint": self.slide_fingerprint,
            "encoder": None if self.encoder is None else self.encoder.to_json(),
            "grid": None if self.grid is None else self.grid.to_json(),
            "patch_size": self.patch_size,
            "mpp": self.mpp,
            "n": self.n,
            "coords_sha256": self.coords_sha256,
            "dtype": self.dtype,
        }

    def to_attrs(self) -> JSONObject:
        """The attributes to store: identity, progress (once a store exists) and any imported extras."""
        out: JSONObject = {**self.extra, **self.identity()}
        if self.done is not None:
            out.update(
                chunk_rows=self.chunk_rows,
                done=self.done,
                complete=self.complete,
                chunk_digests=list(self.chunk_digests),
            )
        dims: JSONValue = None if self.slide_dimensions is None else list(self.slide_dimensions)
        for key, value in (
            ("patch_size_level0", self.patch_size_level0),
            ("slide_dimensions", dims),
            ("tile_spec", self.tile_spec),
            ("source", self.source),
        ):
            if value is not None:
                out[key] = value
        return out

    @property
    def encoder_name(self) -> str:
        return "" if self.encoder is None else self.encoder.name

    @property
    def size_level0(self) -> float | None:
        """Patch side in level-0 pixels: the grid's, else an imported file's ``patch_size_level0``."""
        if self.grid is not None and self.grid.size_level0 is not None:
            return self.grid.size_level0
        return self.patch_size_level0
