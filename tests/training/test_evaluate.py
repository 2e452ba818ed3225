"""``evaluate``: the plain classification keys are image-only; text-conditioned results have their own keys."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from napari_pathm3.config import PathM3Config
from napari_pathm3.training.data import SlideBag, collate_bags
from napari_pathm3.training.evaluate import evaluate_model, metrics_of, predict

from .conftest import make_bags

PLAIN = ("accuracy", "balanced_accuracy", "macro_f1", "auc", "confusion_matrix")


def _model(mode: str, seed: int = 0):
    from napari_pathm3.model import build_model

    torch.manual_seed(seed)
    return build_model(PathM3Config.tiny(feature_dim=16, mode=mode), device="cpu").eval()


def _classify(model, bags, text):
    b = collate_bags(bags)
    return model.classify(b.features, b.mask, text=text).probabilities.numpy()


def test_image_text_model_headline_is_image_only():
    model = _model("image_text")
    bags = make_bags(6, seed=3)
    pred = predict(model, bags, batch_size=3, device="cpu", bf16=False)
    with torch.no_grad():
        image_only = np.concatenate([_classify(model, bags[i : i + 3], None) for i in (0, 3)])
        with_text = np.concatenate(
            [_classify(model, bags[i : i + 3], [b.caption for b in bags[i : i + 3]]) for i in (0, 3)]
        )
    assert not np.allclose(image_only, with_text, atol=1e-4)  # the text does change this model's output
    np.testing.assert_allclose(pred.probabilities, image_only, atol=1e-5)
    np.testing.assert_allclose(pred.text_probabilities, with_text, atol=1e-5)
    m = metrics_of(pred, 2)
    assert m["accuracy"] == pytest.approx(float((image_only.argmax(1) == pred.labels).mean()))
    assert m["text_conditioned_accuracy"] == pytest.approx(float((with_text.argmax(1) == pred.labels).mean()))
    assert m["text_conditioned_n"] == 6


def test_evaluate_model_keys_and_captionless_bags():
    model = _model("image_text")
    bags = make_bags(5, seed=4)
    bags[1] = dataclasses.replace(bags[1], caption=None)  # no caption: image-only only
    m = evaluate_model(model, bags, generate=False, device="cpu", return_predictions=True)
    assert set(PLAIN) <= set(m) and m["n"] == 5
    assert sum(map(sum, m["confusion_matrix"])) == 5  # image-only: every labelled bag
    assert m["text_conditioned_n"] == 4 and sum(map(sum, m["text_conditioned_confusion_matrix"])) == 4
    assert m["classification_inputs"].startswith("image only")
    assert "reference caption" in m["text_conditioned_inputs"]
    rows = m["predictions"]
    assert rows[1]["text_conditioned_probabilities"] is None and rows[1]["probabilities"] is not None


def test_image_model_has_no_text_conditioned_keys():
    m = evaluate_model(_model("image"), make_bags(4, seed=5), generate=False, device="cpu")
    assert set(PLAIN) <= set(m)
    assert not any(k.startswith("text_conditioned") for k in m)


def test_text_only_model_has_no_image_only_keys():
    m = evaluate_model(_model("text"), make_bags(4, seed=6), generate=False, device="cpu")
    assert not set(PLAIN) & set(m)  # it cannot classify an image: nothing to put under the plain keys
    assert 0.0 <= m["text_conditioned_accuracy"] <= 1.0 and m["text_conditioned_n"] == 4
    assert m["classification_inputs"].startswith("none")


def test_mode_override_adds_text_conditioned_keys_to_image_text_checkpoint(tmp_path):
    model = _model("image_text")
    model.save_pretrained(tmp_path / "ckpt")
    bags = make_bags(4, seed=7)
    m = evaluate_model(tmp_path / "ckpt", bags, mode="image", generate=False, device="cpu")
    assert m["mode"] == "image" and "text_conditioned_accuracy" not in m
    m2 = evaluate_model(tmp_path / "ckpt", bags, generate=False, device="cpu")
    assert m2["accuracy"] == pytest.approx(m["accuracy"])  # same image-only path either way


def test_caption_metrics_use_the_requested_tokenizer():
    bags = [SlideBag(np.ones((3, 16), np.float32), 0, "Small ducts .", "s0")]
    model = _model("image")
    m = evaluate_model(model, bags, device="cpu", generate_kwargs={"max_new_tokens": 3})
    assert m["caption_tokenizer"] == "paper"
    assert {"bleu_4", "meteor_nltk", "rouge_l", "cider_d"} <= set(m) and "spice" not in m


def test_evaluate_cli_headline_first_text_conditioned_last(tmp_path, capsys):
    import json

    from napari_pathm3.cli import main

    _model("image_text").save_pretrained(tmp_path / "ckpt")
    feats = tmp_path / "feats"
    feats.mkdir()
    rows = ["slide,label,caption"]
    for bag in make_bags(4, seed=8):
        np.save(feats / f"{bag.slide_id}.npy", bag.features)
        rows.append(f"{bag.slide_id},{'ab'[bag.label]},{bag.caption}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    rc = main(
        [
            "evaluate",
            str(tmp_path / "ckpt"),
            "--manifest",
            str(tmp_path / "m.csv"),
            "--features",
            str(feats),
            "--device",
            "cpu",
            "--no-generate",
        ]
    )
    assert rc == 0
    keys = list(json.loads(capsys.readouterr().out))
    assert keys[:5] == ["mode", "classification_inputs", "n", "loss", "accuracy"]
    tc = [i for i, k in enumerate(keys) if k.startswith("text_conditioned_")]
    assert tc and tc == list(range(tc[0], len(keys)))  # all text-conditioned keys come last
