"""The verdict against baselines (issue 21 item 5): a run whose captions are the stock sentence of its class and
a 1-epoch run both get a warning with the figures, and the figures reach the API, the CLI, inference and the
Train widget's verdict text."""

from __future__ import annotations

import json

import numpy as np

from napari_pathm3.config import AdamWConfig, PathM3Config, TrainConfig
from napari_pathm3.training.baselines import AbmilConfig
from napari_pathm3.training.data import SlideBag
from napari_pathm3.training.evaluate import Predictions
from napari_pathm3.training.validation import verdict_text
from napari_pathm3.training.verdict_baselines import DISAGREES, NOT_BEATING, judge_against_baselines

from .conftest import make_bags

CAPS = {
    0: ("one gland . benign .", "two glands . benign ."),
    1: ("one mitosis . malignant .", "three mitoses . malignant ."),
}


FAST = AbmilConfig(epochs=3, hidden=16, embed=8, attention=4)  # the caption checks need no trained ABMIL


def _bags(n: int, seed: int) -> list[SlideBag]:
    """Class = the shifted feature (easy for ABMIL); caption = a count that varies within the class."""
    out = []
    for i, b in enumerate(make_bags(n, seed=seed, shift=1.5)):
        out.append(SlideBag(b.features, b.label, CAPS[b.label][int((i // 2) % 3 == 2)], b.slide_id))
    return out


def _pred(val: list[SlideBag], captions: list[str], predicted: list[int]) -> Predictions:
    return Predictions(
        slide_ids=[b.slide_id for b in val],
        labels=np.asarray([b.label for b in val]),
        probabilities=np.eye(2)[predicted],
        references=[b.caption for b in val],
        captions=captions,
    )


def test_stock_sentence_captions_trigger_the_verdict_with_figures() -> None:
    train, val = _bags(16, 0), _bags(8, 1)
    truth = [b.label for b in val]
    stock = {0: "one gland . benign .", 1: "one mitosis . malignant ."}  # most frequent training caption
    v = judge_against_baselines(
        _pred(val, [stock[y] for y in truth], truth), train, val, num_classes=2, abmil=FAST
    )
    b = v["baselines"]
    assert b["bleu_4"] == b["stock_caption_bleu_4"] and b["caption_class_agreement"] == 1.0
    assert v["beats_baselines"] is False and b["beats_stock_caption"] is False
    (w,) = [w for w in v["warnings"] if "BLEU-4" in w]
    assert w.startswith(NOT_BEATING) and f"{b['bleu_4']:.3f}" in w and f"{b['stock_caption_bleu_4']:.3f}" in w
    # the references themselves beat the stock sentence: no caption warning; swapped classes disagree
    good = judge_against_baselines(
        _pred(val, [x.caption for x in val], truth), train, val, num_classes=2, abmil=FAST
    )
    assert not [w for w in good["warnings"] if "BLEU-4" in w] and good["baselines"]["beats_stock_caption"]
    swapped = [stock[1 - y] for y in truth]
    bad = judge_against_baselines(_pred(val, swapped, truth), train, val, num_classes=2, abmil=FAST)
    assert any(w.startswith(DISAGREES) and "agreement 0.00" in w for w in bad["warnings"])


def test_one_epoch_run_triggers_the_verdict_in_api_cli_inference_and_widget_text(tmp_path, capsys) -> None:
    from napari_pathm3.cli import main
    from napari_pathm3.inference import model_warnings
    from napari_pathm3.model import PathM3Model
    from napari_pathm3.training.loop import train

    train_bags, val_bags = _bags(24, 0), _bags(16, 1)
    cfg = PathM3Config.tiny(feature_dim=16, optim=AdamWConfig(batch_size=8))
    res = train(cfg, train_bags, val_bags, TrainConfig(epochs=1, device="cpu"), out_dir=tmp_path / "run")
    b = res.verdict["baselines"]
    assert b["abmil_accuracy"] >= 0.9 > b["accuracy"], b  # ABMIL learns the task; one epoch does not
    (w,) = [w for w in res.warnings if w.startswith(NOT_BEATING) and "ABMIL" in w]
    assert f"{b['accuracy']:.2f}" in w and f"{b['abmil_accuracy']:.2f}" in w
    stored = json.loads((tmp_path / "run" / "best" / "training_verdict.json").read_text())
    assert stored["baselines"] == b and stored["beats_baselines"] is False
    loaded = PathM3Model.from_pretrained(tmp_path / "run" / "best", device="cpu")
    assert w in model_warnings(loaded)  # SlideResult.warnings: the API and the Caption widget show it
    text = verdict_text(res.verdict)
    assert "ABMIL" in text and f"{b['abmil_accuracy']:.2f}" in text and "does NOT beat them" in text
    # the CLI: the same run through `napari-pathm3 train` prints the warning in its summary
    feats = tmp_path / "feats"
    feats.mkdir()
    rows = ["slide,label,caption,split"]
    for split, bags in (("train", train_bags), ("val", val_bags)):
        for bag in bags:
            np.save(feats / f"{split}{bag.slide_id}.npy", bag.features)
            rows.append(f"{split}{bag.slide_id},{'ab'[bag.label]},{bag.caption},{split}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    args = [
        "train",
        "--manifest",
        str(tmp_path / "m.csv"),
        "--features",
        str(feats),
        "--out",
        str(tmp_path / "cli"),
    ]
    assert main([*args, "--tiny", "--epochs", "1", "--device", "cpu"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert any(x.startswith(NOT_BEATING) and "ABMIL" in x for x in summary["warnings"]), summary["warnings"]


def test_typed_verdict_carries_the_baselines() -> None:
    from napari_pathm3.model.verdict import TrainingVerdict

    v = TrainingVerdict.from_dict(
        {"beats_baselines": False, "baselines": {"abmil_accuracy": 0.9}, "warnings": ["w"]}
    )
    assert v.beats_baselines is False and v.baselines == {"abmil_accuracy": 0.9}
    assert (
        TrainingVerdict.from_dict({}).beats_baselines is None
        and TrainingVerdict.from_dict({}).baselines == {}
    )
    assert TrainingVerdict.from_dict(v.to_dict()) == v
