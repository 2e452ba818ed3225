"""``train --protocol patchgastric --size paper`` says what it ran: the table's header records the preset, α, the
contrastive weight, the image-only-path switch and the Q-Former initialisation, and its rows hold the shortcut
baselines; a run with another preset says loudly that its objective is not the paper's.

The paper preset is 768 wide with FlanT5-XL; the test shrinks its *sizes* to the tiny ones (its objective
switches, optimiser rules and schedule stay the preset's) and passes a tiny BLIP-2 saved offline."""

# ruff: noqa: F811 - synthetic_pg is a fixture imported from test_protocol_variants
from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path

import pytest

from napari_pathm3.cli import main
from napari_pathm3.config import PathM3Config, TrainConfig

from .test_protocol_variants import synthetic_pg  # noqa: F401 - the module-scoped fixture

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "model"))
from test_blip2_init import save_tiny_blip2  # noqa: E402


@pytest.fixture
def small_paper_preset(monkeypatch):
    """``PathM3Config.preset("paper")`` at tiny sizes: every other field is the real preset's."""
    original = PathM3Config.preset.__func__

    def preset(cls, size, **kw):
        real = original(cls, size, **kw)
        if size != "paper":
            return real
        tiny = cls.tiny(feature_dim=kw["feature_dim"], class_names=kw["class_names"])
        return dataclasses.replace(
            real,
            correlation=dataclasses.replace(tiny.correlation, attention=real.correlation.attention),
            qformer=tiny.qformer,
            language=dataclasses.replace(tiny.language, name=real.language.name, max_caption_tokens=8),
        )

    monkeypatch.setattr(PathM3Config, "preset", classmethod(preset))


def _argv(pg, out, *extra):
    return [
        "train",
        "--protocol",
        "patchgastric",
        "--features",
        str(pg / "features"),
        "--captions",
        str(pg / "captions.csv"),
        "--out",
        str(out),
        "--seeds",
        "0",
        "--epochs",
        "1",
        "--patience",
        "0",
        "--device",
        "cpu",
        *extra,
    ]


def test_paper_protocol_header_and_shortcuts(tmp_path, synthetic_pg, small_paper_preset, capsys):
    save_tiny_blip2(tmp_path / "blip2")
    capsys.readouterr()  # transformers' save progress
    argv = _argv(synthetic_pg, tmp_path / "run", "--size", "paper", "--lm", "scratch")
    rc = main([*argv, "--qformer-init", str(tmp_path / "blip2"), "--variants", "image_text"])
    assert rc == 0
    captured = capsys.readouterr()
    table = (tmp_path / "run" / "table.txt").read_text()
    first = table.splitlines()[0]
    assert captured.out.splitlines()[0] == first  # the printed table starts with the same line
    assert captured.err.startswith(f"napari-pathm3 train: {first}")  # and so does the run, before training
    for part in (
        "preset paper",
        "alpha 0.5",
        "contrastive 0 ",
        "image-only path off",
        f"Q-Former init {tmp_path / 'blip2'}",
        "attention nystrom",
        "decay lavis",
        "lr lavis",
        "captions paper",
        "seed 0",
        "napari-pathm3 ",
    ):
        assert part in first, part
    # the one switch this test changes (a scratch LM instead of FlanT5-XL) is named as a deviation
    assert (
        table.splitlines()[1]
        == "differs from the paper: language_model 'scratch' (paper: 'google/flan-t5-xl')"
    )
    for row in (
        "test captions verbatim in training",
        "caption-lookup label accuracy",
        "most-frequent caption BLEU@4",
        "true class's top caption BLEU@4",
        "nearest-neighbour caption BLEU@4",
        "shortcut: predicted class's caption BLEU@4",
    ):
        assert row in table, row
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["provenance"]["contrastive_weight"] == 0.0 and results["provenance"]["seed"] == [0]
    assert {"caption_lookup_accuracy", "nn_label_accuracy", "verbatim_overlap"} <= set(
        results["shortcuts"][0]
    )
    # the checkpoint says the same, and which BLIP-2 tensors it took
    saved = json.loads((tmp_path / "run" / "seed0" / "image_text" / "best" / "config.json").read_text())
    prov = saved["provenance"]
    assert (prov["preset"], prov["image_only_path"], prov["mode"]) == ("paper", False, "image_text")
    assert (
        prov["qformer_init"] == str(tmp_path / "blip2")
        and "tensors from BLIP-2" in prov["qformer_init_detail"]
    )


