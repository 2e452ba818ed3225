"""Live loss plot of the training widget: a matplotlib canvas, or a text sparkline without matplotlib."""

from __future__ import annotations

import math
from typing import Any

from qtpy.QtWidgets import QLabel, QWidget

#: (record key, legend label, colour) of the curves drawn
CURVES = (
    ("train_loss", "loss (eq. 4)", "#1f77b4"),
    ("train_loss_cls", "L_cls", "#d62728"),
    ("train_loss_caption", "L_caption", "#2ca02c"),
)
_BARS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float]) -> str:
    v = [x for x in values if math.isfinite(x)]
    if not v:
        return ""
    lo, hi = min(v), max(v)
    return "".join(_BARS[int((x - lo) / (hi - lo) * (len(_BARS) - 1)) if hi > lo else 0] for x in v)


class LossPlot:
    """``widget`` is the Qt widget to embed; ``update(history)`` redraws from the epoch records."""

    def __init__(self) -> None:
        try:
            from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
            from matplotlib.figure import Figure
        except ImportError:
            self._canvas: Any = None
            self.widget: QWidget = QLabel("loss: (no epochs yet)")
            return
        fig = Figure(figsize=(3.2, 2.0), dpi=100, tight_layout=True)
        self._ax = fig.add_subplot(111)
        self._canvas = FigureCanvasQTAgg(fig)
        self._canvas.setMinimumHeight(170)
        self.widget = self._canvas
        self.clear()

    @property
    def uses_matplotlib(self) -> bool:
        return self._canvas is not None

    def clear(self) -> None:
        if self._canvas is None:
            self.widget.setText("loss: (no epochs yet)")  # type: ignore[attr-defined]
            return
        self._ax.clear()
        self._ax.set_xlabel("epoch", fontsize=8)
        self._ax.set_ylabel("training loss", fontsize=8)
        self._ax.tick_params(labelsize=7)
        self._canvas.draw_idle()

    def update(self, history: list[dict[str, Any]]) -> None:
        epochs = [int(r.get("epoch", i + 1)) for i, r in enumerate(history)]
        if self._canvas is None:
            lines = []
            for key, label, _ in CURVES:
                vals = [float(r.get(key, float("nan"))) for r in history]
                if any(math.isfinite(x) for x in vals):
                    lines.append(f"{label}: {sparkline(vals)} {vals[-1]:.3f}")
            self.widget.setText("\n".join(lines))  # type: ignore[attr-defined]
            return
        self.clear()
        for key, label, color in CURVES:
            vals = [float(r.get(key, float("nan"))) for r in history]
            if any(math.isfinite(x) for x in vals):
                self._ax.plot(epochs, vals, "-o", ms=2.5, lw=1.2, color=color, label=label)
        if history:
            self._ax.legend(fontsize=7, frameon=False)
        self._canvas.draw_idle()
