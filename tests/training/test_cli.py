"""``napari-pathm3 train`` and ``evaluate`` on a manifest and a features folder."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_pathm3.cli import main

from .conftest import CAPTIONS, make_bags


@pytest.mark.slow  # trains, then generates captions: ~10-25 s
def test_train_then_evaluate(tmp_path, capsys):
    feats = tmp_path / "feats"
    feats.mkdir()
    rows = ["slide,label,caption,split"]
    for i, bag in enumerate(make_bags(12, seed=0)):
        np.save(feats / f"{bag.slide_id}.npy", bag.features)
        split = "test" if i >= 8 else ("val" if i >= 6 else "train")
        rows.append(f"{bag.slide_id},{'ab'[bag.label]},{CAPTIONS[bag.label]},{split}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    run = tmp_path / "run"
    rc = main(
        [
            "train",
            "--manifest",
            str(tmp_path / "m.csv"),
            "--features",
            str(feats),
            "--out",
            str(run),
            "--tiny",
            "--epochs",
            "2",
            "--batch-size",
            "2",
            "--device",
            "cpu",
            "--mode",
            "image",
            "--alpha",
            "1",
        ]
    )
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["epochs_run"] == 2 and (run / "best" / "config.json").is_file()
    # what ran: the preset, the overrides from the command line, the seed
    prov = summary["provenance"]
    assert (prov["preset"], prov["mode"], prov["alpha"], prov["seed"]) == ("tiny", "image", 1.0, 0)
    out = tmp_path / "metrics.json"
    rc = main(
        [
            "evaluate",
            str(run / "best"),
            "--manifest",
            str(tmp_path / "m.csv"),
            "--features",
            str(feats),
            "--split",
            "test",
            "--out",
            str(out),
            "--device",
            "cpu",
            "--predictions",
        ]
    )
    assert rc == 0
    m = json.loads(out.read_text())
    assert m["n"] == 4 and m["class_names"] == ["a", "b"]
    assert {"accuracy", "auc", "macro_f1", "bleu_4", "meteor_nltk", "rouge_l", "cider_d"} <= set(m)
    assert len(m["predictions"]) == 4 and isinstance(m["predictions"][0]["caption"], str)
    assert m["provenance"]["preset"] == "tiny" and m["provenance"]["caption_style"] == "as given"


def test_train_missing_features_is_one_line_error(tmp_path, capsys):
    (tmp_path / "m.csv").write_text("slide,label\nnope,a\nnope2,b\n")
    rc = main(
        [
            "train",
            "--manifest",
            str(tmp_path / "m.csv"),
            "--features",
            str(tmp_path),
            "--out",
            str(tmp_path / "r"),
            "--tiny",
        ]
    )
    assert rc == 1 and "no features for 'nope'" in capsys.readouterr().err


def test_train_on_a_feature_store_records_its_patch_grid(tmp_path, cmu_slide_path, capsys):
    """`caption` must cut new slides like the training features were cut: the grid travels with the model."""
    (tmp_path / "slides.csv").write_text(f"slide,slide_id\n{cmu_slide_path},cmu_a\n{cmu_slide_path},cmu_b\n")
    store = tmp_path / "store"
    rc = main(
        [
            "extract",
            "--manifest",
            str(tmp_path / "slides.csv"),
            "--out",
            str(store),
            "--patch-size",
            "112",
            "--device",
            "cpu",
            "--no-progress",
        ]
    )
    assert rc == 0
    (tmp_path / "m.csv").write_text("slide,label,caption\ncmu_a,a,first.\ncmu_b,b,second.\n")
    run = tmp_path / "run"
    rc = main(
        [
            "train",
            "--manifest",
            str(tmp_path / "m.csv"),
            "--features",
            str(store),
            "--out",
            str(run),
            "--tiny",
            "--epochs",
            "1",
            "--batch-size",
            "2",
            "--device",
            "cpu",
            "--mode",
            "image",
            "--val-fraction",
            "0",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    assert not (run / "last" / "pathm3_tiling.json").exists()  # no sidecar: the grid is in config.json
    tiling = json.loads((run / "last" / "config.json").read_text())["tiling"]
    assert tiling["patch_size"] == 112 and tiling["target_mpp"] == 0.5
