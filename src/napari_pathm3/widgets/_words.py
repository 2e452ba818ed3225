"""The Caption widget's word and phrase panel: pick a caption word to show its map, or type a phrase to map
it (PathM3 image-text path, or a CLIP-style encoder ``clip:<id>``); shows caption/classifier agreement.
Zero-shot classification with a CLIP-style encoder is a model of the Caption widget's list (``_zero_shot``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from magicgui.widgets import ComboBox, Container, Label, LineEdit, PushButton

from ..layer_kinds import ResultLayerKind, is_result_layer
from ..viewer import MapRaster, map_label, map_layer, switch_map
from ._worker import Job

if TYPE_CHECKING:
    import napari

    from ..result import SlideResult

NO_WORD = "(no word map)"
PATHM3_MODEL = "(the caption model)"


def word_layer_name(result: SlideResult) -> str:
    return f"{result.slide_name} word map"


class WordsPanel(Container):
    """Caption words (one map each), a phrase box and the caption/classifier agreement line."""

    def __init__(
        self,
        viewer: napari.viewer.Viewer,
        *,
        last_run: Any = None,
    ) -> None:
        super().__init__(labels=True, label="")
        self._viewer = viewer
        self.result: SlideResult | None = None
        self._raster: MapRaster | None = None
        self._layer: Any = None
        #: callable () -> (slide, CaptionRequest) of the last run, or None: phrase maps rerun it
        self._last_run = last_run
        self._job: Job | None = None
        self._agreement = Label(value="")
        self._agreement.native.setWordWrap(True)
        # a choices callable: napari calls reset_choices on dock widgets whenever a layer is added
        self._word = ComboBox(label="caption word", choices=self._word_choices, value=NO_WORD)
        self._phrase = LineEdit(label="phrase", tooltip="type a phrase, e.g. 'solid nests', and press Map")
        self._phrase_model = LineEdit(
            label="phrase model",
            value=PATHM3_MODEL,
            tooltip="the caption model's image-text path, or a CLIP-style encoder, e.g. clip:vinid/plip",
        )
        self._map = PushButton(text="Map phrase")
        self.last_phrase: Any = None
        self.extend(
            [
                self._agreement,
                self._word,
                self._phrase,
                self._phrase_model,
                self._map,
            ]
        )
        self._word.changed.connect(self._on_word)
        self._map.changed.connect(self._on_map_phrase)

    # ------------------------------------------------------------------------------------ results
    def set_result(self, result: SlideResult) -> None:
        self.result = result
        self._raster = MapRaster(result.grid)
        self._layer = None
        agree = result.caption_class_agreement
        self._agreement.value = (
            ""
            if agree["agrees"] is None
            else ("Caption and classifier agree." if agree["agrees"] else f"WARNING: {agree['note']}.")
        )
        self._word.reset_choices()
        self._word.value = NO_WORD  # a word's map is shown when the user picks the word

    def _word_choices(self, _w: Any = None) -> list[str]:
        return [NO_WORD, *self.word_labels()]

    def word_labels(self) -> list[str]:
        """``"1: word"`` per caption word of the current result."""
        res = self.result
        return res.word_maps.labels() if res is not None and res.word_maps is not None else []

    def select_word(self, label: str) -> None:
        self._word.value = label

    def _on_word(self, _value: Any = None) -> None:
        res, label = self.result, self._word.value
        if res is None or res.word_maps is None or label in (None, NO_WORD):
            return
        i = res.word_maps.labels().index(label)
        self.show_map(res.word_maps.maps[i], what=f"word '{res.word_maps.words[i]}'")

    def show_map(self, values: Any, *, what: str) -> Any:
        """Show ``values`` (n,) in the word-map layer (created once per result, then only its data changes)."""
        res = self.result
        assert res is not None and self._raster is not None
        if self._layer is None or self._layer not in self._viewer.layers:
            units = ("um", "um") if res.mpp_xy is not None else None
            data, kwargs, _ = map_layer(
                values,
                self._raster,
                name=word_layer_name(res),
                what=what,
                slide_scale=res.slide_scale,
                units=units,
                metadata={"slide_path": res.slide_path},
            )
            self._layer = self._viewer.add_image(data, **kwargs)
        switch_map(self._layer, values, self._raster, what=what)
        self._label_bar()
        self._layer.name = f"{word_layer_name(res)}: {map_label(what)}"
        # the canvas text names what the colour bar shows (napari's colour bar has no title of its own)
        import textwrap

        from ..viewer import OVERLAY_WIDTH, overlay_text

        legend = textwrap.wrap(f"Colour bar: {what}, relative to uniform 1/N", OVERLAY_WIDTH)
        self._layer.metadata = {
            **self._layer.metadata,
            "pathm3_overlay": "\n".join([overlay_text(res), *legend]),
        }
        self._one_colour_bar()
        self._sync_overlay()
        return self._layer

    def _label_bar(self) -> None:
        """The map's colour bar labelled 1/8x .. 8x like the attention heatmap's (its visual exists once shown)."""
        from ..viewer import label_colorbar

        layer = self._layer
        if layer is None or (layer.metadata or {}).get("pathm3_bar_labelled"):
            return
        if label_colorbar(self._viewer, layer):
            layer.metadata = {**layer.metadata, "pathm3_bar_labelled": True}

    def _one_colour_bar(self) -> None:
        """Only the word map's colour bar: the aggregate heatmap's (same scale) would sit beside it unlabelled."""
        for lay in self._viewer.layers:
            bar = getattr(lay, "colorbar", None)
            if bar is not None and lay is not self._layer and is_result_layer(lay, ResultLayerKind.ATTENTION):
                bar.visible = False

    def _sync_overlay(self) -> None:
        from ..viewer import sync_overlay, text_overlay

        self._viewer.layers.selection.active = self._layer
        sync_overlay(self._viewer, text_overlay(self._viewer))

    # ------------------------------------------------------------------------------------ phrases
    def _on_map_phrase(self, _value: Any = None) -> Job | None:
        from napari.utils.notifications import show_error

        phrase = self._phrase.value.strip()
        if not phrase:
            show_error("PathM3: type a phrase to map, e.g. 'solid nests'")
            return None
        run = self._last_run() if self._last_run is not None else None
        if self.result is None or run is None:
            show_error("PathM3: run the captioning first; the phrase is mapped on the same patches")
            return None
        slide, request = run
        choice = self._phrase_model.value.strip()
        if choice and choice != PATHM3_MODEL:
            request = request.replace(model=choice)

        def work(progress: Any, cancel: Any) -> Any:
            from .. import api

            return api.query_heatmap(slide, phrase, request, progress=progress, cancel=cancel)

        self._job = Job(work, on_done=self._on_phrase_done)
        return self._job.start()

    def _on_phrase_done(self, qr: Any) -> None:
        self.last_phrase = qr
        if self.result is None or len(qr.grid) != self.result.num_patches:
            self._raster = MapRaster(qr.grid)
        self.show_map(qr.phrase_map.values, what=f"phrase '{qr.phrase_map.phrase}'")
