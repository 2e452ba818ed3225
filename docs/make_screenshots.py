"""Capture the user-guide screenshots from the real widgets (headless: ``xvfb-run -a python docs/make_screenshots.py``).

Writes ``docs/images/``:

* ``caption-widget.png``   napari window: the sample slide, the attention heatmap, the "Caption slide" dock
* ``heatmap.png``          the canvas only: heatmap and top patches over the slide
* ``query-attention.png``  the canvas with the per-query attention stack (one query shown)
* ``train-widget.png``     the "Train model" dock after a short training run on the demo regions
* ``demo-heatmap.png``     the heatmap PNG that ``caption --heatmap`` and ``demo --headless`` write

Uses the demo model (trained on first use, cached in the user cache folder; set ``NAPARI_PATHM3_CACHE`` to
put it elsewhere). Nothing is downloaded beyond the sample slide.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "images"


def wait(app, predicate, timeout: float = 1800.0) -> None:
    t0 = time.monotonic()
    while not predicate():
        app.processEvents()
        time.sleep(0.02)
        if time.monotonic() - t0 > timeout:
            raise TimeoutError("worker did not finish")
    for _ in range(20):  # let layers render
        app.processEvents()
        time.sleep(0.02)


def _leave_room_for_the_text(viewer) -> None:
    """Zoom out and move the slide down a little so the result's text overlay (top left) is not drawn over it."""
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    camera.zoom = camera.zoom * 0.8
    center = list(camera.center)
    extent = viewer.layers.extent.world
    height = float(extent[1][-2] - extent[0][-2])
    center[-2] -= 0.14 * height
    camera.center = tuple(center)


def _close_toasts(viewer, app) -> None:
    """Close napari's notification toasts (e.g. its PyQt5 deprecation notice) so they don't cover the canvas."""
    from napari._qt.dialogs.qt_notification import NapariQtNotification

    for toast in viewer.window._qt_window.findChildren(NapariQtNotification):
        toast.close()
    for _ in range(10):
        app.processEvents()


def main() -> int:
    import warnings

    # napari turns warnings into toasts; the PyQt5 deprecation one would cover the canvas in every picture
    warnings.filterwarnings("ignore", message=".*PyQt5.*")
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_pathm3._napari.reader import slide_layer_data
    from napari_pathm3.demo import demo_regions_layer, ensure_demo_model
    from napari_pathm3.io.samples import sample_slide_path
    from napari_pathm3.io.slide import open_slide
    from napari_pathm3.widgets._registry import DEMO_NAME
    from napari_pathm3.widgets.caption import CaptionWidget
    from napari_pathm3.widgets.train import TrainWidget

    OUT.mkdir(parents=True, exist_ok=True)
    print("demo model:", ensure_demo_model(), flush=True)  # trains once, before any window exists

    viewer = napari.Viewer(title="napari-pathm3", show=True)
    app = QApplication.instance()
    viewer.window._qt_window.resize(1500, 950)
    data, kwargs, _ = slide_layer_data(open_slide(sample_slide_path()), name="CMU-1-Small-Region")
    slide = viewer.add_image(data, **kwargs)
    rdata, rkwargs, _ = demo_regions_layer(tuple(slide.scale))
    regions = viewer.add_shapes(rdata, **rkwargs)

    cap = CaptionWidget(viewer)
    viewer.window.add_dock_widget(cap, name="Caption slide", area="right")
    cap._slide.value = slide
    cap._model.value = DEMO_NAME
    cap._on_run()
    wait(app, lambda: not cap.running)
    if cap.result is None:
        print("captioning failed:", cap._job.error if cap._job else None, file=sys.stderr)
        return 1
    from napari_pathm3.demo import DISCLAIMER
    from napari_pathm3.heatmap_png import save_heatmap_png

    save_heatmap_png(cap.result, OUT / "demo-heatmap.png", max_size=640, note=DISCLAIMER)
    viewer.layers.selection.active = viewer.layers["CMU-1-Small-Region attention"]
    viewer.reset_view()
    _leave_room_for_the_text(viewer)
    wait(app, lambda: True)
    _close_toasts(viewer, app)
    viewer.screenshot(str(OUT / "caption-widget.png"), canvas_only=False, flash=False)
    viewer.screenshot(str(OUT / "heatmap.png"), canvas_only=True, flash=False)

    viewer.layers["CMU-1-Small-Region attention"].visible = False
    viewer.layers["CMU-1-Small-Region top patches"].visible = False
    stack = viewer.layers["CMU-1-Small-Region attention per query"]
    stack.visible = True
    stack.colorbar.visible = True  # the same fixed log2 scale as the aggregate heatmap
    viewer.dims.set_current_step(0, 1)
    wait(app, lambda: True)
    viewer.screenshot(str(OUT / "query-attention.png"), canvas_only=True, flash=False)
    stack.visible = False
    stack.colorbar.visible = False
    viewer.layers["CMU-1-Small-Region attention"].visible = True
    viewer.layers["CMU-1-Small-Region top patches"].visible = True

    train = TrainWidget(viewer)
    viewer.window.add_dock_widget(train, name="Train model", area="right", tabify=True)
    train._slides.value = [slide]
    train._annotations.value = [regions]
    train._mode.value = "image"
    train._epochs.value = 8
    train._batch.value = 8
    train._lr.value = 2e-3
    train._patch.value = 96
    train._out.value = Path(train._out.value).with_name("screenshot-model")
    regions.visible = True
    train._on_train()
    wait(app, lambda: not train.running)
    train.native.parentWidget().raise_()
    wait(app, lambda: True)
    train.native.grab().save(str(OUT / "train-widget.png"))
    cap.native.parentWidget().raise_()
    wait(app, lambda: True)
    cap.native.grab().save(str(OUT / "caption-dock.png"))
    viewer.close()
    print("wrote", sorted(p.name for p in OUT.glob("*.png")), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
