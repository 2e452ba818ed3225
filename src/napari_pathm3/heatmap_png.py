"""The heatmap figure (PNG): attention over a slide thumbnail, a colour bar with its scale, and the result
written on the image (class, probabilities, caption, warnings, how far attention is from uniform).

The picture must stand on its own when it is mailed or pasted into a report, so everything needed to read it
is drawn on it. Colours use the fixed scale of :mod:`napari_pathm3.heatmaps` (attention relative to uniform
``1/N``, log2, ``1/8x``..``8x``): nearly uniform attention renders as nearly one colour, never as hotspots.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._types import PathLike
from .heatmaps import (
    RELATIVE_LOG2_RANGE,
    Raster,
    attention_log2,
    attention_raster,
    attention_spread,
    colorbar_ticks,
    colorize,
    overlay,
    spread_text,
    to_unit_range,
)

if TYPE_CHECKING:
    from PIL import ImageFont

    from .result import SlideResult

#: top patches: a white box inside a black one reads on every heatmap colour and on the stain
BOX_RGB = ((0, 0, 0), (255, 255, 255))
PNG_SCALE_LABEL = "attention relative to uniform 1/N (log scale)"
TEXT_RGB = (20, 20, 20)
WARN_RGB = (180, 0, 0)


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 with FreeType: a scalable font
    except (TypeError, OSError, ImportError):  # older Pillow / no FreeType: the fixed bitmap font
        return ImageFont.load_default()


def wrap(text: str, font: Any, width: float) -> list[str]:
    """Greedy word wrap of ``text`` so that every line is at most ``width`` pixels wide in ``font``."""
    lines: list[str] = []
    for para in text.splitlines() or [""]:
        line = ""
        for word in para.split():
            trial = f"{line} {word}".strip()
            if line and font.getlength(trial) > width:
                lines.append(line)
                line = word
            else:
                line = trial
        lines.append(line)
    return lines


def result_lines(result: SlideResult, *, note: str | None = None) -> list[tuple[str, tuple[int, int, int]]]:
    """The text block under the image: ``(text, colour)`` per paragraph."""
    p = result.probabilities.get(result.label, float("nan"))
    others = ", ".join(f"{k} {v:.1%}" for k, v in sorted(result.probabilities.items(), key=lambda kv: -kv[1]))
    accuracy = result.accuracy_text() if hasattr(result, "accuracy_text") else ""
    head = f"Class: {result.label} ({p:.1%})" + (f"; {accuracy}" if accuracy else "")
    out = [(head, TEXT_RGB), (f"Probabilities: {others}", TEXT_RGB)]
    warnings: Sequence[str] = getattr(result, "warnings", ()) or ()
    if warnings:
        out += [(f"Warning: {w}", WARN_RGB) for w in warnings]
        out.append((f"Caption (unreliable): {result.caption or '(empty)'}", TEXT_RGB))
    else:
        out.append((f"Caption: {result.caption or '(empty)'}", TEXT_RGB))
    where = "selected region" if result.region is not None else "whole slide"
    spread = spread_text(attention_spread(result.attention))
    out.append((f"{spread} ({where}); boxes: the {len(result.top_indices)} most attended patches", TEXT_RGB))
    who = f"model: {result.model_name}" if result.model_name else ""
    out.append((f"{result.slide_name}  {who}".strip(), TEXT_RGB))
    if note:
        out.append((note, WARN_RGB))
    return out


def colorbar_image(height: int, font: Any, *, width: int = 22) -> Any:
    """A vertical colour bar (high at the top) with ``1/8x .. 8x`` tick labels and its title, as a PIL image."""
    from PIL import Image, ImageDraw

    lo, hi = RELATIVE_LOG2_RANGE
    label_w = int(max(font.getlength(t) for _, t in colorbar_ticks())) + 8
    pad = int(font.size if hasattr(font, "size") else 12)
    img = Image.new("RGB", (width + label_w + 12, height), (255, 255, 255))
    bar_top, bar_h = pad, max(10, height - 2 * pad)
    ramp = np.linspace(1.0, 0.0, bar_h)[:, None].repeat(width, 1)
    rgba = colorize(ramp, alpha=1.0)
    img.paste(Image.fromarray(rgba[..., :3]), (4, bar_top))
    draw = ImageDraw.Draw(img)
    draw.rectangle([4, bar_top, 4 + width - 1, bar_top + bar_h - 1], outline=TEXT_RGB)
    for value, text in colorbar_ticks():
        y = bar_top + round((hi - value) / (hi - lo) * (bar_h - 1))
        draw.line([4 + width, y, 4 + width + 4, y], fill=TEXT_RGB)
        draw.text((4 + width + 7, y), text, fill=TEXT_RGB, font=font, anchor="lm")
    return img


def render(result: SlideResult, thumbnail: np.ndarray, *, alpha: float = 0.5, note: str | None = None) -> Any:
    """The figure as a PIL image: ``thumbnail`` (RGB of the whole slide) with the heatmap, the colour bar
    on the right and the text block below."""
    from PIL import Image, ImageDraw

    heat = attention_raster(attention_log2(result.attention), result.grid)
    raster = Raster(to_unit_range(heat.data).astype(np.float32), heat.downsample, heat.origin)
    img = Image.fromarray(overlay(thumbnail, raster, result.slide_dimensions, alpha=alpha))
    draw = ImageDraw.Draw(img)
    f = img.width / result.slide_dimensions[0]
    lw = max(1, round(img.width / 500))
    for p in result.top_patches():
        x0, y0, s = p["x"] * f, p["y"] * f, p["size"] * f
        draw.rectangle([x0 - lw, y0 - lw, x0 + s + lw, y0 + s + lw], outline=BOX_RGB[0], width=lw)
        draw.rectangle([x0, y0, x0 + s, y0 + s], outline=BOX_RGB[1], width=lw)

    size = max(12, round(max(img.size) / 55))
    font, small = _font(size), _font(max(10, round(size * 0.85)))
    title = wrap(PNG_SCALE_LABEL, small, 130)
    bar = colorbar_image(max(120, min(img.height, 420)), small)
    panel_w = max(bar.width, int(max(small.getlength(t) for t in title))) + 12
    width = img.width + panel_w
    text: list[tuple[str, tuple[int, int, int]]] = []
    for para, colour in result_lines(result, note=note):
        text += [(line, colour) for line in wrap(para, font, width - 2 * size)]
    line_h = round(size * 1.35)
    fig = Image.new("RGB", (width, img.height + line_h * len(text) + size), (255, 255, 255))
    fig.paste(img, (0, 0))
    d = ImageDraw.Draw(fig)
    y = size // 2
    for line in title:
        d.text((img.width + 6, y), line, fill=TEXT_RGB, font=small)
        y += round(small.size * 1.3) if hasattr(small, "size") else 14
    fig.paste(bar, (img.width + 6, y))
    y = img.height + size // 2
    for line, colour in text:
        d.text((size, y), line, fill=colour, font=font)
        y += line_h
    return fig


def save_heatmap_png(
    result: SlideResult,
    path: PathLike,
    *,
    max_size: int = 1024,
    alpha: float = 0.5,
    note: str | None = None,
) -> Path:
    """Write the heatmap figure of ``result`` to ``path`` (PNG); ``note`` is drawn in red under the text
    (e.g. the demo model's disclaimer). Returns the path."""
    from .io.slide import open_slide

    with open_slide(result.slide_path) as slide:
        thumb = slide.thumbnail(max_size)
    fig = render(result, np.asarray(thumb)[..., :3], alpha=alpha, note=note)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.save(tmp)
    tmp.replace(path)
    return path