def test_other_presets_say_loudly_they_are_not_the_paper(tmp_path, synthetic_pg, capsys):
    rc = main(
        [*_argv(synthetic_pg, tmp_path / "run", "--size", "tiny"), "--variants", "image", "--no-generate"]
    )
    assert rc == 0
    err = capsys.readouterr().err
    warning = next(line for line in err.splitlines() if "WARNING" in line)
    assert "not the paper's objective" in warning and "pass --size paper" in warning
    assert "image_only_path True" in warning and "qformer_init 'random'" in warning
    assert (tmp_path / "run" / "table.txt").read_text().startswith("run: preset tiny")


def test_paper_preset_offline_names_the_download(
    tmp_path, synthetic_pg, small_paper_preset, capsys, monkeypatch
):
    import huggingface_hub

    def offline(*args, **kwargs):
        raise huggingface_hub.errors.LocalEntryNotFoundError("offline")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    rc = main(
        [*_argv(synthetic_pg, tmp_path / "run", "--size", "paper", "--lm", "scratch"), "--variants", "image"]
    )
    assert rc == 1
    err = [line for line in capsys.readouterr().err.splitlines() if "BLIP-2" in line]
    assert len(err) == 1 and "hf download Salesforce/blip2-flan-t5-xl" in err[0]


def test_training_follows_the_lavis_schedule(tmp_path, bag_factory):
    from napari_pathm3.training.loop import train

    paper = PathM3Config.preset("paper", feature_dim=16, encoder_name="", class_names=("a", "b"))
    cfg = PathM3Config.tiny(feature_dim=16, class_names=("a", "b"))
    cfg = dataclasses.replace(
        cfg,
        preset_name="paper",
        train_image_only_path=False,
        optim=dataclasses.replace(paper.optim, batch_size=4),
    )
    tcfg = TrainConfig.preset("paper", epochs=3, batch_size=4, patience=None, device="cpu")
    res = train(cfg, bag_factory(8, seed=0, dim=16), None, tcfg, out_dir=tmp_path)
    lrs = [r["lr"] for r in res.history]  # lr of each epoch's last step; 2 steps per epoch
    assert lrs[0] == pytest.approx(1e-5 + (1e-4 - 1e-5) * 1 / 1000)  # still warming up: epoch 0 is short
    assert lrs[1] == pytest.approx(1e-4 * 0.5 * (1 + math.cos(math.pi / 3)))
    assert lrs[2] == pytest.approx(1e-4 * 0.5 * (1 + math.cos(2 * math.pi / 3)))
    prov = json.loads((tmp_path / "best" / "config.json").read_text())["provenance"]
    assert prov["preset"] == "paper" and prov["lr_schedule"] == "lavis" and prov["image_only_path"] is False


def test_provenance_reaches_evaluate_and_caption(tmp_path, bag_factory):
    import numpy as np

    from napari_pathm3.inference import caption_feature_bag
    from napari_pathm3.jobs import CaptionRequest
    from napari_pathm3.training.evaluate import evaluate_model
    from napari_pathm3.training.loop import train

    cfg = PathM3Config.preset("tiny", feature_dim=16, encoder_name="", class_names=("a", "b"))
    bags = bag_factory(4, seed=1, dim=16)
    tcfg = TrainConfig(epochs=1, batch_size=4, patience=None, device="cpu", seed=7)
    res = train(cfg, bags, None, tcfg, out_dir=tmp_path / "run", caption_style="raw")
    metrics = evaluate_model(res.best_dir, bags, generate=False, device="cpu")
    prov = metrics["provenance"]
    assert (prov["preset"], prov["seed"], prov["caption_style"], prov["contrastive_weight"]) == (
        "tiny",
        7,
        "raw",
        0.0,
    )
    assert prov["image_only_path"] is True and prov["qformer_init"] == "random"
    assert prov["code_version"].startswith("napari-pathm3 ") and prov["evaluated_mode"] == "image_text"
    np.save(tmp_path / "bag.npy", bags[0].features)
    request = CaptionRequest(model=res.best_dir, device="cpu")
    result = caption_feature_bag(tmp_path / "bag.npy", request)
    assert result.summary()["provenance"]["seed"] == 7 and result.provenance["preset"] == "tiny"
