"""Issue 11: word vocabulary and spacing, selection on both heads, early stopping floor, the training verdict,
size presets and one-line errors of ``napari-pathm3 train``, captioning a feature bag."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from napari_pathm3 import api
from napari_pathm3.cli import main
from napari_pathm3.config import AdamWConfig, PathM3Config, TrainConfig
from napari_pathm3.model.language import build_word_tokenizer
from napari_pathm3.training.evaluate import Predictions
from napari_pathm3.training.loop import train
from napari_pathm3.training.verdict import NOT_CAPTIONING, NOT_CLASSIFYING, VERDICT_NAME, judge

from .conftest import make_bags


def test_word_tokenizer_keeps_reference_spacing():
    tok = build_word_tokenizer(["small ducts . are seen", "no ducts ."])
    ids = tok("small ducts . foo", add_special_tokens=False)["input_ids"]
    assert tok.unk_token_id == ids[-1] and len(tok) == 4 + 6  # specials + the caption words
    text = tok.decode(
        ids[:3] + [tok.eos_token_id], skip_special_tokens=True, clean_up_tokenization_spaces=False
    )
    assert text == "small ducts ."


def _words_cfg(**kw):
    cfg = PathM3Config.preset("tiny", feature_dim=16, encoder_name="", class_names=("a", "b"))
    return PathM3Config.from_dict({**cfg.to_dict(), **kw}) if kw else cfg


def test_word_vocabulary_model_saves_and_reloads_offline(tmp_path, bag_factory):
    res = train(
        _words_cfg(),
        bag_factory(8, seed=0),
        None,
        TrainConfig(epochs=1, batch_size=4, device="cpu"),
        out_dir=tmp_path,
    )
    vocab = res.model.lm_tokenizer.get_vocab()
    assert "glands" in vocab and len(vocab) < 20  # the captions' words, not a 30k WordPiece table
    from napari_pathm3.model import PathM3Model

    back = PathM3Model.from_pretrained(tmp_path / "best")
    assert back.lm_tokenizer.get_vocab() == vocab
    assert (tmp_path / "best" / VERDICT_NAME).is_file()


def test_early_stopping_waits_for_min_epochs_and_best_uses_both_heads(tmp_path, bag_factory):
    tr, va = bag_factory(8, seed=0), bag_factory(4, seed=1)
    cfg = TrainConfig(epochs=5, batch_size=4, patience=1, min_epochs=4, device="cpu", min_delta=10.0)
    res = train(_words_cfg(), tr, va, cfg, out_dir=tmp_path)
    assert res.epochs_run == 4 and res.stopped_early  # patience 1 would have stopped after epoch 2
    rec = res.history[0]
    assert {"val_bleu_4", "val_combined", "val_distinct_captions"} <= set(rec)
    assert rec["val_combined"] == pytest.approx(0.5 * (rec["val_accuracy"] + rec["val_bleu_4"]))
    assert res.best_epoch == 1 and res.best_metric == pytest.approx(rec["val_combined"])


def _pred(labels, probs, refs, caps):
    return Predictions(
        slide_ids=[str(i) for i in range(len(labels))],
        labels=np.asarray(labels),
        probabilities=np.asarray(probs, float),
        references=refs,
        captions=caps,
    )


def test_verdict_flags_chance_and_collapsed_captions():
    bad = judge(
        _pred([0, 1, 0, 1], [[0.6, 0.4]] * 4, ["a x", "b y", "a x", "b y"], ["a x"] * 4),
        where="validation",
        captions_trained=True,
    )
    assert not bad["learned_to_classify"] and not bad["learned_to_caption"]
    assert bad["warnings"][0].startswith(NOT_CLASSIFYING) and bad["warnings"][1].startswith(NOT_CAPTIONING)
    good = judge(
        _pred([0, 1, 0, 1], [[0.9, 0.1], [0.1, 0.9]] * 2, ["a x", "b y"] * 2, ["a x", "b y"] * 2),
        where="validation",
        captions_trained=True,
    )
    assert good["learned_to_classify"] and good["learned_to_caption"] and good["warnings"] == []


def _h5_bag(path, feats):
    with h5py.File(path, "w") as fh:
        fh.create_dataset("features", data=feats)
        fh.create_dataset("coords", data=np.stack([np.arange(len(feats)) * 224, np.zeros(len(feats))], 1))
        fh.attrs["patch_size"] = 224
    return path


def test_caption_feature_bag_shows_the_verdict(tmp_path, bag_factory, capsys):
    from napari_pathm3.model import build_model

    model = build_model(PathM3Config.tiny(feature_dim=16, optim=AdamWConfig(batch_size=4))).eval()
    ckpt = tmp_path / "ckpt"
    model.save_pretrained(ckpt)
    bag = _h5_bag(tmp_path / "slide_1.h5", bag_factory(1, seed=0)[0].features)
    res = api.caption_slide(bag, model=str(ckpt), device="cpu")
    assert res.num_patches == len(h5py.File(bag)["features"]) and res.warnings == ()
    assert set(res.probabilities) == {"a", "b"} and res.attention.shape == (res.num_patches,)
    warning = f"{NOT_CAPTIONING}: it writes the same caption for all 4 validation bags ('x')"
    # the typed field decides; the warning is only the sentence shown beside it
    (ckpt / VERDICT_NAME).write_text(json.dumps({"learned_to_caption": False, "warnings": [warning]}))
    res = api.caption_slide(bag, model=str(ckpt), device="cpu")
    assert res.caption == NOT_CAPTIONING and res.warnings == (warning,) and res.caption_withheld
    out = tmp_path / "r.json"
    assert main(["caption", str(bag), "--model", str(ckpt), "--out", str(out), "--device", "cpu"]) == 0
    data = json.loads(out.read_text())
    assert data["caption"] == NOT_CAPTIONING and data["warnings"] == [warning]


def _manifest(tmp_path, labels):
    feats = tmp_path / "feats"
    feats.mkdir()
    rows = ["slide,label,caption"]
    for i, bag in enumerate(make_bags(len(labels), seed=0)):
        np.save(feats / f"b{i}.npy", bag.features)
        rows.append(f"b{i},{labels[i]},some words .")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    return [
        "train",
        "--manifest",
        str(tmp_path / "m.csv"),
        "--features",
        str(feats),
        "--out",
        str(tmp_path / "r"),
    ]


def test_train_one_class_is_one_line_error(tmp_path, capsys):
    assert main(_manifest(tmp_path, ["a"] * 4)) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "at least two classes" in err


def test_train_paper_size_offline_is_one_line_error(tmp_path, capsys):
    assert main([*_manifest(tmp_path, ["a", "b"] * 2), "--size", "paper", "--device", "cpu"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "google/flan-t5-xl" in err and "--size small" in err


def test_train_default_size_is_offline_small(tmp_path, capsys):
    args = [*_manifest(tmp_path, ["a", "b"] * 4), "--epochs", "1", "--device", "cpu", "--val-fraction", "0.5"]
    assert main(args) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    cfg = json.loads((tmp_path / "r" / "best" / "config.json").read_text())
    assert cfg["qformer"]["hidden_size"] == 128 and cfg["language"]["tokenizer"] == "words"
    assert "epoch 1:" in captured.err and "val_acc=" in captured.err  # one line per epoch, not a tty
    assert isinstance(summary["warnings"], list)


def test_generate_no_repeat_ngrams_and_beams(bag_factory):
    import torch

    from napari_pathm3.model import PathM3Model

    torch.manual_seed(0)
    words = build_word_tokenizer([" ".join(f"w{i}" for i in range(40))])
    model = PathM3Model(_words_cfg(), lm_tokenizer=words).eval()
    feats = torch.from_numpy(bag_factory(1, seed=0)[0].features)[None]
    plain = model.generate_captions(feats, max_new_tokens=12)[0].split()
    caps = model.generate_captions(feats, no_repeat_ngram_size=1, max_new_tokens=12)[0].split()
    assert len(caps) == len(set(caps)) and (len(plain) > len(set(plain)) or plain == caps)  # no word twice
    beams = model.generate_captions(feats, num_beams=3, length_penalty=2.0, no_repeat_ngram_size=2)
    assert isinstance(beams[0], str)


def test_verdict_of_text_only_model_uses_text_conditioned_outputs():
    from napari_pathm3.training.evaluate import Predictions

    pred = Predictions(
        slide_ids=["a", "b", "c", "d"],
        labels=np.array([0, 1, 0, 1]),
        probabilities=np.full((4, 2), np.nan),  # a text-only model has no image-only outputs
        references=["x", "y", "x", "y"],
        text_probabilities=np.array([[0.9, 0.1], [0.1, 0.9]] * 2),
        mode="text",
    )
    verdict = judge(pred, where="validation", captions_trained=False)
    assert verdict["learned_to_classify"] and verdict["accuracy"] == 1.0 and verdict["warnings"] == []
