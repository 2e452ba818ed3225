"""The demo is a fact of its checkpoint (issue 22 item 2): ``config.json`` says ``"demo": true`` (strictly
validated), and every result of such a checkpoint carries the one demo name and the one disclaimer,
through ``api`` and the CLI alike, with nobody comparing display names."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from napari_pathm3 import api
from napari_pathm3.cli import main
from napari_pathm3.config import PathM3Config
from napari_pathm3.errors import CheckpointError
from napari_pathm3.layers import overlay_text
from napari_pathm3.result import DEMO_MODEL_NAME, DISCLAIMER


def _ckpt(tmp_path: Path, *, demo: bool) -> Path:
    from napari_pathm3.model import build_model

    cfg = dataclasses.replace(PathM3Config.tiny(feature_dim=16), demo=demo)
    return build_model(cfg).eval().save_pretrained(tmp_path / ("demo" if demo else "plain"))


def _bag(tmp_path: Path) -> Path:
    path = tmp_path / "bag.npy"
    np.save(path, np.random.default_rng(0).normal(size=(6, 16)).astype(np.float32))
    return path


def test_a_demo_checkpoint_names_itself_everywhere(tmp_path: Path) -> None:
    demo, plain, bag = _ckpt(tmp_path, demo=True), _ckpt(tmp_path, demo=False), _bag(tmp_path)
    assert json.loads((demo / "config.json").read_text())["demo"] is True
    res = api.caption_slide(bag, model=str(demo), device="cpu", word_maps=False)
    assert res.demo and res.model_name == DEMO_MODEL_NAME
    assert res.summary()["disclaimer"] == DISCLAIMER
    assert overlay_text(res).startswith("DEMO MODEL - NOT DIAGNOSTIC")
    other = api.caption_slide(bag, model=str(plain), device="cpu", word_maps=False)
    assert not other.demo and other.model_name == "plain" and "disclaimer" not in other.summary()
    out = tmp_path / "r.json"
    argv = ["caption", str(bag), "--model", str(demo), "--out", str(out), "--device", "cpu", "--quiet"]
    assert main(argv) == 0
    data = json.loads(out.read_text())
    assert data["disclaimer"] == DISCLAIMER and data["model"] == DEMO_MODEL_NAME


def test_demo_field_is_strict_json(tmp_path: Path) -> None:
    demo = _ckpt(tmp_path, demo=True)
    raw = json.loads((demo / "config.json").read_text())
    raw["demo"] = "yes"
    (demo / "config.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match="demo"):
        api.load_model(demo, device="cpu")
