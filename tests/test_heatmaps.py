"""The heatmap scale (attention relative to uniform, fixed range) and the heatmap PNG figure."""

from __future__ import annotations

import numpy as np
import pytest

from napari_pathm3.heatmaps import (
    RELATIVE_LOG2_RANGE,
    attention_log2,
    attention_spread,
    colorbar_ticks,
    relative_attention,
    spread_text,
    to_unit_range,
)


def test_relative_attention_is_one_for_uniform_and_per_row() -> None:
    n = 263
    np.testing.assert_allclose(relative_attention(np.full(n, 1.0 / n)), 1.0)
    q = np.array([[0.5, 0.25, 0.25, np.nan], [0.1, 0.1, 0.1, 0.7]])
    rel = relative_attention(q)
    np.testing.assert_allclose(rel[0, :3], [1.5, 0.75, 0.75])  # 3 finite patches: uniform = 1/3
    assert np.isnan(rel[0, 3])
    np.testing.assert_allclose(rel[1], [0.4, 0.4, 0.4, 2.8])


def test_near_uniform_attention_is_not_stretched() -> None:
    """A 2 % spread (the issue's demo) must stay within a sliver of the colour range, not fill it."""
    rng = np.random.default_rng(0)
    a = 1.0 + 0.02 * rng.standard_normal(263)
    a /= a.sum()
    u = to_unit_range(attention_log2(a))
    assert u.max() - u.min() < 0.05 and abs(float(np.median(u)) - 0.5) < 0.01
    s = attention_spread(a)
    assert s["n"] == 263 and 0.01 < s["cv"] < 0.03
    assert "263 patches" in spread_text(s) and "uniform" in spread_text(s)


def test_peaked_attention_uses_the_range_and_clips() -> None:
    a = np.full(100, 0.1 / 99)
    a[0] = 0.9  # 90x uniform: beyond 8x, clipped to the top colour
    u = to_unit_range(attention_log2(a))
    assert u[0] == 1.0 and u[1] == 0.0  # 90x and 0.1x uniform: both beyond the fixed range
    assert to_unit_range(np.array([-np.inf, np.nan]))[0] == 0.0 and np.isnan(
        to_unit_range(np.array([np.nan]))[0]
    )


def test_colorbar_ticks_span_the_fixed_range() -> None:
    ticks = colorbar_ticks()
    assert ticks[0] == (RELATIVE_LOG2_RANGE[0], "1/8x") and ticks[-1] == (RELATIVE_LOG2_RANGE[1], "8x")
    assert (0.0, "1x") in ticks


def test_png_figure_has_colour_bar_and_text(synthetic_slide) -> None:
    from napari_pathm3.config import TilingConfig
    from napari_pathm3.heatmap_png import _font, render, result_lines, wrap
    from napari_pathm3.inference import SlideResult
    from napari_pathm3.io.slide import open_slide
    from napari_pathm3.tiling import detect_tissue, make_grid

    with open_slide(synthetic_slide) as slide:
        tissue = detect_tissue(slide)
        grid = make_grid(slide, TilingConfig(), tissue=tissue)
        thumb = slide.thumbnail(400)
        dims = tuple(slide.dimensions)
    n = len(grid)
    att = np.full(n, 1.0 / n, np.float32)
    res = SlideResult(
        slide_path=str(synthetic_slide),
        slide_dimensions=dims,
        mpp_xy=(0.5, 0.5),
        label="tumour",
        probabilities={"tumour": 0.8, "normal": 0.2},
        caption="a long caption " * 12,
        attention=att,
        query_attention=att[None],
        grid=grid,
        tissue=tissue,
        top_indices=np.arange(3),
        top_scores=att[:3],
        warnings=("this model has not learned to caption",),
    )
    lines = [t for t, _ in result_lines(res, note="NOT diagnostic")]
    assert lines[0] == "Class: tumour (80.0%)" and any("not learned to caption" in t for t in lines)
    assert any(t.startswith("Caption (unreliable)") for t in lines) and lines[-1] == "NOT diagnostic"
    fig = np.asarray(render(res, np.asarray(thumb)[..., :3], note="NOT diagnostic"))
    h, w = thumb.shape[:2]
    assert fig.shape[1] > w + 40 and fig.shape[0] > h + 60  # colour bar panel right, text below
    # uniform attention: every heatmap cell has the one colour of "1x" (no invented contrast)
    from napari_pathm3.heatmaps import colorize

    mid = colorize(np.array([0.5]), alpha=1.0)[0, :3]
    panel = fig[:h, w:]
    assert (np.abs(panel.astype(int) - mid).sum(-1) < 30).any()  # the bar holds the 1x colour
    font = _font(14)
    assert all(font.getlength(line) <= 200 for line in wrap("word " * 80, font, 200))


@pytest.mark.parametrize("text", ["", "one", "a b c"])
def test_wrap_keeps_words(text: str) -> None:
    from napari_pathm3.heatmap_png import _font, wrap

    assert " ".join(wrap(text, _font(12), 50)).split() == text.split()
