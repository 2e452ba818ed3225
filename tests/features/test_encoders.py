from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_pathm3.config import DEFAULT_ENCODER
from napari_pathm3.errors import EncoderError
from napari_pathm3.features.encoders import (
    FrozenEncoder,
    canonical_name,
    get_encoder,
    list_encoders,
    state_dict_hash,
)

RNG = np.random.default_rng(0)


def _patches(b: int = 4, size: int = 224) -> np.ndarray:
    img = np.full((b, size, size, 3), 235, np.uint8)
    img[:, size // 4 :, size // 3 :] = RNG.integers(60, 200, (b, size - size // 4, size - size // 3, 3))
    return img


@pytest.fixture(scope="module")
def builtin() -> FrozenEncoder:
    return get_encoder("builtin:colorstats")


def test_builtin_shape_determinism_and_batch_independence(builtin: FrozenEncoder) -> None:
    x = _patches(4)
    f = builtin.encode(x)
    assert f.shape == (4, builtin.dim) == (4, 94) and f.dtype == np.float32
    assert np.isfinite(f).all()
    np.testing.assert_array_equal(f, builtin.encode(x))
    one_by_one = np.concatenate([builtin.encode(x[i : i + 1]) for i in range(4)])
    np.testing.assert_allclose(f, one_by_one, rtol=1e-5, atol=1e-6)
    assert not builtin.training and not any(p.requires_grad for p in builtin.parameters())
    builtin.train()
    assert not builtin.training  # frozen stays in eval mode


def test_builtin_hed_matches_skimage(builtin: FrozenEncoder) -> None:
    from skimage.color import rgb2hed

    x = _patches(1)
    pooled = x[0].astype(np.float64).reshape(112, 2, 112, 2, 3).mean((1, 3)) / 255.0  # the 2x2 mean it uses
    hed = rgb2hed(pooled)
    f = builtin.encode(x)[0]
    np.testing.assert_allclose(f[40:43], hed.reshape(-1, 3).mean(0), rtol=1e-4, atol=1e-6)  # stain means


def test_builtin_any_size_and_hash(builtin: FrozenEncoder) -> None:
    assert builtin.input_size is None
    assert builtin.encode(_patches(2, 48)).shape == (2, 94)
    assert builtin.weights_hash == get_encoder("builtin:colorstats").weights_hash
    assert len(builtin.weights_hash) == 64


def test_hf_tiny_model(tiny_hf_dir: Path) -> None:
    enc = get_encoder(f"hf:{tiny_hf_dir}")
    assert (enc.dim, enc.input_size) == (32, 32)
    np.testing.assert_allclose(enc.mean.flatten().numpy(), [0.5, 0.5, 0.5])  # from preprocessor_config.json
    x = _patches(3)
    f = enc.encode(x)
    assert f.shape == (3, 32) and np.isfinite(f).all()
    # CLS token of the last hidden state, on the resized, normalised input
    with torch.no_grad():
        ref = enc.model(pixel_values=enc.preprocess(x)).last_hidden_state[:, 0]
    np.testing.assert_allclose(f, ref.numpy(), rtol=1e-5, atol=1e-6)
    # the randomly initialised (unused) pooler must not change the identity between loads
    again = get_encoder(f"hf:{tiny_hf_dir}")
    assert again.weights_hash == enc.weights_hash
    local = get_encoder(f"local:{tiny_hf_dir}")
    np.testing.assert_allclose(local.encode(x), f, rtol=1e-5, atol=1e-6)


def test_hf_weights_hash_changes_with_weights(tiny_hf_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoModel

    model = AutoModel.from_pretrained(tiny_hf_dir)
    with torch.no_grad():
        model.layernorm.weight.add_(1.0)
    model.save_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text((tiny_hf_dir / "preprocessor_config.json").read_text())
    a, b = get_encoder(f"local:{tiny_hf_dir}"), get_encoder(f"local:{tmp_path}")
    assert state_dict_hash(a.model.state_dict()) != state_dict_hash(b.model.state_dict())
    assert a.weights_hash != b.weights_hash


def test_timm_local_folder(tiny_timm_dir: Path) -> None:
    timm = pytest.importorskip("timm")
    enc = get_encoder(f"local:{tiny_timm_dir}")
    assert (enc.dim, enc.input_size) == (32, 32)
    ref = timm.create_model(f"local-dir:{tiny_timm_dir}", pretrained=True, num_classes=0).eval()
    x = _patches(2)
    with torch.no_grad():
        np.testing.assert_allclose(enc.encode(x), ref(enc.preprocess(x)).numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("builtin:colorstats", "builtin:colorstats"),
        ("hf-hub:paige-ai/Virchow", "timm:hf-hub:paige-ai/Virchow"),
        ("eva_giant_patch14_224", "timm:eva_giant_patch14_224"),
        ("timm:hf-hub:MahmoodLab/UNI", "timm:hf-hub:MahmoodLab/UNI"),
        ("hf:owkin/phikon", "hf:owkin/phikon"),
    ],
)
def test_canonical_names(name: str, expected: str) -> None:
    assert canonical_name(name) == expected


@pytest.mark.parametrize("name", ["", "nope:thing", "builtin:nothing", "hf:/no/such/folder/anywhere"])
def test_bad_names_raise_encoder_error(name: str) -> None:
    with pytest.raises(EncoderError):
        get_encoder(name)


def test_uncached_hub_model_offline_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EncoderError, match="huggingface-cli download"):
        get_encoder("hf:owkin/phikon-this-is-not-cached")


def test_gated_model_message(monkeypatch: pytest.MonkeyPatch) -> None:
    import transformers

    class GatedRepoError(Exception):
        pass

    def fail(*args: object, **kwargs: object) -> None:
        raise GatedRepoError("Access to model MahmoodLab/UNI is restricted")

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", fail)
    with pytest.raises(EncoderError, match="licence.*huggingface-cli login"):
        get_encoder("hf:MahmoodLab/UNI")


def test_local_folder_without_config(tmp_path: Path) -> None:
    with pytest.raises(EncoderError, match="config.json"):
        get_encoder(f"local:{tmp_path}")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(EncoderError, match="neither"):
        get_encoder(f"local:{tmp_path}")


def test_torchvision_missing_is_encoder_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torchvision", None)
    with pytest.raises(EncoderError, match="torchvision"):
        get_encoder("torchvision:resnet18")


def test_list_encoders_known_and_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    snap = tmp_path / "models--someorg--tinypath" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text(json.dumps({"architecture": "vit_small_patch16_224"}))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    names = list_encoders()
    assert names[0] == "builtin:colorstats"
    assert "timm:hf-hub:MahmoodLab/UNI" in names
    assert "timm:hf-hub:someorg/tinypath" in names


def test_default_encoder_is_defined_once() -> None:
    """The registry's default is config's (one definition) and works offline: it is listed first."""
    from napari_pathm3.features import encoders

    assert encoders.DEFAULT_ENCODER is DEFAULT_ENCODER
    assert list_encoders()[0] == DEFAULT_ENCODER
