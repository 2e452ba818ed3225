"""In-process model registry shared by the widgets: a model trained in "Train model" is selectable in
"Caption slide" at once. Entries are checkpoint folders (plus the demo model); loaded models are cached per
device so repeated runs do not reload weights. Also the encoder names both widgets offer."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psygnal import Signal

from .. import api
from .._types import CancelToken, ProgressFn
from ..config import DEFAULT_ENCODER
from ..result import DEMO_MODEL_NAME

log = logging.getLogger(__name__)

#: Display name of the offline demo model (trained on the spot; see :mod:`napari_pathm3.demo`): its one name
DEMO_NAME = DEMO_MODEL_NAME


@dataclass(frozen=True)
class ModelEntry:
    name: str
    source: str  # api.DEMO, a checkpoint folder or a CLIP-style encoder "clip:<HF id or folder>" (zero-shot)

    @property
    def zero_shot(self) -> bool:
        from ._zero_shot import is_clip_source

        return is_clip_source(self.source)


class ModelRegistry:
    """Ordered name -> :class:`ModelEntry`; emits :attr:`changed` when an entry is added."""

    changed = Signal()

    def __init__(self) -> None:
        from ._zero_shot import PLIP_NAME, PLIP_SOURCE

        self._entries: dict[str, ModelEntry] = {
            DEMO_NAME: ModelEntry(DEMO_NAME, api.DEMO),
            PLIP_NAME: ModelEntry(PLIP_NAME, PLIP_SOURCE),  # zero-shot, no training needed (network once)
        }
        self._loaded: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        return list(self._entries)

    def get(self, name: str) -> ModelEntry:
        return self._entries[name]

    def register(self, folder: str | Path, *, name: str | None = None) -> str:
        """Add a checkpoint folder (again: refreshes the cached model); returns its display name."""
        folder = Path(folder).expanduser().resolve()
        for entry in self._entries.values():  # the same folder keeps its name
            if entry.source == str(folder):
                self.forget_loaded(entry.source)
                return entry.name
        base = name or folder.name or str(folder)
        display, i = base, 2
        while display in self._entries:
            display, i = f"{base} ({i})", i + 1
        self._entries[display] = ModelEntry(display, str(folder))
        self.changed.emit()
        return display

    def register_clip(self, spec: str | Path) -> str:
        """Add a CLIP-style encoder for zero-shot classification: ``clip:<HF id or folder>`` or a folder
        (made ``clip:<absolute folder>``); returns its display name (the same source keeps its name)."""
        from ._zero_shot import CLIP_PREFIX, clip_display_name

        text = str(spec)
        if not text.startswith(CLIP_PREFIX):
            text = CLIP_PREFIX + str(Path(text).expanduser().resolve())
        source = api.encoder_id(text)
        for entry in self._entries.values():
            if entry.source == source:
                return entry.name
        display = clip_display_name(source)
        self._entries[display] = ModelEntry(display, source)
        self.changed.emit()
        return display

    def load(
        self,
        name: str,
        *,
        device: str = "auto",
        progress: ProgressFn | None = None,
        cancel: CancelToken | None = None,
    ) -> Any:
        """The loaded model of entry ``name`` (cached per device); call from a worker thread. The demo
        model is trained first when it is not cached yet (``progress``/``cancel`` apply to that)."""
        entry = self._entries[name]
        if entry.zero_shot:  # its encoder is loaded by zero_shot_slide (features.encoders.cached_encoder)
            raise ValueError(f"{name!r} is a zero-shot CLIP encoder, not a PathM3 model")
        key = (entry.source, device)
        with self._lock:
            if key not in self._loaded:
                source = api.resolve_demo(entry.source, device=device, progress=progress, cancel=cancel)
                # captioning only
                self._loaded[key] = api.load_model(source, device=device, text_side=False, progress=progress)
            return self._loaded[key]

    def forget_loaded(self, source: str) -> None:
        with self._lock:
            for key in [k for k in self._loaded if k[0] == source]:
                del self._loaded[key]


registry = ModelRegistry()


def encoder_names() -> list[str]:
    """Encoder names for the widgets' dropdowns (the offline encoder alone when the registry fails)."""
    try:
        return api.encoder_names(include_cached=True)
    except Exception as err:  # noqa: BLE001 - a broken encoder registry must not take the widgets down
        log.warning("encoder list unavailable: %s", err)
        return [DEFAULT_ENCODER]
