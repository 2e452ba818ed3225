"""The README's foundation-model flow with a stand-in encoder (issue 27, item 11): features extracted with a
non-default encoder train a model that records that encoder, and ``caption`` then encodes new slides with it
without being told (before, the CLI recorded no encoder and captioning fell back to the default one)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from napari_pathm3.cli import main


def test_extract_train_caption_keeps_the_encoder(
    synthetic_slide: Path, tiny_hf_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NAPARI_PATHM3_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    a, b = (
        shutil.copy(synthetic_slide, tmp_path / "case-a.tif"),
        shutil.copy(synthetic_slide, tmp_path / "case-b.tif"),
    )
    encoder = f"local:{tiny_hf_dir}"
    common = ["--patch-size", "64", "--target-mpp", "1.0", "--no-progress"]
    assert main(["extract", str(a), str(b), "--encoder", encoder, "--out", "feats", *common]) == 0
    Path("bags.csv").write_text('slide,label,caption\ncase-a,one,"first case."\ncase-b,two,"second case."\n')
    args = [
        "--manifest",
        "bags.csv",
        "--features",
        "feats",
        "--out",
        "run",
        "--size",
        "tiny",
        "--epochs",
        "1",
    ]
    assert main(["train", *args, "--val-fraction", "0"]) == 0
    config = json.loads(Path("run/best/config.json").read_text())
    assert config["encoder_name"] == f"local:{tiny_hf_dir.resolve()}"
    assert main(["caption", str(a), "--model", "run/best", "--out", "r.json", "--quiet"]) == 0
    result = json.loads(Path("r.json").read_text())
    assert result["encoder"] == config["encoder_name"]  # encoded with the stand-in, not the default
