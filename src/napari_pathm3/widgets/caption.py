"""The "Caption slide" dock widget: pick a slide layer, a model, encoder, device, region and optional text; run
:func:`napari_pathm3.inference.caption_slide` in a thread worker; show the result as layers, text and
exports (JSON, CSV, GeoJSON of the top patches, screenshot)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui.widgets import (
    ComboBox,
    Container,
    FileEdit,
    Label,
    LineEdit,
    ProgressBar,
    PushButton,
    SpinBox,
    TextEdit,
)

from .. import api
from .._types import Progress, Stage, report
from ..api import CaptionRequest, RunContext, show
from ..device import DEVICES
from ..errors import Cancelled
from ..layer_kinds import ResultLayerKind, is_result_layer
from ..paths import user_cache_dir
from ..result import SlideResult
from ..viewer import (
    layer_kind,
    layer_mpp_xy,
    layer_scale,
    match_slide_units,
    shapes_layer_polygons,
    show_phrase_maps,
    slide_layers,
)
from ._eta import TimeLeft, stage_bar
from ._exports import ResultExports
from ._mpp import expectation, field_mpp, layer_mpp, model_tiling, mpp_field
from ._registry import encoder_names, registry
from ._result_text import DEMO_NOTE, ZERO_SHOT_NOTE, format_result, not_brightfield
from ._threads import threads_widget
from ._tissue import tissue_config, tissue_fields
from ._words import WordsPanel
from ._worker import Job, error_text
from ._zero_shot import ZeroShotFields, is_clip_folder

if TYPE_CHECKING:
    import napari


WHOLE_SLIDE = "whole slide"
MODEL_ENCODER = "(the model's encoder)"


class CaptionWidget(ResultExports, Container):
    """Classify and caption the slide shown in napari with a PathM3 model."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self._viewer = viewer
        self.cache_dir: Path = user_cache_dir("features")
        self.result: SlideResult | None = None
        self._job: Job | None = None
        self._time_left = TimeLeft()

        self._build_inputs()
        self._build_tissue_inputs()
        self._build_outputs()
        # (slide, request) of the last run: phrase maps use the same patches
        self._last_run: tuple[Any, CaptionRequest] | None = None
        self._zero_shot_run = False  # the last run was zero-shot (its result text says so)
        self.words = WordsPanel(viewer, last_run=lambda: self._last_run)
        self.append(self.words)
        self._connect(viewer)
        self._on_model_changed()
        self._on_layers_changed()
        self._on_slide_changed()

    def _build_inputs(self) -> None:
        self._slide = ComboBox(label="slide", choices=self._slide_choices)
        self._slide_mpp = mpp_field()
        self._mpp_note = Label(value="")
        self._mpp_note.native.setWordWrap(True)
        self._model = ComboBox(label="model", choices=self._model_choices)
        self._model_dir = FileEdit(
            label="checkpoint",
            mode="d",
            tooltip="add a checkpoint folder to the model list (a saved CLIP model folder: zero-shot)",
        )
        self._zero_shot = ZeroShotFields()  # shown only for a zero-shot (clip:) model
        self._encoder = ComboBox(
            label="encoder", choices=[MODEL_ENCODER, *encoder_names()], value=MODEL_ENCODER
        )
        self._device = ComboBox(label="device", choices=DEVICES, value="auto")
        self._region = ComboBox(
            label="region",
            choices=self._region_choices,
            tooltip="whole slide, or the selected shapes of a shapes layer (all shapes when none is selected)",
        )
        self._text = LineEdit(label="text", tooltip="optional text for text-conditioned classification")
        self._top_k = SpinBox(label="top patches", value=8, min=1, max=200)

    def _build_tissue_inputs(self) -> None:
        self._tissue_threshold, self._tissue_mpp, self._min_tissue = tissue_fields()

    def _build_outputs(self) -> None:
        """Run/cancel, progress, the result text and export buttons; then every widget in display order."""
        self._threads = threads_widget()
        self._run = PushButton(text="Run")
        self._cancel = PushButton(text="Cancel", enabled=False)
        self._progress = ProgressBar(label="progress", min=0, max=100, value=0)
        self._stage = Label(label="stage", value="idle")
        self._note = Label(value="")
        self._note.native.setWordWrap(True)
        self._warning = Label(value="")  # a result's warnings, in red above the result text
        self._warning.native.setWordWrap(True)
        self._warning.native.setStyleSheet("color: #ff5050; font-weight: bold;")
        self._warning.visible = False
        self._output = TextEdit(label="result", value="")
        self._output.read_only = True  # selectable and copyable, not editable
        self._save_json = PushButton(text="JSON…", enabled=False)
        self._save_csv = PushButton(text="CSV…", enabled=False)
        self._save_geojson = PushButton(text="GeoJSON…", enabled=False)
        self._screenshot = PushButton(text="Screenshot…")
        # the ecosystem's formats (SpatialData for LazySlide/scverse, OME-Zarr maps): docs/features.md
        self._save_sdata = PushButton(text="SpatialData…", enabled=False)
        self._save_ome = PushButton(text="OME-Zarr…", enabled=False)
        buttons = Container(widgets=[self._run, self._cancel], layout="horizontal", labels=False, label="")
        exports = Container(
            widgets=[
                self._save_json,
                self._save_csv,
                self._save_geojson,
                self._save_sdata,
                self._save_ome,
                self._screenshot,
            ],
            layout="horizontal",
            labels=False,
            label="export",
        )
        self.extend(
            [
                self._slide,
                self._slide_mpp,
                self._model,
                self._model_dir,
                self._zero_shot,
                self._mpp_note,
                self._encoder,
                self._device,
                self._region,
                self._text,
                self._top_k,
                self._tissue_threshold,
                self._tissue_mpp,
                self._min_tissue,
                self._threads,
                buttons,
                self._progress,
                self._stage,
                self._note,
                self._warning,
                self._output,
                exports,
            ]
        )

    def _connect(self, viewer: napari.viewer.Viewer) -> None:
        self._run.changed.connect(self._on_run)
        self._cancel.changed.connect(self._on_cancel)
        self._model_dir.changed.connect(self._on_model_dir)
        self._model.changed.connect(self._on_model_changed)
        self._slide.changed.connect(self._on_slide_changed)
        self._slide_mpp.changed.connect(self._show_expectation)
        self._save_json.changed.connect(lambda: self._ask_and_save("json"))
        self._save_csv.changed.connect(lambda: self._ask_and_save("csv"))
        self._save_geojson.changed.connect(lambda: self._ask_and_save("geojson"))
        self._screenshot.changed.connect(lambda: self._ask_and_save("png"))
        self._save_sdata.changed.connect(lambda: self._ask_and_save("spatialdata"))
        self._save_ome.changed.connect(lambda: self._ask_and_save("ome-zarr"))
        registry.changed.connect(self._on_registry_changed)
        for ev in (viewer.layers.events.inserted, viewer.layers.events.removed):
            ev.connect(self._on_layers_changed)
        # a new plain layer (e.g. shapes for a region) gets the slides' µm: no "Inconsistent units" toasts
        viewer.layers.events.inserted.connect(lambda e: match_slide_units(viewer, e.value), position="first")

    # ------------------------------------------------------------------------------------------ choices
    def _slide_choices(self, _w: Any = None) -> list[tuple[str, Any]]:
        return [(lay.name, lay) for lay in slide_layers(self._viewer, brightfield=True)]

    def _region_choices(self, _w: Any = None) -> list[tuple[str, Any]]:
        shapes = [
            lay
            for lay in self._viewer.layers
            if layer_kind(lay) == "shapes" and not is_result_layer(lay, ResultLayerKind.TOP_PATCHES)
        ]
        return [(WHOLE_SLIDE, None), *[(f"shapes: {lay.name}", lay) for lay in shapes]]

    def _model_choices(self, _w: Any = None) -> list[str]:
        return registry.names()

    def _on_registry_changed(self) -> None:
        try:
            self._model.reset_choices()
        except RuntimeError:  # this widget's Qt side is gone (viewer closed): stop listening
            registry.changed.disconnect(self._on_registry_changed)

    def _on_layers_changed(self, _event: Any = None) -> None:
        self._slide.reset_choices()
        self._region.reset_choices()
        self._run.enabled = not self.running and self._slide.value is not None
        skipped = [lay.name for lay in slide_layers(self._viewer) if lay not in self._slide.choices]
        if skipped and self._slide.value is None:  # say why the slide list is empty
            self.show_error(not_brightfield(skipped), toast=False)

    def show_error(self, message: str, *, toast: bool = True) -> None:
        """Put ``message`` in the result box in full (and, with ``toast``, in napari's notification too,
        which truncates long messages)."""
        from napari.utils.notifications import show_error

        self._warning.visible = False
        self._output.value = message if message.startswith(("ERROR", "Cancelled")) else f"ERROR: {message}"
        if toast:
            show_error(f"PathM3: {message}")

    def _on_model_dir(self, _value: Any = None) -> None:
        folder = self._model_dir.value
        if folder is None or not str(folder) or not Path(folder).is_dir() or str(folder) == ".":
            return
        name = registry.register_clip(folder) if is_clip_folder(folder) else registry.register(folder)
        self._model.reset_choices()
        self._model.value = name

    def _is_demo(self) -> bool:
        """The chosen entry is the demo model (its source, not its display name)."""
        return self._model.value is not None and registry.get(self._model.value).source == api.DEMO

    @property
    def zero_shot(self) -> bool:
        """The chosen model is a CLIP-style encoder: Run classifies zero-shot."""
        return self._model.value is not None and registry.get(self._model.value).zero_shot

    def _on_model_changed(self, _value: Any = None) -> None:
        zero_shot = self.zero_shot
        self._note.value = DEMO_NOTE if self._is_demo() else ZERO_SHOT_NOTE if zero_shot else ""
        self._zero_shot.visible = zero_shot
        for w in (self._encoder, self._text):  # the CLIP model is its own encoder; no conditioning text
            w.visible = not zero_shot
        if self._model.value is not None:  # the grid fields start from the model's own tiling
            self._min_tissue.value = model_tiling(registry.get(self._model.value).source).min_tissue_fraction
        self._show_expectation()

    def _on_slide_changed(self, _value: Any = None) -> None:
        """A slide's µm/px from its file (0 = unknown) in the field; the user may correct it."""
        self._slide_mpp.value = layer_mpp(self._slide.value) or 0.0
        self._show_expectation()

    def _show_expectation(self, _value: Any = None) -> None:
        if self._model.value is None:
            self._mpp_note.value = ""
            return
        tiling = model_tiling(registry.get(self._model.value).source)
        self._mpp_note.value = expectation(tiling, field_mpp(self._slide_mpp))

    # ------------------------------------------------------------------------------------------ running
    @property
    def running(self) -> bool:
        return self._job is not None and self._job.running

    def _on_run(self, _value: Any = None) -> Job | None:
        if self.running:
            return self._job
        layer = self._slide.value
        if layer is None:
            skipped = [lay.name for lay in slide_layers(self._viewer)]
            self.show_error(
                not_brightfield(skipped)
                if skipped
                else "no slide layer; open a slide with napari-pathm3 (File > Open, or the sample)"
            )
            return None
        slide = layer.metadata["pathm3_slide"]
        region_layer = self._region.value
        region = None
        if region_layer is not None:
            region = shapes_layer_polygons(region_layer, slide_scale=layer_scale(layer))
            if not region:
                self.show_error(f"shapes layer {region_layer.name!r} has no shapes; draw a region first")
                return None
        if self.zero_shot and (problem := self._zero_shot.problem()):
            self.show_error(problem)
            return None
        request = self.request(region)
        self._zero_shot_run = self.zero_shot
        return self._start(self._work(self._model.value, slide, request, self._threads.value))

    def request(self, region: list[Any] | None = None) -> CaptionRequest:
        """The run the fields describe (the model is filled in by the worker once loaded). The grid comes
        from the model's tiling with this widget's minimum tissue fraction; a slide whose µm/px is still
        unknown is tiled at level 0 in its own pixels (the result says so) rather than refused."""
        encoder = None if self._encoder.value == MODEL_ENCODER else self._encoder.value
        return CaptionRequest(
            model=registry.get(self._model.value).source if self._model.value is not None else api.DEMO,
            encoder=encoder,
            device=self._device.value,
            region=region,
            text=self._text.value.strip() or None,
            tissue=self.tissue_config(),
            cache_dir=self.cache_dir,
            top_k=int(self._top_k.value),
            min_tissue_fraction=float(self._min_tissue.value),
            mpp=field_mpp(self._slide_mpp),
            missing_mpp="level0",
        )

    def _work(self, model_name: str, slide: Any, request: CaptionRequest, threads: Any) -> Any:
        """The worker: the registry's loaded model (or, zero-shot, the CLIP encoder with the fields' classes
        and prompts), then the one API entry point. Phrase maps later rerun its slide and grid."""
        zero_shot = self.zero_shot
        classes, prompts = self._zero_shot.settings() if zero_shot else ([], None)

        def work(progress: Any, cancel: Any) -> SlideResult:
            from ..threads import apply_thread_policy

            apply_thread_policy(threads)  # the widget's thread setting ("auto" = free cores)
            report(progress, 0, 1, Stage.LOAD_MODEL)
            context = RunContext(progress=progress, cancel=cancel)
            if zero_shot:
                run = request
                result = api.zero_shot_classify(slide, classes, run, templates=prompts, context=context)
            else:
                model = registry.load(model_name, device=request.device, progress=progress, cancel=cancel)
                run = request.replace(model=model)
                result = api.caption_slide(slide, run, context=context)
            grid = run.replace(tiling=result.grid.config, min_tissue_fraction=None, level=None)
            self._last_run = (slide, grid)  # phrase maps: the same encoder and patches
            return result

        return work

    def _start(self, work: Any) -> Job | None:
        self._set_running(True)
        self._stage.value = "starting"
        self._progress.value = 0
        self._job = Job(
            work,
            on_done=self._on_result,
            on_progress=self._on_progress,
            on_finished=self._on_finished,
            on_error=self._on_error,
        )
        return self._job.start()

    def _on_error(self, err: BaseException) -> None:
        """The whole message in the result box (the job's toast is shown by the job itself)."""
        self._warning.visible = False
        self._output.value = error_text(err)

    def tissue_config(self) -> Any:
        """The tissue detection settings of the widget."""
        return tissue_config(self._tissue_threshold, self._tissue_mpp)

    def _on_cancel(self, _value: Any = None) -> None:
        if self._job is not None and self._job.running:
            self._job.cancel()
            self._stage.value = "cancelling…"

    def _on_progress(self, event: Progress) -> None:
        self._progress.value, self._stage.value = stage_bar(event, self._progress.value, self._time_left)

    def _on_finished(self) -> None:
        self._set_running(False)
        if self._job is not None and self._job.error is not None:
            self._stage.value = "cancelled" if isinstance(self._job.error, Cancelled) else "failed"

    def _set_running(self, running: bool) -> None:
        self._run.enabled = not running and self._slide.value is not None
        self._cancel.enabled = running

    def _on_result(self, result: SlideResult) -> None:
        self.result = result
        # layers in the slide layer's units (pixels for a slide opened without µm/px), whatever µm/px was entered
        layer = self._slide.value
        units = layer_mpp_xy(layer) if layer is not None else result.mpp_xy
        show(result, self._viewer, units=units)
        show_phrase_maps(result.in_units(units), self._viewer)
        warnings = tuple(getattr(result, "warnings", ()) or ())
        self._warning.value = "\n".join(f"Warning: {w}" for w in warnings)
        self._warning.visible = bool(warnings)
        self._output.value = format_result(result, demo=result.demo, zero_shot=self._zero_shot_run)
        self.words.set_result(result)
        self._stage.value = f"done: {result.num_patches} patches"
        self._progress.value = 100
        for b in (self._save_json, self._save_csv, self._save_geojson, self._save_sdata, self._save_ome):
            b.enabled = True
