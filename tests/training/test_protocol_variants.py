"""Every ``--protocol patchgastric`` variant (a row of the paper's Tables 1-4) runs on a small synthetic
PatchGastric look-alike: a captions.csv in the published layout and one ``.npy`` feature file per slide."""

from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest

from napari_pathm3.config import AdamWConfig, PathM3Config, TrainConfig
from napari_pathm3.errors import PathM3Error
from napari_pathm3.training.protocol import VARIANTS, run_patchgastric, variant_configs

SUBTYPES = (
    "Well differentiated tubular adenocarcinoma",
    "Moderately differentiated tubular adenocarcinoma",
    "Poorly differentiated adenocarcinoma, solid type",
)
DESCRIPTIONS = ("large ducts are seen.", "small irregular ducts are seen.", "solid sheets of cells are seen.")
HAS_SWITCH = "use_correlation" in {f.name for f in dataclasses.fields(PathM3Config)}


@pytest.fixture(scope="module")
def synthetic_pg(tmp_path_factory):
    """15 slides, 5 per class: captions end with the subtype sentence, features carry the class in dim 0."""
    root = tmp_path_factory.mktemp("pg")
    feats = root / "features"
    feats.mkdir()
    rng = np.random.default_rng(0)
    with (root / "captions.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "subtype", "text"])
        for i in range(15):
            c = i % 3
            sid = f"{i:032x}"
            w.writerow([sid, SUBTYPES[c], f"Tumor tissue with {DESCRIPTIONS[c]} {SUBTYPES[c]}."])
            f = rng.normal(size=(int(rng.integers(4, 9)), 16)).astype(np.float32)
            f[:, 0] += 2.0 * (c - 1)
            np.save(feats / f"{sid}.npy", f)
    return root


def _configs():
    optim = AdamWConfig(lr=3e-3, warmup_lr=1e-4, warmup_steps=10, batch_size=3)
    model = PathM3Config.tiny(feature_dim=16, class_names=("x", "y", "z"), optim=optim)
    return model, TrainConfig(epochs=1, patience=None, device="cpu", bf16=False)


def _needs_switch(name):
    return pytest.mark.skipif(
        not VARIANTS[name].use_correlation and not HAS_SWITCH,
        reason="PathM3Config.use_correlation arrives with the model branch",
    )


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=_needs_switch(n)) for n in VARIANTS if not VARIANTS[n].captions]
)
def test_classification_variants_run(tmp_path, synthetic_pg, name):
    model, train = _configs()
    res = run_patchgastric(
        synthetic_pg / "features",
        out_dir=tmp_path,
        captions_csv=synthetic_pg / "captions.csv",
        model_config=model,
        train_config=train,
        seeds=(0,),
        variants=(name,),
    )
    (run,) = res.runs[name]
    key = VARIANTS[name].row_metric
    assert 0.0 <= run[key] <= 1.0 and res.summary[name][key][0] == pytest.approx(run[key])
    if VARIANTS[name].mode == "text":
        assert "accuracy" not in run and run["text_conditioned_n"] == 6
    else:
        assert run["n"] == 6 and sum(map(sum, run["confusion_matrix"])) == 6
    saved = json.loads((tmp_path / "seed0" / name / "best" / "config.json").read_text())
    assert saved["mode"] == VARIANTS[name].mode
    if VARIANTS[name].alpha is not None:
        assert saved["alpha"] == VARIANTS[name].alpha
    if HAS_SWITCH:
        assert saved["use_correlation"] == VARIANTS[name].use_correlation


