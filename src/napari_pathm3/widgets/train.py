"""The "Train model" dock widget: slide layers + labelled shapes/labels layers -> a PathM3 checkpoint.

Class names come from each annotation layer's ``features`` column ``class`` (an optional ``caption`` column
gives each region's caption; see :func:`napari_pathm3.viewer.regions_from_layer`). The trained model is added to the
shared model registry, so "Caption slide" can use it at once.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui.widgets import (
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    ProgressBar,
    PushButton,
    Select,
    SpinBox,
)

from .. import api
from .._types import Progress, Stage
from ..api import RegionTrainingRequest, RunContext
from ..config import (
    DEFAULT_ENCODER,
    DEFAULT_SIZE,
    MODEL_SIZES,
    AdamWConfig,
    PathM3Config,
    TilingConfig,
    TrainConfig,
)
from ..device import DEVICES
from ..errors import Cancelled, PathM3Error
from ..layer_kinds import is_result_layer
from ..paths import user_cache_dir
from ..viewer import layer_kind, match_slide_units, regions_from_layer, slide_layers
from ._eta import TimeLeft
from ._mpp import expectation, field_mpp, layer_mpp, mpp_field
from ._plot import LossPlot
from ._registry import encoder_names, registry
from ._threads import threads_widget
from ._worker import Job, error_text

if TYPE_CHECKING:
    import napari

MODES = ("image_text", "image", "text")


WIDGET_SIZE = "tiny"
SIZE_TOOLTIP = (
    "starts at tiny (a few drawn regions train in under a minute on a CPU); the command line's default is "
    f"{DEFAULT_SIZE}. tiny/small train on a CPU; paper = Table 6 (FlanT5-XL, GPU)"
)


def _preset_lr_alpha(size: str) -> tuple[float, float]:
    """The learning rate and alpha of a model-size preset (torch-free: configs only)."""
    cfg = PathM3Config.preset(size, feature_dim=8, encoder_name="", class_names=("a", "b"))
    return float(cfg.optim.lr), float(cfg.alpha)


class TrainWidget(Container):
    """Train a PathM3 model on labelled regions drawn over slides."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self._viewer = viewer
        self.cache_dir: Path = user_cache_dir("features")
        self.result: Any = None
        self.model_name: str | None = None
        self.history: list[dict[str, Any]] = []
        self._job: Job | None = None
        self._time_left = TimeLeft()
        self._build_inputs()
        self._build_training_inputs()
        self._build_outputs()
        self._connect(viewer)

    def _build_inputs(self) -> None:
        """Slides, annotations, encoder, device, model size and mode."""
        tc, mc = TrainConfig(), PathM3Config

        self._slides = Select(label="slides", choices=self._slide_choices)
        self._slide_mpp = mpp_field()
        self._slide_mpp.tooltip = (
            "µm per level-0 pixel of the chosen slides that have none in their file (prefilled from the first "
            "slide's file); patches are cut at 'patch µm/px' below"
        )
        self._mpp_note = Label(value="")
        self._mpp_note.native.setWordWrap(True)
        self._annotations = Select(
            label="annotations",
            choices=self._annotation_choices,
            tooltip="shapes/labels layers with a 'class' column (and optional 'caption')",
        )
        self._encoder = ComboBox(label="encoder", choices=encoder_names(), value=DEFAULT_ENCODER)
        self._device = ComboBox(label="device", choices=DEVICES, value=tc.device)
        self._size = ComboBox(
            label="model size",
            choices=MODEL_SIZES,
            value=WIDGET_SIZE,
            tooltip=SIZE_TOOLTIP,
        )
        self._mode = ComboBox(label="mode", choices=MODES, value=mc.__dataclass_fields__["mode"].default)

    def _build_training_inputs(self) -> None:
        """Epochs, learning rate, batch, alpha, sub-bags and the patch grid."""
        tc, oc, tl = TrainConfig(), AdamWConfig(), TilingConfig()
        self._epochs = SpinBox(label="epochs", value=tc.epochs, min=1, max=10_000)
        lr0, alpha0 = _preset_lr_alpha(WIDGET_SIZE)
        self._lr = FloatSpinBox(
            label="learning rate",
            value=lr0,
            min=1e-7,
            max=1.0,
            step=1e-5,
            tooltip="follows the model size's preset; change it after picking the size",
        )
        self._lr.native.setDecimals(6)
        self._batch = SpinBox(label="batch size", value=oc.batch_size, min=1, max=1024)
        self._alpha = FloatSpinBox(
            label="alpha (L_cls)",
            value=alpha0,
            min=0.0,
            max=1.0,
            step=0.05,
            tooltip="weight of the classification loss (1 - alpha: captions); follows the model size's preset",
        )
        self._sub_bags = SpinBox(
            label="sub-bags/region",
            value=4,
            min=0,
            max=100,
            tooltip="random subsets of each region's patches added as extra training bags",
        )
        self._patch = SpinBox(label="patch px", value=tl.patch_size, min=16, max=2048)
        self._mpp = FloatSpinBox(
            label="patch µm/px", value=tl.target_mpp or 0.5, min=0.05, max=32.0, step=0.05
        )

    def _build_outputs(self) -> None:
        """Output folder, threads, train/cancel, progress and the loss plot; then every widget in order."""
        self._out = FileEdit(
            label="save to", mode="d", value=user_cache_dir("models", time.strftime("pathm3-%Y%m%d-%H%M%S"))
        )
        self._threads = threads_widget()
        self._train = PushButton(text="Train")
        self._cancel = PushButton(text="Cancel", enabled=False)
        self._progress = ProgressBar(label="progress", min=0, max=100, value=0)
        self._stage = Label(label="stage", value="idle")
        self._stage.native.setWordWrap(True)  # an error is shown here in full (a toast truncates it)
        # what the model learned: accuracy on held-out regions (or cross-validated) against the majority class
        self._verdict = Label(label="verdict", value="")
        self._verdict.native.setWordWrap(True)
        self._plot = LossPlot()
        buttons = Container(widgets=[self._train, self._cancel], layout="horizontal", labels=False, label="")
        self.extend(
            [
                self._slides,
                self._slide_mpp,
                self._annotations,
                self._encoder,
                self._device,
                self._size,
                self._mode,
                self._epochs,
                self._lr,
                self._batch,
                self._alpha,
                self._sub_bags,
                self._patch,
                self._mpp,
                self._mpp_note,
                self._out,
                self._threads,
                buttons,
                self._progress,
                self._stage,
                self._verdict,
            ]
        )
        self.native.layout().addWidget(self._plot.widget)

    def _connect(self, viewer: napari.viewer.Viewer) -> None:
        self._size.changed.connect(self._on_size)
        self._slides.changed.connect(self._on_slides_changed)
        for field in (self._slide_mpp, self._patch, self._mpp):
            field.changed.connect(self._show_expectation)
        self._train.changed.connect(self._on_train)
        self._cancel.changed.connect(self._on_cancel)
        for ev in (viewer.layers.events.inserted, viewer.layers.events.removed):
            ev.connect(self._on_layers_changed)
        # a new plain layer (e.g. shapes for a region) gets the slides' µm: no "Inconsistent units" toasts
        viewer.layers.events.inserted.connect(lambda e: match_slide_units(viewer, e.value), position="first")

    # ------------------------------------------------------------------------------------------ choices
    def _slide_choices(self, _w: Any = None) -> list[tuple[str, Any]]:
        return [(lay.name, lay) for lay in slide_layers(self._viewer, brightfield=True)]  # RGB only

    def _annotation_choices(self, _w: Any = None) -> list[tuple[str, Any]]:
        return [
            (lay.name, lay)
            for lay in self._viewer.layers
            if layer_kind(lay) in ("shapes", "labels") and not is_result_layer(lay)
        ]

    def _on_layers_changed(self, _event: Any = None) -> None:
        self._slides.reset_choices()
        self._annotations.reset_choices()

    def _on_slides_changed(self, _value: Any = None) -> None:
        """The first chosen slide's µm/px from its file (0 = unknown) in the field."""
        chosen = list(self._slides.value)
        self._slide_mpp.value = (layer_mpp(chosen[0]) if chosen else None) or 0.0
        self._show_expectation()

    def _show_expectation(self, _value: Any = None) -> None:
        tiling = TilingConfig(patch_size=int(self._patch.value), target_mpp=float(self._mpp.value))
        self._mpp_note.value = expectation(tiling, field_mpp(self._slide_mpp)).replace(
            "model expects", "the model will learn at"
        )

    def slides_with_mpp(self, regions: list[tuple[Any, list[Any]]]) -> list[tuple[Any, list[Any]]]:
        """``regions`` with every slide that has no µm/px of its own reopened at the field's µm/px (the
        caller closes those); a clear error naming the field when the field is empty too."""
        mpp = field_mpp(self._slide_mpp)
        missing = [s.path.name for s, _ in regions if s.mpp is None]
        if missing and mpp is None:
            raise PathM3Error(
                f"{', '.join(missing)} has no µm/px in its file: enter it in 'slide µm/px' (e.g. 0.25 at 40x, "
                "0.5 at 20x) so patches are cut at the physical size the model learns"
            )
        return [
            (api.open_slide(s.path, backend=s.backend, mpp=mpp) if s.mpp is None else s, regs)
            for s, regs in regions
        ]

    # ------------------------------------------------------------------------------------------ running
    @property
    def running(self) -> bool:
        return self._job is not None and self._job.running

    def collect_regions(self) -> list[tuple[Any, list[Any]]]:
        """``[(slide, regions)]`` from the chosen layers: with one slide every annotation layer belongs to
        it; with several, an annotation layer belongs to the slide whose layer name starts its own name."""
        slides, annots = list(self._slides.value), list(self._annotations.value)
        if not slides:
            raise PathM3Error("pick at least one slide layer")
        if not annots:
            raise PathM3Error("pick at least one shapes or labels layer with a 'class' column")
        out: dict[str, tuple[Any, list[Any]]] = {s.name: (s, []) for s in slides}
        for layer in annots:
            if len(slides) == 1:
                owner = slides[0]
            else:
                matches = [s for s in slides if layer.name.startswith(s.name)]
                if not matches:
                    raise PathM3Error(
                        f"cannot tell which slide {layer.name!r} belongs to; name it '<slide layer name> ...' "
                        "or train one slide at a time"
                    )
                owner = max(matches, key=lambda s: len(s.name))
            scale = tuple(float(v) for v in owner.scale[-2:])
            out[owner.name][1].extend(regions_from_layer(layer, (scale[0], scale[1])))
        return [(s.metadata["pathm3_slide"], regs) for s, regs in out.values() if regs]

    def _on_size(self, size: str) -> None:
        """A preset brings its own learning rate and alpha (scratch caption LMs need larger steps and more
        caption weight than the paper's pretrained one: docs/training.md)."""
        self._lr.value, self._alpha.value = _preset_lr_alpha(size)

    def _on_train(self, _value: Any = None) -> Job | None:
        from napari.utils.notifications import show_error

        if self.running:
            return self._job
        try:
            layer_regions = self.collect_regions()
            regions = self.slides_with_mpp(layer_regions)
        except PathM3Error as err:
            self._stage.value = error_text(err)
            show_error(f"PathM3: {err}")
            return None
        request = RegionTrainingRequest(
            output_dir=Path(self._out.value),
            encoder=self._encoder.value,
            device=self._device.value,
            tiling=TilingConfig(patch_size=int(self._patch.value), target_mpp=float(self._mpp.value)),
            cache_dir=self.cache_dir,
            model_size=self._size.value,
            epochs=int(self._epochs.value),
            lr=float(self._lr.value),
            batch_size=int(self._batch.value),
            alpha=float(self._alpha.value),
            mode=self._mode.value,
            sub_bags=int(self._sub_bags.value),
        )

        threads = self._threads.value

        def work(progress: Any, metrics: Any, cancel: Any) -> Any:
            from ..threads import apply_thread_policy

            apply_thread_policy(threads)  # the widget's thread setting ("auto" = free cores)
            context = RunContext(progress=progress, cancel=cancel, metrics=metrics)
            try:
                return api.train(regions, request, context=context)
            finally:  # the slides reopened at the entered µm/px (the layers keep their own)
                for (s, _), (own, _) in zip(regions, layer_regions, strict=True):
                    if s is not own:
                        s.close()

        self.history = []
        self._verdict.value = ""
        self._plot.clear()
        self._set_running(True)
        self._stage.value = "starting"
        self._progress.value = 0
        self._job = Job(
            work,
            on_done=self._on_result,
            on_progress=self._on_progress,
            on_metrics=self._on_metrics,
            on_finished=self._on_finished,
        )
        return self._job.start()

    def _on_cancel(self, _value: Any = None) -> None:
        if self.running and self._job is not None:
            self._job.cancel()
            self._stage.value = "cancelling…"

    def _on_progress(self, event: Progress) -> None:
        if event.stage is Stage.TRAIN and event.total:
            self._progress.value = min(100.0, 100.0 * (event.fraction or 0.0))
        left = self._time_left.text(event.stage, event.done, event.total) if event.total else ""
        self._stage.value = event.label() + left

    def _on_metrics(self, record: dict[str, Any]) -> None:
        self.history.append(record)
        self._plot.update(self.history)

    def _on_finished(self) -> None:
        self._set_running(False)
        if self._job is not None and self._job.error is not None:
            err = self._job.error
            self._stage.value = "cancelled" if isinstance(err, Cancelled) else error_text(err)

    def _set_running(self, running: bool) -> None:
        self._train.enabled = not running
        self._cancel.enabled = running

    def _on_result(self, result: Any) -> None:
        from napari.utils.notifications import show_info

        self.result = result
        self._verdict.value = api.verdict_text(getattr(result, "verdict", None))
        name = Path(self._out.value).name
        self.model_name = registry.register(result.best_dir, name=name)
        self._progress.value = 100
        self._stage.value = f"saved {result.best_dir}"
        # a fresh default folder for the next run, so it does not overwrite this model
        self._out.value = user_cache_dir("models", time.strftime("pathm3-%Y%m%d-%H%M%S"))
        show_info(f"PathM3: model saved to {result.best_dir}; pick {self.model_name!r} in 'Caption slide'")
        warnings = list(getattr(result, "warnings", ()) or ())
        if warnings:
            from napari.utils.notifications import show_warning

            self._stage.value = f"saved {result.best_dir} - WARNING: {warnings[0]}"
            for w in warnings:
                show_warning(f"PathM3: {w}")
