"""Slide backends: one module per :class:`BackendKind`, found by the member's value.

Adding a backend is one module here (``<value>.py`` with a ``BACKEND`` class that follows
:class:`SlideBackend`), one enum member and one test; its fast paths come from the capabilities it inherits
(:mod:`.capabilities`). ``docs/architecture.md`` walks through an example.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import cast

from ...errors import SlideReadError
from .base import BackendKind, Fit, PixelFormat, SlideBackend
from .capabilities import DirectTiles, NativeSamples, PixelReader, ThreadedPixels, TileDecoder

__all__ = [
    "AUTO",
    "BackendKind",
    "DirectTiles",
    "Fit",
    "NativeSamples",
    "PixelFormat",
    "PixelReader",
    "SlideBackend",
    "ThreadedPixels",
    "TileDecoder",
    "backend_class",
    "open_backend",
    "parse_kind",
]

#: ``open_slide``'s default: ask every backend's :meth:`SlideBackend.fit`, then try them in enum order
AUTO = "auto"


def parse_kind(backend: BackendKind | str) -> BackendKind | None:
    """``None`` for ``"auto"``, else the :class:`BackendKind` named by ``backend`` (``ValueError`` if none)."""
    if backend == AUTO:
        return None
    try:
        return BackendKind(backend)
    except ValueError:
        names = ", ".join(repr(k.value) for k in BackendKind)
        raise ValueError(f"unknown slide backend {backend!r}; choose {AUTO!r} or one of {names}") from None


def backend_class(kind: BackendKind) -> type[SlideBackend]:
    """The class of ``kind``: ``BACKEND`` of the module named by its value (imported on first use)."""
    module = importlib.import_module(f"{__name__}.{kind.value}")
    return cast("type[SlideBackend]", module.BACKEND)


def open_backend(path: Path, backend: BackendKind | str = AUTO) -> SlideBackend:
    """Open ``path`` with the named backend, or under ``"auto"`` with the first that suits and opens it.

    Raises:
        SlideReadError: no backend could open the file (each one's reason in the message).
        ImportError: a backend's library is missing.
    """
    kind = parse_kind(backend)
    if kind is not None:
        order = [backend_class(kind)]
    else:
        classes = [backend_class(k) for k in BackendKind]
        fits = [cls.fit(path) for cls in classes]
        only = [cls for cls, fit in zip(classes, fits, strict=True) if fit is Fit.ONLY]
        if only:
            return _open_only(only[0], path)
        order = [cls for cls, fit in zip(classes, fits, strict=True) if fit is Fit.MAYBE]
    reasons = []
    for cls in order:
        try:
            return cls(path)
        except ImportError:
            raise
        except Exception as err:  # each library has its own error types; collect them for one clear message
            reasons.append(f"{cls.kind.value}: {type(err).__name__}: {err}".strip())
    raise SlideReadError(
        f"{path}: cannot open as a whole-slide image (unreadable, truncated or unsupported format) - "
        + "; ".join(reasons)
    )


def _open_only(cls: type[SlideBackend], path: Path) -> SlideBackend:
    try:
        return cls(path)
    except Exception as err:
        raise SlideReadError(
            f"{path}: cannot read this file with the {cls.kind.value} backend, the only one that reads it "
            f"faithfully ({type(err).__name__}: {err})"
        ) from err
