"""Tiny encoders built offline and saved locally (never downloaded), and the CMU slide with its grid."""

from __future__ import annotations

from pathlib import Path

import pytest


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