@pytest.mark.parametrize("name", ["image_text", "captions_single_task"])
def test_caption_variants_report_caption_metrics(tmp_path, synthetic_pg, name):
    model, train = _configs()
    model = dataclasses.replace(
        model, language=dataclasses.replace(model.language, max_caption_tokens=8)
    )  # short generation
    res = run_patchgastric(
        synthetic_pg / "features",
        out_dir=tmp_path,
        captions_csv=synthetic_pg / "captions.csv",
        model_config=model,
        train_config=train,
        seeds=(0,),
        variants=(name,),
    )
    (run,) = res.runs[name]
    assert {"bleu_4", "meteor_nltk", "rouge_l", "cider_d", "caption_tokenizer"} <= set(run)
    if name == "image_text":
        assert {"accuracy", "text_conditioned_accuracy"} <= set(run)  # both, under their own names
    out = json.loads((tmp_path / "results.json").read_text())
    assert out["captions"] == "paper" and "subtype sentence" in out["captions_preprocessing"]
    assert out["variants"][name]["row_metric"] == VARIANTS[name].row_metric
    table = (tmp_path / "table.txt").read_text()
    lines = table.splitlines()
    # what ran comes first (preset, switches, code version), then how it differs from the paper
    assert lines[0].startswith("run: preset custom") and "contrastive 0" in lines[0] and "seed 0" in lines[0]
    assert lines[1].startswith("differs from the paper: ") and "image_only_path True" in lines[1]
    assert lines[2].startswith("split: stratified") and lines[3].startswith("captions: paper")
    assert "keyword rule" in table and "BLEU@4" in table
    assert out["provenance"]["caption_style"] == "paper" and out["deviations_from_paper"]
    # the shortcuts beside the model (the synthetic captions repeat per class: every test caption is known)
    assert "shortcut (no model)" in table and out["shortcut_summary"]["verbatim_overlap"][0] == 1.0
    if name == "image_text":
        assert "predicted_class_caption_bleu_4" in run


def test_caption_style_changes_the_leak_and_is_stated(tmp_path, synthetic_pg, monkeypatch):
    import napari_pathm3.training.evaluate as ev
    import napari_pathm3.training.loop as lp

    seen = []

    class _Res:
        best_dir = "unused"

    monkeypatch.setattr(lp, "train", lambda m, tr, va, cfg, **kw: seen.append((m, tr, cfg)) or _Res())
    monkeypatch.setattr(ev, "evaluate_model", lambda *a, **kw: {"accuracy": 0.5})
    model, train = _configs()
    kw = dict(captions_csv=synthetic_pg / "captions.csv", model_config=model, train_config=train, seeds=(0,))
    raw = run_patchgastric(synthetic_pg / "features", out_dir=tmp_path / "r", captions="raw", **kw)
    paper = run_patchgastric(synthetic_pg / "features", out_dir=tmp_path / "p", **kw)
    assert raw.keyword_rule_accuracy == 1.0 and paper.keyword_rule_accuracy < 1.0  # sentence gone
    assert all(r.caption.startswith("Tumor") for r in seen[0][1])  # raw text, as published
    assert all(r.caption.startswith("tumor") and "adenocarcinoma" not in r.caption for r in seen[2][1])
    assert json.loads((tmp_path / "r" / "results.json").read_text())["captions"] == "raw"
    seen.clear()
    if HAS_SWITCH:
        run_patchgastric(synthetic_pg / "features", out_dir=tmp_path / "a", variants=("all",), **kw)
        assert [cfg.mode for _, _, cfg in seen] == [v.mode for v in VARIANTS.values()]
    else:
        with pytest.raises(PathM3Error, match="use_correlation"):
            run_patchgastric(synthetic_pg / "features", out_dir=tmp_path / "a", variants=("all",), **kw)
    with pytest.raises(PathM3Error, match="unknown protocol variant"):
        run_patchgastric(synthetic_pg / "features", out_dir=tmp_path / "x", variants=("image_only",), **kw)


def test_variant_configs():
    model, train = _configs()
    m, t = variant_configs(VARIANTS["text"], model, train, seed=2)
    assert (t.mode, t.alpha, t.seed, t.val_metric) == ("text", 1.0, 2, "text_conditioned_accuracy")
    m, t = variant_configs(VARIANTS["image"], model, train, seed=0)
    # α and the validation metric: the configured ones (the default "combined" covers both heads)
    assert (t.mode, t.alpha, t.val_metric) == ("image", None, train.val_metric)
    m, t = variant_configs(VARIANTS["captions_single_task"], model, train, seed=0)
    assert (t.alpha, t.val_metric) == (0.0, "loss")
    if HAS_SWITCH:
        m, _ = variant_configs(VARIANTS["image_no_correlation"], model, train, seed=0)
        assert m.use_correlation is False
    else:
        with pytest.raises(PathM3Error, match="use_correlation"):
            variant_configs(VARIANTS["image_no_correlation"], model, train, seed=0)
