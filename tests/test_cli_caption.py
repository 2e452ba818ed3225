"""``napari-pathm3 caption`` and ``napari-pathm3 demo --headless`` (headless, no display)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_pathm3.cli import main


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from napari_pathm3.config import PathM3Config
    from napari_pathm3.model import build_model

    cfg = PathM3Config.tiny(
        feature_dim=94, encoder_name="builtin:colorstats", class_names=("tumour", "normal")
    )
    return build_model(cfg).eval().save_pretrained(tmp_path_factory.mktemp("ckpt") / "tiny")


def test_caption_writes_json_png_csv_geojson(synthetic_slide: Path, tiny_ckpt: Path, tmp_path: Path) -> None:
    from PIL import Image

    out, png = tmp_path / "result.json", tmp_path / "heatmap.png"
    rc = main(
        [
            "caption",
            str(synthetic_slide),
            "--model",
            str(tiny_ckpt),
            "--out",
            str(out),
            "--heatmap",
            str(png),
            "--csv",
            str(tmp_path / "p.csv"),
            "--geojson",
            str(tmp_path / "top.geojson"),
            "--device",
            "cpu",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--top-k",
            "4",
            "--thumbnail-size",
            "400",
        ]
    )
    assert rc == 0
    data = json.loads(out.read_text())
    assert set(data["probabilities"]) == {"tumour", "normal"}
    assert data["label"] in data["probabilities"] and isinstance(data["caption"], str)
    assert len(data["top_patches"]) == 4 and {"x", "y", "attention", "rank"} <= set(data["top_patches"][0])
    img = np.asarray(Image.open(png))
    # the 400-px thumbnail (3072 x 2048 slide: 400 x 267) plus a colour-bar panel and the text block
    assert img.shape[1] > 400 + 40 and img.shape[0] > 267 + 60
    assert json.loads((tmp_path / "top.geojson").read_text())["type"] == "FeatureCollection"
    assert (tmp_path / "p.csv").read_text().count("\n") == data["num_patches"] + 1


def test_caption_to_stdout(synthetic_slide: Path, tiny_ckpt: Path, capsys: pytest.CaptureFixture) -> None:
    rc = main(
        [
            "caption",
            str(synthetic_slide),
            "--model",
            str(tiny_ckpt),
            "--quiet",
            "--no-cache",
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    assert "probabilities" in json.loads(capsys.readouterr().out)


def test_caption_bad_model_is_one_line_error(
    synthetic_slide: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    rc = main(["caption", str(synthetic_slide), "--model", str(tmp_path), "--quiet"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err


@pytest.mark.slow
def test_demo_headless(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cmu_slide_path: Path) -> None:
    """Trains the demo model on the sample slide (minutes on a busy CPU), then captions it."""
    monkeypatch.setenv("NAPARI_PATHM3_CACHE", str(tmp_path / "cache"))
    rc = main(["demo", "--headless", "--out", str(tmp_path / "out"), "--device", "cpu"])
    assert rc == 0
    data = json.loads((tmp_path / "out" / "result.json").read_text())
    assert "NOT diagnostic" in data["disclaimer"]
    assert set(data["probabilities"]) == {"squamous epithelium", "dermal stroma"}
    assert (tmp_path / "out" / "heatmap.png").stat().st_size > 1000


def test_info_and_caption_count_the_same_grid_of_an_old_checkpoint(
    synthetic_slide: Path, tiny_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import shutil

    from napari_pathm3.model.checkpoint import LEGACY_TILING_NAME as TILING_NAME

    ckpt = tmp_path / "small"
    shutil.copytree(tiny_ckpt, ckpt)
    # a checkpoint written before the grid moved into config.json: the sidecar still counts
    (ckpt / TILING_NAME).write_text(json.dumps({"patch_size": 112, "target_mpp": 0.5}))
    capsys.readouterr()
    assert main(["info", str(synthetic_slide), "--model", str(ckpt)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert main(["info", str(synthetic_slide)]) == 0
    default = json.loads(capsys.readouterr().out)
    out = tmp_path / "r.json"
    assert (
        main(
            [
                "caption",
                str(synthetic_slide),
                "--model",
                str(ckpt),
                "--out",
                str(out),
                "--quiet",
                "--no-cache",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert info["patches"] == json.loads(out.read_text())["num_patches"] == 4 * default["patches"]
    assert info["grid"]["patch_size"] == 112 and "small" in info["grid"]["source"]
    assert "pass --model" in default["grid"]["source"]


def test_tissue_options(synthetic_slide: Path, tiny_ckpt: Path, tmp_path: Path, capsys) -> None:
    base = [
        "caption",
        str(synthetic_slide),
        "--model",
        str(tiny_ckpt),
        "--quiet",
        "--no-cache",
        "--device",
        "cpu",
    ]
    assert main([*base, "--tissue-threshold", "0.95"]) == 1
    err = capsys.readouterr().err
    assert "no tissue detected" in err and "--tissue-threshold" in err and "Traceback" not in err
    out = tmp_path / "r.json"
    assert main([*base, "--min-tissue", "0.0", "--tissue-threshold", "0.1", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["num_patches"] >= 18


def test_progress_counts_epochs_not_steps(capsys: pytest.CaptureFixture) -> None:
    """Training progress reads "3.5/20 epochs [elapsed<remaining]": no per-step rate, no step-count ETA."""
    from napari_pathm3._cli.caption import _Bar
    from napari_pathm3._types import Progress, Stage

    bar = _Bar(disable=False)
    bar(Progress(Stage.REGIONS, 0, 1, detail="x.svs", demo=True))
    for step in range(1, 41):
        bar(Progress(Stage.TRAIN, step, 40, epoch=(step - 1) // 2 + 1, epochs=20, demo=True))
    tq = bar.bar  # one bar for the whole training, in epochs
    assert bar.stage == "demo model: training" and tq.total == 20 and tq.n == pytest.approx(20)
    assert "epochs" in tq.bar_format and "rate" not in tq.bar_format and tq.smoothing == 0
    bar.close()
    assert "demo model: training" in capsys.readouterr().err


def _pipeline(bar) -> list:
    from napari_pathm3._types import Progress, Stage
    from napari_pathm3.inference import STAGES

    seen = []
    for i, stage in enumerate(STAGES):
        bar(Progress(stage, i, len(STAGES)))
        seen.append((bar.stages.n, bar.stages.postfix) if bar.stages is not None else None)
        if stage is Stage.FEATURES:
            for done in (0, 50, 100):
                bar(Progress(Stage.EXTRACT, done, 100, within=Stage.FEATURES))
            assert (
                bar.bar.n == 100 and "{remaining}" in bar.bar.bar_format and "100/100 patches" in str(bar.bar)
            )
    bar(Progress(Stage.DONE, len(STAGES), len(STAGES)))
    return seen


def test_stage_counter_moves_and_stages_with_counts_show_time_left(
    capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stage line counts 0/5 … 5/5 as the pipeline moves (it stayed at ``tissue: 0/5`` … ``done: 0/5``);
    a stage that reports counts (feature extraction: patches) gets a bar with the time left. On a terminal
    the counter is a tqdm line above the stage's bar; in a log (CI), one line per stage."""
    from napari_pathm3._cli.progress import PIPELINE, StageProgress
    from napari_pathm3._types import Stage
    from napari_pathm3.inference import STAGES

    assert PIPELINE == (*STAGES, Stage.DONE)
    bar = StageProgress(disable=False)  # stderr captured: not a terminal
    assert _pipeline(bar) == [None] * 5 and bar.bar is None
    bar.close()
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("caption: ")]
    assert [ln.split(" stages")[0] for ln in lines] == [f"caption: {i}/5" for i in range(6)]
    assert lines[2].endswith(", features") and "[A" not in "".join(lines)

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    bar = StageProgress(disable=False)
    seen = _pipeline(bar)
    assert [n for n, _ in seen] == [0, 1, 2, 3, 4] and bar.stages.n == 5 and bar.bar is None
    assert [p for _, p in seen] == [str(s) for s in STAGES]  # shown as ", <stage>" after the count
    bar.close()
    err = capsys.readouterr().err
    assert "caption: 1/5 stages [00:00], patches" in err and "caption: 5/5 stages" in err
