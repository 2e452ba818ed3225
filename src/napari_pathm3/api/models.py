"""Models for the application layer: open a slide, load a checkpoint (``"demo"`` trains the demo model on
first use), and the grid a model was trained with, read without loading its weights."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._types import CancelToken, PathLike, ProgressFn
from ..config import TilingConfig
from ..io.slide import Slide
from ..io.slide import open_slide as _open_slide
from ..jobs import DEMO

if TYPE_CHECKING:
    from ..model.pathm3 import PathM3Model


def open_slide(path: PathLike, *, backend: str = "auto", mpp: float | None = None) -> Slide:
    """Open a whole-slide image with the first backend that reads it. Use as a context manager to close it.

    Args:
        path: slide file or DICOM WSI folder.
        backend: ``"auto"`` or a :class:`~napari_pathm3.io.backends.BackendKind` value.
        mpp: µm/px at level 0 when the file lacks it.
    """
    return _open_slide(path, backend=backend, mpp=mpp)


def load_model(
    model: PathLike | PathM3Model,
    *,
    device: str = "auto",
    text_side: bool = True,
    progress: ProgressFn | None = None,
) -> PathM3Model:
    """Load a PathM3 checkpoint folder, or ``"demo"`` for the offline demo model (trained on first use).

    Args:
        model: checkpoint folder (``config.json`` + ``model.safetensors``), ``"demo"``, or a loaded model.
        device: ``"auto"`` (cuda, then mps, then cpu), ``"cuda"``, ``"mps"`` or ``"cpu"``.
        text_side: False skips the Q-Former's text-only weights (~300 MB at paper sizes): enough for
            :func:`caption_slide` and classification from images; the model then refuses text input.
        progress: ``LOAD_MODEL`` events with the bytes of the weights read so far (and the demo model's
            training events when it is trained first).

    Returns:
        The model in eval mode. Raises ``CheckpointError`` when the folder is not a usable checkpoint.
    """
    from ..inference import load_model as _load

    source = resolve_demo(model, device=device, progress=progress)
    return _load(source, device=device, text_side=text_side, progress=progress)


def model_tiling(model: str | None) -> tuple[TilingConfig, str]:
    """``(grid, where it came from)`` a model was trained with, without loading its weights: the defaults for
    ``None``, the demo model's grid for ``"demo"``, else ``tiling`` in a checkpoint folder's ``config.json``
    (the defaults when it records none). The grid rule of :class:`~napari_pathm3.jobs.CaptionRequest`
    starts from it."""
    from ..errors import CheckpointError
    from ..model.checkpoint import read_tiling

    if model is None:
        return TilingConfig(), "defaults (pass --model to count the patches that model uses)"
    if model == DEMO:
        from ..demo import DEMO_TILING

        return DEMO_TILING, "the demo model"
    folder = Path(model).expanduser()
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: not a folder; pass a checkpoint folder or 'demo'")
    tiling = read_tiling(folder)
    if tiling is None:
        return TilingConfig(), f"defaults (model {folder.name} records no grid)"
    return tiling, f"model {folder.name}"


def encoder_names(*, include_cached: bool = True) -> list[str]:
    """Patch encoder names the registry offers (with ``include_cached``, also those found in local caches)."""
    from ..features.encoders import list_encoders

    return list_encoders(include_cached=include_cached)


def encoder_id(name: str) -> str:
    """The canonical spelling of an encoder name (``clip:`` folders made absolute, aliases resolved)."""
    from ..features.encoders import canonical_name

    return canonical_name(name)


def sample_slide() -> Path:
    """The demo's sample slide (CMU-1 small region; downloaded once, a clear error offline)."""
    from ..demo import sample_path

    return sample_path()


def demo_regions_layer(slide_scale: tuple[float, float]) -> tuple[list[Any], dict[str, Any], str]:
    """The regions the demo model was trained on, as a napari shapes layer-data tuple."""
    from ..demo import demo_regions_layer as layer

    return layer(slide_scale)


def verdict_text(verdict: dict[str, Any] | None) -> str:
    """A training run's verdict in a few words (how it was judged, accuracy against the majority class)."""
    from ..training.validation import verdict_text as text

    return text(verdict)


def train_demo(
    *,
    device: str = "auto",
    progress: ProgressFn | None = None,
    force: bool = False,
    epochs: int | None = None,
) -> Path:
    """The demo model's checkpoint folder, trained first when not cached (or ``force``); ``epochs`` other than
    the demo's own are for smoke tests."""
    from ..demo import DEMO_EPOCHS, ensure_demo_model

    return ensure_demo_model(device=device, progress=progress, force=force, epochs=epochs or DEMO_EPOCHS)


def run_demo(
    out_dir: PathLike, *, device: str = "auto", progress: ProgressFn | None = None
) -> dict[str, Path]:
    """Caption the sample slide with the demo model; ``result.json`` and ``heatmap.png`` into ``out_dir``."""
    from ..demo import run_headless

    return run_headless(out_dir, device=device, progress=progress)


def resolve_demo(
    model: PathLike | PathM3Model,
    *,
    device: str = "auto",
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> PathLike | PathM3Model:
    """``"demo"`` -> the demo model's checkpoint folder (trained first when not cached); anything else as is."""
    if isinstance(model, str) and model == DEMO:
        from ..demo import ensure_demo_model

        return ensure_demo_model(device=device, progress=progress, cancel=cancel)
    return model
