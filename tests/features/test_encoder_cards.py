"""Foundation-model encoders exactly as their cards say (issue 27, item 11).

The transformers ones (Phikon, Phikon-v2, DINOv2) are loaded end to end by their hub ids from a local
Hugging Face cache holding random one-layer models of the card's architecture and width (offline,
``HF_HUB_OFFLINE=1``, in a subprocess so the cache location is read at import): input size, normalisation,
µm/px, feature width and the class-token output are checked against the card. timm cannot be imported beside
the CPU torch wheel here (torchvision fails to load), so for UNI, Virchow/Virchow2 and H-optimus-0 the card
table and the output rule (class token + mean of the patch tokens after Virchow2's registers) are tested on
tensors; their timm loading is covered by ``tests/features/test_encoders.py::test_timm_local_folder`` where
timm imports.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_pathm3.errors import EncoderError
from napari_pathm3.features.cards import (
    H_OPTIMUS,
    IMAGENET,
    apply_card,
    card_for,
    cards_markdown,
    cls_plus_mean,
    pool_for,
)
from napari_pathm3.features.encoders import KNOWN_ENCODERS

DOCS = Path(__file__).resolve().parents[2] / "docs" / "features.md"


def test_every_listed_foundation_model_has_a_card() -> None:
    for name in KNOWN_ENCODERS[1:]:  # the first is the built-in descriptor
        assert card_for(name) is not None, name
    assert card_for("hf:OWKIN/Phikon") is card_for("hf:owkin/phikon")  # hub ids are case-insensitive
    assert card_for("builtin:colorstats") is None


@pytest.mark.parametrize(
    ("name", "dim", "mean", "mpp", "output", "prefix"),
    [
        ("timm:hf-hub:MahmoodLab/UNI", 1024, IMAGENET[0], 0.5, "cls", 1),
        ("timm:hf-hub:paige-ai/Virchow", 2560, IMAGENET[0], 0.5, "cls+mean", 1),
        ("timm:hf-hub:paige-ai/Virchow2", 2560, IMAGENET[0], 0.5, "cls+mean", 5),
        ("timm:hf-hub:bioptimus/H-optimus-0", 1536, H_OPTIMUS[0], 0.5, "cls", 5),
        ("hf:owkin/phikon", 768, IMAGENET[0], 0.5, "cls", 1),
        ("hf:owkin/phikon-v2", 1024, IMAGENET[0], 0.5, "cls", 1),
        ("hf:facebook/dinov2-base", 768, IMAGENET[0], None, "cls", 1),
    ],
)
def test_card_values(name: str, dim: int, mean: tuple, mpp: float | None, output: str, prefix: int) -> None:
    card = card_for(name)
    assert card is not None and card.input_size == 224
    assert (card.dim, card.mean, card.mpp, card.output, card.prefix_tokens) == (
        dim,
        mean,
        mpp,
        output,
        prefix,
    )


@pytest.mark.parametrize(
    ("prefix", "tokens"), [(1, 257), (5, 261)]
)  # Virchow: 1 + 16x16; Virchow2: +4 registers
def test_class_token_plus_mean_of_patch_tokens(prefix: int, tokens: int) -> None:
    x = torch.randn(2, tokens, 8)
    out = cls_plus_mean(prefix)(x)
    assert out.shape == (2, 16)
    torch.testing.assert_close(out[:, :8], x[:, 0])
    torch.testing.assert_close(out[:, 8:], x[:, prefix:].mean(1))  # registers (1..4) are left out
    if prefix > 1:
        assert not torch.allclose(out[:, 8:], x[:, 1:].mean(1))
    with pytest.raises(EncoderError, match="tokens"):
        cls_plus_mean(prefix)(torch.randn(2, 8))  # pooled output, not tokens
    card = card_for("timm:hf-hub:paige-ai/Virchow2" if prefix == 5 else "timm:hf-hub:paige-ai/Virchow")
    torch.testing.assert_close(pool_for(card)(x), out)
    assert pool_for(card_for("timm:hf-hub:MahmoodLab/UNI")) is None  # timm's own token pooling


def test_apply_card_overrides_a_disagreeing_config_and_refuses_other_weights(
    tiny_hf_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from napari_pathm3.features.encoders import get_encoder

    enc = get_encoder(f"local:{tiny_hf_dir}")  # 32 px, ImageNet statistics, 32-d
    before = enc.weights_hash
    card = dataclasses.replace(card_for("timm:hf-hub:bioptimus/H-optimus-0"), name=enc.name, dim=enc.dim)
    with caplog.at_level("WARNING"):
        apply_card(enc, card)
    assert enc.weights_hash != before  # other preprocessing: cached features of the old one are stale
    assert "model card" in caplog.text
    assert enc.input_size == 224 and enc.mpp == 0.5
    np.testing.assert_allclose(enc.mean.flatten().numpy(), H_OPTIMUS[0], rtol=1e-6)
    np.testing.assert_allclose(enc.std.flatten().numpy(), H_OPTIMUS[1], rtol=1e-6)
    with pytest.raises(EncoderError, match="not the card's weights"):
        apply_card(enc, dataclasses.replace(card, dim=enc.dim + 1))


def test_docs_table_is_the_cards() -> None:
    assert cards_markdown() in DOCS.read_text(encoding="utf-8"), (
        "regenerate: python -m napari_pathm3.features.cards"
    )


# ------------------------------------------------------------------------------------ transformers, end to end
HF_MODELS = {
    # hub id: (transformers model, config, preprocessor_config.json as on the hub)
    "owkin/phikon": (
        "ViTModel",
        dict(
            hidden_size=768,
            num_hidden_layers=1,
            num_attention_heads=12,
            intermediate_size=3072,
            patch_size=16,
        ),
        {"image_processor_type": "ViTImageProcessor", "size": {"height": 224, "width": 224}},
    ),
    "owkin/phikon-v2": (
        "Dinov2Model",
        dict(hidden_size=1024, num_hidden_layers=1, num_attention_heads=16, patch_size=16),
        {
            "image_processor_type": "BitImageProcessor",
            "size": {"shortest_edge": 224},
            "do_center_crop": True,
            "crop_size": {"height": 224, "width": 224},
        },
    ),
    # a config that disagrees with the card (mean 0.5): the card's statistics must win
    "facebook/dinov2-base": (
        "Dinov2Model",
        dict(hidden_size=768, num_hidden_layers=1, num_attention_heads=12, patch_size=14),
        {
            "image_processor_type": "BitImageProcessor",
            "size": {"shortest_edge": 256},
            "do_center_crop": True,
            "crop_size": {"height": 224, "width": 224},
            "image_mean": [0.5, 0.5, 0.5],
        },
    ),
}
SNAPSHOT = "0" * 40


def _fake_hub_cache(root: Path) -> None:
    import transformers

    torch.manual_seed(0)
    for repo, (cls_name, kwargs, proc) in HF_MODELS.items():
        repo_dir = root / f"models--{repo.replace('/', '--')}"
        snap = repo_dir / "snapshots" / SNAPSHOT
        cls = getattr(transformers, cls_name)
        config = getattr(transformers, cls_name.replace("Model", "Config"))(image_size=224, **kwargs)
        cls(config, add_pooling_layer=False).save_pretrained(snap) if cls_name == "ViTModel" else cls(
            config
        ).save_pretrained(snap)
        full = {"image_mean": list(IMAGENET[0]), "image_std": list(IMAGENET[1]), "do_normalize": True, **proc}
        (snap / "preprocessor_config.json").write_text(json.dumps(full))
        (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
        (repo_dir / "refs" / "main").write_text(SNAPSHOT)


CHECK = textwrap.dedent(
    """
    import json, sys
    import numpy as np, torch
    from transformers import AutoModel
    from napari_pathm3.features.cards import card_for
    from napari_pathm3.features.encoders import get_encoder

    out = {}
    rng = np.random.default_rng(0)
    patches = rng.integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    for repo in sys.argv[1:]:
        name = "hf:" + repo
        enc, card = get_encoder(name, device="cpu"), card_for(name)
        model = AutoModel.from_pretrained(repo).eval()
        x = torch.from_numpy(patches).permute(0, 3, 1, 2).float() / 255
        x = (x - torch.tensor(card.mean).view(1, 3, 1, 1)) / torch.tensor(card.std).view(1, 3, 1, 1)
        with torch.no_grad():
            ref = model(pixel_values=x).last_hidden_state[:, 0].numpy()  # the card: the class token
        got = enc.encode(patches)
        out[repo] = {
            "dim": enc.dim, "input_size": enc.input_size, "mpp": enc.mpp,
            "mean": enc.mean.flatten().tolist(), "std": enc.std.flatten().tolist(),
            "max_abs_diff": float(np.abs(got - ref).max()), "shape": list(got.shape),
        }
    print(json.dumps(out))
    """
)


def test_transformers_encoders_load_by_hub_id_as_their_cards_say(tmp_path: Path) -> None:
    _fake_hub_cache(tmp_path / "hub")
    env = {
        **os.environ,
        "HF_HUB_CACHE": str(tmp_path / "hub"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "NAPARI_PATHM3_THREADS": "1",
    }
    proc = subprocess.run(
        [sys.executable, "-c", CHECK, *HF_MODELS], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    for repo in HF_MODELS:
        card, got = card_for(f"hf:{repo}"), res[repo]
        assert (
            got["dim"] == card.dim and got["shape"] == [2, card.dim] and got["input_size"] == card.input_size
        )
        assert got["mpp"] == (card.mpp if card.mpp is not None else 0.5)  # FrozenEncoder's default otherwise
        np.testing.assert_allclose(
            got["mean"], card.mean, rtol=1e-6
        )  # dinov2's config said 0.5: the card won
        np.testing.assert_allclose(got["std"], card.std, rtol=1e-6)
        assert got["max_abs_diff"] < 1e-4, (repo, got["max_abs_diff"])  # the class token, nothing else
    assert "model card" in proc.stderr  # the disagreeing config was reported
