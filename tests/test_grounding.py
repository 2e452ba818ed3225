"""Word -> region and phrase -> region maps (napari_pathm3.grounding, model/grounding.py) and their outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_pathm3.grounding import caption_class_agreement, phrase_map, word_maps
from napari_pathm3.model import grounding as g


@pytest.fixture(scope="module")
def tiny_model():
    from napari_pathm3.config import PathM3Config
    from napari_pathm3.model import build_model

    torch.manual_seed(0)
    cfg = PathM3Config.tiny(feature_dim=12, class_names=("tumour", "normal"))
    cfg = type(cfg)(**{**cfg.__dict__, "itc_weight": 0.5})
    return build_model(cfg).eval()


def test_query_pass_reproduces_the_qformer(tiny_model) -> None:
    x = torch.randn(1, 37, 12)
    with torch.no_grad():
        out = tiny_model(x)
    qp = g.query_pass(tiny_model, x)
    assert torch.allclose(qp.query_output, out.query_output, atol=1e-5)


def test_patch_relevance_splits_the_query_gradient(tiny_model) -> None:
    """Σ_n R(t, n) = Σ_layers ⟨g_t, context⟩: gradient x attention is conservative over the patches."""
    x = torch.randn(1, 23, 12)
    qp = g.query_pass(tiny_model, x)
    grads = [torch.randn(3, *c.shape[1:]) for c in qp.contexts]
    rel = g.patch_relevance(tiny_model, qp, grads, chunk_size=5)  # several chunks
    expect = sum((gr * c).sum(dim=(1, 2)) for gr, c in zip(grads, qp.contexts, strict=True))
    assert rel.shape == (3, 23)
    assert torch.allclose(rel.sum(dim=1), expect, rtol=1e-4, atol=1e-5)


def test_singleton_scores_each_patch_as_its_own_bag(tiny_model) -> None:
    x = torch.randn(1, 7, 12)
    ids, lp = g.singleton_log_probs(tiny_model, x, "tumour cells", batch=3)
    assert lp.shape == (len(ids), 7)
    with torch.no_grad():
        z = tiny_model(x[:, 4:5]).query_output
        direct = g._token_log_probs(tiny_model, tiny_model.language_projection(z), torch.tensor(ids))[0]
    torch.testing.assert_close(lp[:, 4], direct, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", ["singleton", "gradient x attention"])
def test_word_maps_are_distributions_one_per_word(tiny_model, method: str) -> None:
    feats = np.random.default_rng(0).normal(size=(30, 12)).astype(np.float32)
    caption = (
        tiny_model.generate_captions(torch.from_numpy(feats)[None], max_new_tokens=6)[0] or "tumour cells"
    )
    maps = word_maps(tiny_model, feats, caption, method=method)
    assert maps.method == method
    assert maps.words == tuple(caption.split())
    assert maps.maps.shape == (len(caption.split()), 30)
    np.testing.assert_allclose(maps.maps.sum(axis=1), 1.0, rtol=1e-5)
    assert (maps.maps >= 0).all() and np.isfinite(maps.log_probs).all()
    assert len(maps.summary()) == len(maps.words)


@pytest.mark.parametrize("method", ["singleton", "lm", "itc", "joint"])
def test_phrase_map_methods(tiny_model, method: str) -> None:
    feats = np.random.default_rng(1).normal(size=(19, 12)).astype(np.float32)
    pm = phrase_map(tiny_model, feats, "solid nests", method=method)
    assert pm.values.shape == (19,) and pm.method == method
    np.testing.assert_allclose(pm.values.sum(), 1.0, rtol=1e-5)


def test_phrase_map_rejects_bad_input(tiny_model) -> None:
    feats = np.zeros((4, 12), np.float32)
    with pytest.raises(ValueError, match="empty"):
        phrase_map(tiny_model, feats, "   ")
    with pytest.raises(ValueError, match="unknown"):
        phrase_map(tiny_model, feats, "x", method="nope")


def test_token_words_groups_subwords() -> None:
    text = "poorly differentiated adeno"
    offsets = [(0, 6), (7, 13), (13, 21), (22, 27)]
    assert g.token_words(text, offsets, 4) == [0, 1, 1, 2]
    assert g.token_words(text, None, 3) == [0, 1, 2]


@pytest.mark.parametrize(
    ("caption", "label", "agrees", "named"),
    [
        (
            "poorly differentiated adenocarcinoma with solid nests",
            "poorly differentiated adenocarcinoma",
            True,
            True,
        ),
        ("well differentiated tubular adenocarcinoma .", "poorly differentiated adenocarcinoma", False, True),
        ("glands and stroma", "poorly differentiated adenocarcinoma", None, False),
    ],
)
def test_caption_class_agreement(caption: str, label: str, agrees: bool | None, named: bool) -> None:
    names = (
        "well differentiated tubular adenocarcinoma",
        "poorly differentiated adenocarcinoma",
    )
    out = caption_class_agreement(caption, label, names)
    assert out["agrees"] is agrees and (out["caption_class"] is not None) is named
    if agrees is False:
        assert "disagree" in out["note"]


def test_cli_writes_word_and_phrase_maps(synthetic_slide: Path, tmp_path: Path) -> None:
    from napari_pathm3.cli import main
    from napari_pathm3.config import PathM3Config
    from napari_pathm3.model import build_model

    cfg = PathM3Config.tiny(
        feature_dim=94, encoder_name="builtin:colorstats", class_names=("tumour", "normal")
    )
    ckpt = build_model(cfg).eval().save_pretrained(tmp_path / "ckpt")
    out = tmp_path / "r.json"
    rc = main(
        [
            "caption",
            str(synthetic_slide),
            "--model",
            str(ckpt),
            "--out",
            str(out),
            "--query",
            "solid nests",
            "--device",
            "cpu",
            "--no-cache",
            "--csv",
            str(tmp_path / "p.csv"),
            "--quiet",
        ]
    )
    assert rc == 0
    data = json.loads(out.read_text())
    assert "caption_class_agreement" in data
    maps_file = Path(data["word_maps"]["file"]) if data["word_maps"] else tmp_path / "r.maps.npz"
    assert maps_file == tmp_path / "r.maps.npz" and maps_file.is_file()
    with np.load(maps_file) as npz:
        assert list(npz["phrases"]) == ["solid nests"]
        assert npz["phrase_maps"].shape == (1, data["num_patches"])
        if data["caption"]:
            assert list(npz["words"]) == data["caption"].split()
            assert npz["word_maps"].shape == (len(npz["words"]), data["num_patches"])
    assert data["phrase_maps"][0]["phrase"] == "solid nests"
    header = (tmp_path / "p.csv").read_text().splitlines()[0]
    assert "phrase: solid nests" in header
