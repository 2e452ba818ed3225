"""Validation at the door: every value that enters from a file, an option or an environment variable is checked
here, by schema (pydantic v2), before anything is built from it.

* Configs (``config.json`` of a checkpoint, ``--model-config``, the grid in a feature store): the frozen
  dataclasses of :mod:`napari_pathm3.config` *are* the schema. pydantic validates the JSON against their
  annotations in strict JSON mode (no ``94.5`` for an int, no ``"ab"`` for a list of class names, no NaN, no
  unknown keys), then their ``__post_init__`` checks the ranges and cross-field rules. One definition, so the
  schema cannot drift from the configs.
* Numbers from options and environment variables: :func:`bounded` parses and range-checks one value.
* Tokenizer files: :class:`TokenizerConfigFile`.

Every failure becomes one line naming the source (file / option / variable), the field, the value and the fix;
callers raise it as their typed error (:class:`~.errors.CheckpointError`, :class:`~.errors.ManifestError`, ...).
pydantic is imported inside the functions, so importing this module is free.
"""

from __future__ import annotations

import dataclasses
import json
import math
from functools import cache
from typing import Any, TypeVar

from .errors import PathM3Error

T = TypeVar("T")

#: pydantic settings of every config dataclass read from JSON: exact JSON types, finite numbers, no unknown keys
_STRICT = {"strict": True, "allow_inf_nan": False, "extra": "forbid"}


def _strict_tree(cls: type) -> None:
    """Give ``cls`` and every config dataclass nested in its fields the strict settings (set here, not in
    config.py, so a config class added later is covered without remembering to)."""
    if getattr(cls, "__pydantic_config__", None) == _STRICT:
        return
    cls.__pydantic_config__ = dict(_STRICT)  # type: ignore[attr-defined]
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default  # type: ignore[misc]
        if dataclasses.is_dataclass(default):
            _strict_tree(type(default))
    if cls.__name__ == "PathM3Config":  # tiling defaults to None, so its type is not found above
        from .config import TilingConfig

        _strict_tree(TilingConfig)


@cache
def _adapter(cls: type) -> Any:
    from pydantic import TypeAdapter

    _strict_tree(cls)
    return TypeAdapter(cls)


def short(value: Any, limit: int = 60) -> str:
    """``repr`` of a value, cut to ``limit`` characters (a line must stay a line)."""
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _error_line(err: Any) -> str:
    """``field = value: what is wrong`` of the first error of a pydantic ``ValidationError``."""
    first = err.errors(include_url=False)[0]
    loc = [str(p) for p in first.get("loc", ())]
    value = first.get("input")
    msg = str(first.get("msg", "invalid"))
    ctx_err = (first.get("ctx") or {}).get("error")
    if first.get("type") == "value_error" and isinstance(ctx_err, ValueError):
        # a __post_init__ check: "field: must be ..." names the field inside the object at loc
        text = str(ctx_err)
        field, _, why = text.partition(": ")
        if why and field.isidentifier():
            loc.append(field)
            value = value.get(field, value) if isinstance(value, dict) else value
            msg = why
        else:
            msg = text
    elif first.get("type") == "unexpected_keyword_argument":
        msg = "unknown key"
    elif first.get("type") == "missing_argument":
        msg = "required key missing"
        value = None
    where = ".".join(loc) or "(top level)"
    shown = "" if value is None and msg == "required key missing" else f" = {short(value)}"
    extra = f" (and {err.error_count() - 1} more problem(s))" if err.error_count() > 1 else ""
    return f"{where}{shown}: {msg}{extra}"


def load_config(
    cls: type[T], data: Any, *, source: str, fix: str, error: type[PathM3Error] = PathM3Error
) -> T:
    """``cls`` built from JSON data ``data`` after schema validation.

    Args:
        cls: a config dataclass of :mod:`napari_pathm3.config`.
        data: the parsed JSON (a dict).
        source: what it came from, first in the message (a file path, ``--model-config FILE``).
        fix: what the user should do, last in the message.
        error: the error type to raise.

    Raises:
        error: one line ``source: field = value: what is wrong; fix``.
    """
    from pydantic import ValidationError

    if not isinstance(data, dict):
        raise error(f"{source}: holds a JSON {type(data).__name__}, not an object of settings; {fix}")
    try:
        text = json.dumps(data, allow_nan=True)  # NaN/Infinity literals reach the schema, which refuses them
    except (TypeError, ValueError) as err:  # data built in Python with non-JSON values
        raise error(f"{source}: not JSON data ({err}); {fix}") from err
    try:
        return _adapter(cls).validate_json(text)  # type: ignore[no-any-return, arg-type]
    except ValidationError as err:
        raise error(f"{source}: {_error_line(err)}; {fix}") from None
    except (ValueError, TypeError, ArithmeticError) as err:  # a check outside pydantic's reach
        raise error(f"{source}: {err}; {fix}") from None


# --------------------------------------------------------------------------------------------- numbers


