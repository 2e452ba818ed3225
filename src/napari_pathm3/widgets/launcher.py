"""``napari-pathm3 demo``'s window: napari with the sample slide, the demo regions and both widgets."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import api
from .._napari.reader import slide_layer_data
from ..result import DISCLAIMER
from .caption import CaptionWidget
from .train import TrainWidget

if TYPE_CHECKING:
    import napari


def launch_viewer(*, run: bool = True, caption: bool = True) -> napari.Viewer:
    """Open napari with the sample slide, the demo regions and both widgets; caption with the demo model."""
    import napari
    from napari.utils.notifications import show_info
    from qtpy.QtCore import QTimer

    viewer = napari.Viewer(title="napari-pathm3 demo (not diagnostic)")
    data, kwargs, _ = slide_layer_data(api.open_slide(api.sample_slide()), name="CMU-1-Small-Region")
    slide_layer = viewer.add_image(data, **kwargs)
    rdata, rkwargs, _ = api.demo_regions_layer(tuple(slide_layer.scale))
    viewer.add_shapes(rdata, **rkwargs)
    cap = CaptionWidget(viewer)
    cap_dock = viewer.window.add_dock_widget(cap, name="Caption slide", area="right")
    viewer.window.add_dock_widget(TrainWidget(viewer), name="Train model", area="right", tabify=True)
    QTimer.singleShot(0, cap_dock.raise_)  # tabified: show "Caption slide" once the tabs exist
    viewer.window.resize(1500, 950)
    viewer.layers.selection.active = slide_layer
    show_info(DISCLAIMER)
    if caption:
        cap._on_run()
    if run:
        napari.run()
    return viewer
