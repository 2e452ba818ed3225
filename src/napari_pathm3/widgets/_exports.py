"""The export buttons of "Caption slide": the last result as JSON, CSV, QuPath GeoJSON, SpatialData, OME-Zarr
maps (through :func:`napari_pathm3.api.export_result`) or a screenshot of the canvas."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import api
from ..errors import PathM3Error


class ResultExports:
    """Mixin of :class:`~napari_pathm3.widgets.caption.CaptionWidget`: needs ``result``, ``cache_dir``,
    ``_viewer`` and ``native``."""

    result: Any
    cache_dir: Path
    _viewer: Any
    native: Any

    def export(self, path: str | Path, kind: str | None = None) -> Path:
        """Save the last result as ``json`` / ``csv`` / ``geojson`` (QuPath: tiles with measurements, top
        patches), ``spatialdata`` (a LazySlide-readable zarr), ``ome-zarr`` (maps) or a ``png`` screenshot."""
        path = Path(path)
        kind = kind or path.suffix.lstrip(".").lower()
        if kind == "png":
            self._viewer.screenshot(str(path), canvas_only=True, flash=False)
            return path
        if self.result is None:
            raise RuntimeError("no result to export yet: run the captioning first")
        # spatialdata: the features are read back from the cache this widget captions with
        return api.export_result(self.result, path, kind, cache_dir=self.cache_dir)

    def _ask_and_save(self, kind: str) -> None:
        from napari.utils.notifications import show_error, show_info
        from qtpy.QtWidgets import QFileDialog

        stem = self.result.slide_name if self.result is not None else "pathm3"
        suffix = {
            "json": "result.json",
            "csv": "patches.csv",
            "geojson": "qupath.geojson",
            "spatialdata": "spatialdata.zarr",
            "ome-zarr": "maps.ome.zarr",
            "png": "screenshot.png",
        }[kind]
        path, _ = QFileDialog.getSaveFileName(self.native, f"Save {kind.upper()}", f"{stem}-{suffix}")
        if not path:
            return
        try:
            show_info(f"PathM3: saved {self.export(path, kind)}")
        except (OSError, RuntimeError, ValueError, PathM3Error) as err:
            show_error(f"PathM3: could not save {path}: {err}")