def bounded(
    raw: Any,
    *,
    name: str,
    kind: type = int,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> Any:
    """``raw`` (a string from an option or environment variable, or a number) as a finite ``kind`` within the
    bounds; ``ValueError`` naming ``name``, the value and the allowed range otherwise."""
    from pydantic import ValidationError

    lo = f"[{ge:g}" if ge is not None else f"({gt:g}" if gt is not None else "(-inf"
    hi = f"{le:g}]" if le is not None else f"{lt:g})" if lt is not None else "inf)"
    what = "an integer" if kind is int else "a number"
    adapter = _number_adapter(kind, ge, gt, le, lt)
    value = raw.strip() if isinstance(raw, str) else raw
    try:
        out = adapter.validate_python(value)
    except ValidationError:
        raise ValueError(f"{name} must be {what} in {lo}, {hi}, got {short(raw)}".strip()) from None
    if kind is float and not math.isfinite(out):  # pragma: no cover - allow_inf_nan=False refuses these
        raise ValueError(f"{name} must be a finite number, got {short(raw)}")
    return out


@cache
def _number_adapter(kind: type, ge: Any, gt: Any, le: Any, lt: Any) -> Any:
    from typing import Annotated

    from pydantic import ConfigDict, Field, TypeAdapter

    number: Any = Annotated[kind, Field(ge=ge, gt=gt, le=le, lt=lt, allow_inf_nan=False)]  # type: ignore[valid-type]
    return TypeAdapter(number, config=ConfigDict(allow_inf_nan=False))


# --------------------------------------------------------------------------------------------- tokenizer files


def check_tokenizer_config(data: Any, *, source: str) -> dict[str, Any]:
    """A checkpoint's ``tokenizer_config.json``: an object whose special tokens are strings (or
    ``{"content": str}`` objects) and whose ``model_max_length`` is a positive integer; ``ValueError`` naming
    the key otherwise."""
    from pydantic import BaseModel, ConfigDict, Field, ValidationError

    token = str | dict[str, Any] | None

    class TokenizerConfigFile(BaseModel):
        model_config = ConfigDict(extra="allow", allow_inf_nan=False)
        tokenizer_class: str | None = None
        model_max_length: int | float = Field(default=10**30, gt=0)
        pad_token: token = None
        eos_token: token = None
        bos_token: token = None
        unk_token: token = None
        sep_token: token = None
        cls_token: token = None
        mask_token: token = None

    if not isinstance(data, dict):
        raise ValueError(f"{source}: holds a JSON {type(data).__name__}, not an object")
    try:
        parsed = TokenizerConfigFile.model_validate(data)
    except ValidationError as err:
        raise ValueError(f"{source}: {_error_line(err)}") from None
    for name in ("pad", "eos", "bos", "unk", "sep", "cls", "mask"):
        tok = getattr(parsed, f"{name}_token")
        if isinstance(tok, dict) and not isinstance(tok.get("content"), str):
            raise ValueError(f"{source}: {name}_token = {short(tok)}: needs a 'content' string")
    return data


# --------------------------------------------------------------------------------------------- regions


def check_polygon(polygon: Any, *, name: str, dimensions: tuple[int, int] | None = None) -> Any:
    """``polygon`` as a float64 ``(k, 2)`` array of level-0 ``(x, y)`` with k >= 3 finite vertices that lie on
    the slide of ``dimensions`` (width, height), when given; :class:`~.errors.RegionError` otherwise.

    Vertices a little off the slide are fine (a rectangle dragged past the edge); one more than a slide's
    width/height beyond it is a wrong coordinate system or a typo, not a drawing.
    """
    import numpy as np

    from .errors import RegionError

    try:
        poly = np.asarray(polygon, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise RegionError(f"{name}: not an array of numbers ({err}); polygons must be (k, 2) x, y") from None
    if poly.ndim != 2 or poly.shape[1] != 2 or poly.shape[0] < 3:
        raise RegionError(
            f"{name}: polygons must be (k, 2) arrays of level-0 x, y with k >= 3, got shape {poly.shape}"
        )
    bad = ~np.isfinite(poly).all(axis=1)
    if bad.any():
        i = int(np.nonzero(bad)[0][0])
        raise RegionError(f"{name}: vertex {i} is {poly[i].tolist()} (NaN/Inf); every vertex must be finite")
    if dimensions is not None:
        w, h = float(dimensions[0]), float(dimensions[1])
        lo, hi = poly.min(axis=0), poly.max(axis=0)
        far = (lo < (-w, -h)).any() or (hi > (2 * w, 2 * h)).any()
        off = (hi < 0).any() or lo[0] > w or lo[1] > h
        if far or off:
            raise RegionError(
                f"{name}: spans x {lo[0]:.4g}..{hi[0]:.4g}, y {lo[1]:.4g}..{hi[1]:.4g}, not on the slide "
                f"(0..{w:.0f}, 0..{h:.0f} level-0 px); give level-0 pixel coordinates of this slide"
            )
    return poly
