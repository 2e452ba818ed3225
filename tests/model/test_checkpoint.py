"""The patch grid travels inside the checkpoint's config.json; older checkpoints with the grid in a
``pathm3_tiling.json`` sidecar still load with their grid."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from napari_pathm3.config import PathM3Config, TilingConfig
from napari_pathm3.errors import CheckpointError
from napari_pathm3.model.checkpoint import CONFIG_NAME, LEGACY_TILING_NAME, read_tiling

GRID = TilingConfig(patch_size=112, target_mpp=0.5, min_tissue_fraction=0.4)


def _save(config: PathM3Config, folder: Path) -> Path:
    from napari_pathm3.model import build_model

    return build_model(config).eval().save_pretrained(folder)


def test_tiling_is_saved_in_the_config(tiny_config: PathM3Config, tmp_path: Path) -> None:
    from napari_pathm3.model.pathm3 import PathM3Model

    folder = _save(dataclasses.replace(tiny_config, tiling=GRID), tmp_path / "ckpt")
    assert json.loads((folder / CONFIG_NAME).read_text())["tiling"]["patch_size"] == 112
    assert not (folder / LEGACY_TILING_NAME).exists()
    assert read_tiling(folder) == GRID
    loaded = PathM3Model.from_pretrained(folder)
    assert loaded.config.tiling == GRID and loaded.checkpoint_dir == folder.resolve()


def test_old_checkpoint_with_a_sidecar_loads_with_its_grid(tiny_config: PathM3Config, tmp_path: Path) -> None:
    from napari_pathm3.model.pathm3 import PathM3Model

    folder = _save(tiny_config, tmp_path / "old")
    # as written before the grid moved into config.json: no "tiling" key, a sidecar beside it
    data = json.loads((folder / CONFIG_NAME).read_text())
    data.pop("tiling")
    (folder / CONFIG_NAME).write_text(json.dumps(data))
    (folder / LEGACY_TILING_NAME).write_text(
        json.dumps({"patch_size": 112, "target_mpp": 0.5, "min_tissue_fraction": 0.4})
    )
    assert read_tiling(folder) == GRID
    assert PathM3Model.from_pretrained(folder).config.tiling == GRID


def test_no_grid_recorded_and_a_damaged_sidecar(tiny_config: PathM3Config, tmp_path: Path) -> None:
    folder = _save(tiny_config, tmp_path / "plain")
    assert read_tiling(folder) is None
    (folder / LEGACY_TILING_NAME).write_text("{not json")
    with pytest.raises(CheckpointError, match=LEGACY_TILING_NAME):
        read_tiling(folder)
