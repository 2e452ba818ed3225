"""Models for the application layer: open a slide, load a checkpoint (``"demo"`` trains the demo model on
first use), and the grid a model was trained with, read without loading its weights."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._types import CancelToken, PathLike, ProgressFn
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
