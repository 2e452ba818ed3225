"""napari reader contribution: whole-slide images as lazy multiscale RGB layers in micrometres."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import SlideReadError
from ..io.slide import SLIDE_SUFFIXES, Slide, dicom_files, open_slide

log = logging.getLogger(__name__)

LayerData = tuple[Any, dict[str, Any], str]


def _claims(path: Path) -> bool:
    if path.is_dir():  # a DICOM WSI folder, its instances named *.dcm or by UID without an extension
        return bool(dicom_files(path))
    return path.suffix.lower() in SLIDE_SUFFIXES


def napari_get_reader(path: str | list[str]) -> Callable[[Any], list[LayerData]] | None:
    """Return a reader when ``path`` is a slide we can open, ``None`` otherwise (other readers then try)."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    p = Path(path)
    if not p.exists() or not _claims(p):
        return None
    try:  # opening reads only the header and one tiny tile: cheap enough to decide
        slide = _open_quietly(p)
    except (SlideReadError, OSError) as err:
        log.info("napari-pathm3 does not read %s: %s", p, err)
        # a file with a slide's extension that no backend opens: say why (napari shows warnings as
        # notifications), then decline so that other readers may still try it
        warnings.warn(cannot_open_message(p, err), UserWarning, stacklevel=2)
        return None
    return _OpenedReader(slide, str(path))


class _OpenedReader:
    """``read_slide`` that hands over the slide ``napari_get_reader`` already opened (napari calls the reader
    right after: the file is not opened and parsed twice before the first frame); later calls open anew."""

    def __init__(self, slide: Slide, path: str) -> None:
        self._slide: Slide | None = slide
        self._path = path

    def __call__(self, path: str | list[str]) -> list[LayerData]:
        p = path[0] if isinstance(path, list) else path
        slide, self._slide = self._slide, None
        if slide is not None and str(p) == self._path:
            notify_missing_mpp(slide)
            return [slide_layer_data(slide)]
        if slide is not None:
            slide.close()
        return read_slide(path)


def cannot_open_message(path: Path, err: BaseException) -> str:
    """The user-facing reason a slide did not open (the io layer's message names the cause and the fix)."""
    reason = str(err).strip() or type(err).__name__
    if reason.startswith(str(path)):  # most io messages start with the path: keep the file name only
        reason = reason[len(str(path)) :].lstrip(": ")
    return f"napari-pathm3 cannot open {path.name}: {reason}"


def read_slide(path: str | list[str]) -> list[LayerData]:
    p = path[0] if isinstance(path, list) else path
    slide = _open_quietly(p)
    notify_missing_mpp(slide)
    return [slide_layer_data(slide)]


def _open_quietly(path: Any) -> Slide:
    """``open_slide`` without its terse no-µm/px warning: napari would show it as a second toast beside
    :func:`notify_missing_mpp`'s, which names the fix."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*no microns-per-pixel", category=UserWarning)
        return open_slide(path)


def missing_mpp_message(slide: Slide) -> str:
    """What a user is told when a slide opens without µm/px, with the fix in the widget and the CLI."""
    return (
        f"{slide.path.name} has no µm/px (microns per pixel) in its metadata: it is shown in pixels, and "
        "PathM3 would cut patches in pixels, not at the model's magnification. Enter the slide's µm/px in "
        "'Caption slide' or 'Train model' (field 'slide µm/px', e.g. 0.25 at 40x, 0.5 at 20x); on the "
        "command line pass --mpp 0.25."
    )


def notify_missing_mpp(slide: Slide) -> None:
    """A napari notification (not only a terminal warning) when a brightfield slide has no µm/px."""
    if slide.mpp is not None or not slide.is_rgb:
        return
    from napari.utils.notifications import show_warning

    show_warning(missing_mpp_message(slide))


def slide_layer_data(slide: Slide, *, name: str | None = None) -> LayerData:
    """Layer-data tuple of a slide: lazy multiscale pyramid, scale in µm (pixels when mpp is unknown).

    Brightfield slides are one RGB layer; others keep their samples: one greyscale layer, or one layer per
    channel (``channel_axis``), with contrast limits from the data (see :func:`~..io.pyramid.contrast_limits`).
    """
    from ..io.pyramid import contrast_limits, multiscale

    levels = multiscale(slide)
    mpp_xy = slide.mpp_xy
    limits = contrast_limits(slide)
    kwargs: dict[str, Any] = {
        "name": name or slide.path.stem,
        "rgb": slide.is_rgb,
        "multiscale": len(levels) > 1,
        "contrast_limits": limits[0],
        # napari's dask chunk cache may grow to 25% of RAM while panning a large slide; OpenSlide keeps its
        # own bounded tile cache, so memory stays flat without it (docs/benchmarks.md)
        "cache": False,
        # slide facts for users and other tools; the open Slide itself for our widgets (not serialised)
        "metadata": {**slide.metadata(), "pathm3_slide": slide},
    }
    if mpp_xy is not None:
        kwargs["scale"] = (mpp_xy[1], mpp_xy[0])  # (y, x) µm per level-0 pixel
        kwargs["units"] = ("um", "um")
    data = levels if len(levels) > 1 else levels[0]
    if not slide.is_rgb and slide.channels > 1:  # one layer per channel; per-channel values given explicitly
        n = slide.channels
        kwargs.update(
            channel_axis=2,
            contrast_limits=limits,
            name=[f"{kwargs['name']} [{c}]" for c in range(n)],
            metadata=[kwargs["metadata"]] * n,
            blending=["translucent_no_depth"] + ["additive"] * (n - 1),
        )
        kwargs.pop("rgb")
        for key in ("scale", "units"):
            if key in kwargs:
                kwargs[key] = [kwargs[key]] * n
    return (data, kwargs, "image")
