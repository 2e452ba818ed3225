"""How a result reads in napari (issue 27, item 5): a labelled, titled colour bar (1/8x .. 8x, not the bare
log2 -3..3), top-patch labels centred in their boxes in one opaque colour, and the per-query slider only
while the per-query layer is shown."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_pathm3 import api
from napari_pathm3.layers import COLORBAR_TITLE, TOP_K_COLOR, TOP_K_TEXT_COLOR, ratio_label

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "images"


@pytest.mark.parametrize(
    ("log2", "label"), [(-3, "1/8x"), (-1, "1/2x"), (0, "1x"), (1, "2x"), (3, "8x"), (0.5, "1.4x")]
)
def test_ratio_labels(log2: float, label: str) -> None:
    assert ratio_label(log2) == label


@pytest.fixture
def shown(make_napari_viewer, add_slide, synthetic_slide):
    """A shown viewer with the slide and a result with uneven attention (4 queries)."""
    from napari_pathm3.config import TilingConfig
    from napari_pathm3.io.slide import open_slide
    from napari_pathm3.result import SlideResult
    from napari_pathm3.tiling import detect_tissue, make_grid

    viewer = make_napari_viewer(show=True)
    add_slide(viewer, synthetic_slide)
    with open_slide(synthetic_slide) as slide:
        tissue = detect_tissue(slide)
        grid = make_grid(slide, TilingConfig(), tissue=tissue)
        dims = tuple(slide.dimensions)
    rng = np.random.default_rng(0)
    att = rng.lognormal(0.0, 1.0, len(grid))
    queries = rng.lognormal(0.0, 1.0, (4, len(grid)))
    top = np.argsort(-att)[:5]
    result = SlideResult(
        slide_path=str(synthetic_slide),
        slide_dimensions=dims,
        mpp_xy=(0.5, 0.5),
        label="tumour",
        probabilities={"tumour": 0.8, "normal": 0.2},
        caption="a caption",
        attention=(att / att.sum()).astype(np.float32),
        query_attention=(queries / queries.sum(1, keepdims=True)).astype(np.float32),
        grid=grid,
        tissue=tissue,
        top_indices=top,
        top_scores=att[top],
    )
    api.show(result, viewer)
    return viewer, {lay.metadata.get("kind"): lay for lay in viewer.layers if "kind" in lay.metadata}


def _colorbar_axis(viewer, layer):
    visual = viewer.window._qt_viewer.canvas._layer_overlay_to_visual[layer][layer.colorbar]
    return (visual[0] if isinstance(visual, list) else visual).node.ticks


def test_colorbar_is_labelled_in_multiples_of_uniform(shown, qtbot) -> None:
    viewer, kinds = shown
    heat = kinds["attention"]
    assert heat.colorbar.visible and tuple(heat.contrast_limits) == (-3.0, 3.0)
    axis = _colorbar_axis(viewer, heat)
    _, _, labels = axis.ticker._get_tick_frac_labels()
    assert {"1/8x", "1x", "8x"} <= set(labels), labels  # not the bare log2 "-3", "0", "3"
    assert not {"-3", "0", "3"} & set(labels)
    assert axis.axis_label == COLORBAR_TITLE
    # the overlay's box makes room for the title: wider than the tick labels alone
    width, line = axis.parent.set_ticks_and_get_text_size(
        tick_length=5, font_size=10, clim=(-3, 3), color="w"
    )
    assert axis.axis_label_margin < width


def test_per_query_colorbar_is_labelled_when_first_shown(shown, qtbot) -> None:
    viewer, kinds = shown
    per_query = kinds["query_attention"]
    per_query.visible = True
    per_query.colorbar.visible = True
    qtbot.wait(50)
    _, _, labels = _colorbar_axis(viewer, per_query).ticker._get_tick_frac_labels()
    assert "8x" in labels and "3" not in labels


def test_query_slider_only_while_the_per_query_layer_is_shown(shown, qtbot) -> None:
    viewer, kinds = shown
    per_query = kinds["query_attention"]
    sliders = viewer.window._qt_viewer.dims
    assert not per_query.visible and per_query.data.shape[0] == 1
    assert viewer.dims.nsteps[0] == 1 and not any(w.isVisible() for w in sliders.slider_widgets)
    per_query.visible = True
    qtbot.waitUntil(lambda: sliders.slider_widgets[0].isVisible(), timeout=5000)
    assert per_query.data.shape[0] == 4 and viewer.dims.nsteps[0] == 4
    np.testing.assert_array_equal(per_query.data, per_query.metadata["query_stack"])
    per_query.visible = False
    qtbot.waitUntil(lambda: not sliders.slider_widgets[0].isVisible(), timeout=5000)
    assert viewer.dims.nsteps[0] == 1


def test_top_patch_labels_centred_and_opaque(shown) -> None:
    _, kinds = shown
    top = kinds["top_patches"]
    assert top.opacity == 1.0 and top.text.size >= 12 and str(top.text.anchor.value) == "center"
    assert list(top.text.values) == [str(r) for r in range(1, 6)]
    np.testing.assert_allclose(top.text.color.constant, _rgba(TOP_K_TEXT_COLOR))
    np.testing.assert_allclose(top.edge_color[0], _rgba(TOP_K_COLOR))


def _rgba(color: str) -> np.ndarray:
    from napari.utils.colormaps.standardize_color import transform_color

    return transform_color(color)[0]


def test_without_a_qt_window_the_bar_stays_napari_s_and_nothing_breaks() -> None:
    """Scripts with a plain ViewerModel (no Qt): label_colorbar says it could not relabel, without raising."""
    from napari.components import ViewerModel

    from napari_pathm3.layers import label_colorbar

    viewer = ViewerModel()
    layer = viewer.add_image(np.zeros((4, 4), np.float32), contrast_limits=(-3, 3))
    assert label_colorbar(viewer, layer) is False
