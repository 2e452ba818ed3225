"""Tiny encoders built offline and saved locally (never downloaded), and the CMU slide with its grid."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-wide ViT saved with ``save_pretrained`` plus its image processor (32 px input)."""
    import torch
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_vit")
    cfg = ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
    )
    ViTModel(cfg, add_pooling_layer=False).save_pretrained(path)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_timm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny timm ViT saved with ``timm.models.save_for_hf`` (config.json + model.safetensors)."""
    timm = pytest.importorskip("timm")
    import torch
    from timm.models import save_for_hf

    torch.manual_seed(0)
    args = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, **args)
    path = tmp_path_factory.mktemp("tiny_timm")
    save_for_hf(model, str(path), model_args=args, safe_serialization=True)
    return path


@pytest.fixture(scope="session")
def cmu_slide(cmu_slide_path: Path):
    from napari_pathm3.io import open_slide

    with open_slide(cmu_slide_path) as slide:
        yield slide


@pytest.fixture(scope="session")
def cmu_grid(cmu_slide):
    from napari_pathm3.tiling import make_grid

    return make_grid(cmu_slide)
