"""CLIP-style vision-language encoders (``clip:``) on a tiny random CLIPModel saved here (offline)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_pathm3.errors import EncoderError


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests._clip import make_tiny_clip

    return make_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")


def test_registry_loads_clip_with_its_preprocessing(tiny_clip: Path) -> None:
    from napari_pathm3.features.clip import ClipEncoder
    from napari_pathm3.features.encoders import canonical_name, get_encoder

    name = canonical_name(f"clip:{tiny_clip}")
    assert name == f"clip:{tiny_clip}"
    enc = get_encoder(name)
    assert isinstance(enc, ClipEncoder) and enc.dim == 16 and enc.input_size == 32
    np.testing.assert_allclose(enc.mean.flatten().tolist(), [0.48145466, 0.4578275, 0.40821073], rtol=1e-6)
    feats = enc.encode(np.random.default_rng(0).integers(0, 255, (3, 64, 64, 3), dtype=np.uint8))
    assert feats.shape == (3, 16)
    t = enc.encode_text(["solid nests", "glands"])
    np.testing.assert_allclose(t.norm(dim=-1).numpy(), 1.0, rtol=1e-5)


def test_phrase_map_and_zero_shot(tiny_clip: Path) -> None:
    from napari_pathm3.features.clip import phrase_values, text_embedding, zero_shot
    from napari_pathm3.features.encoders import get_encoder

    enc = get_encoder(f"clip:{tiny_clip}")
    target = text_embedding(enc, "solid nests").numpy()
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(40, 16)).astype(np.float32)
    feats[:5] = target * 10 + rng.normal(scale=0.01, size=(5, 16))  # five patches that *are* the phrase
    values, prompts = phrase_values(enc, feats, "solid nests")
    assert values.shape == (40,) and abs(values.sum() - 1) < 1e-5
    assert set(np.argsort(-values)[:5]) == set(range(5))
    assert len(prompts) >= 2 and all("solid nests" in p for p in prompts)  # a prompt ensemble
    probs, per_class = zero_shot(enc, feats, ["solid nests", "glands"])
    assert set(probs) == {"solid nests", "glands"} and probs["solid nests"] > probs["glands"]
    assert per_class.shape == (2, 40)
    with pytest.raises(ValueError, match="two class names"):
        zero_shot(enc, feats, ["only one"])
    with pytest.raises(EncoderError, match="width"):
        phrase_values(enc, feats[:, :8], "solid nests")


def test_query_heatmap_with_a_clip_encoder(tiny_clip: Path, synthetic_slide: Path) -> None:
    from napari_pathm3 import api
    from napari_pathm3.config import TilingConfig

    qr = api.query_heatmap(
        synthetic_slide,
        "solid nests",
        model=f"clip:{tiny_clip}",
        device="cpu",
        tiling=TilingConfig(patch_size=256, target_mpp=0.5),
    )
    assert qr.phrase_map.values.shape == (len(qr.grid),) and len(qr.grid) > 0
    assert qr.summary()["phrase"] == "solid nests"


def test_missing_clip_is_one_clear_error(tmp_path: Path) -> None:
    from napari_pathm3.features.encoders import get_encoder

    with pytest.raises(EncoderError, match="CLIPModel"):
        get_encoder(f"clip:{tmp_path / 'nope'}")


def test_zero_shot_classify_a_slide(tiny_clip: Path, synthetic_slide: Path, tmp_path: Path) -> None:
    from napari_pathm3 import api
    from napari_pathm3.layers import result_layers

    res = api.zero_shot_classify(
        synthetic_slide,
        ["tumour", "normal tissue"],
        model=f"clip:{tiny_clip}",
        templates=["an H&E image of {}."],
        device="cpu",
        cache_dir=tmp_path / "cache",
    )
    assert set(res.probabilities) == {"tumour", "normal tissue"} and res.caption == ""
    assert [p.phrase for p in res.phrase_maps] == ["tumour", "normal tissue"]
    assert abs(res.attention.sum() - 1) < 1e-4
    assert res.summary()["caption_class_agreement"]["agrees"] is None
    kinds = {kw["metadata"]["kind"] for _, kw, _ in result_layers(res)}
    assert "attention" in kinds and "query_attention" not in kinds
    with pytest.raises(ValueError, match="clip:"):
        api.zero_shot_classify(synthetic_slide, ["a", "b"], model="demo")


def test_clip_offline_is_one_line_naming_the_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants as hub

    from napari_pathm3.features.encoders import get_encoder

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    with pytest.raises(EncoderError) as info:
        get_encoder("clip:vinid/plip")
    msg = str(info.value)
    assert "\n" not in msg and "huggingface-cli download vinid/plip" in msg and "clip:/path" in msg
    (tmp_path / "not-clip").mkdir()
    (tmp_path / "not-clip" / "config.json").write_text("{}")
    with pytest.raises(EncoderError, match="CLIPModel from the folder") as info:
        get_encoder(f"clip:{tmp_path / 'not-clip'}")
    assert "\n" not in str(info.value)
