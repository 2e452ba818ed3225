"""Fixtures for the model tests: tiny configs (hidden 32, 2 layers, 4 queries, a tiny LM built offline)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

if importlib.util.find_spec("napari_pathm3") is None:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from napari_pathm3.config import PathM3Config  # noqa: E402

FEATURE_DIM = 16
CLASSES = ("tubular", "papillary", "poorly")


@pytest.fixture
def tiny_config() -> PathM3Config:
    return PathM3Config.tiny(feature_dim=FEATURE_DIM, class_names=CLASSES, encoder_name="test:identity")


@pytest.fixture
def tiny_model(tiny_config: PathM3Config):
    from napari_pathm3.model import build_model

    torch.manual_seed(0)
    return build_model(tiny_config).eval()


def _make_batch(lengths: list[int], dim: int = FEATURE_DIM, seed: int = 0):
    """Random bags right-padded to the longest: features (b, n, d), mask (b, n)."""
    g = torch.Generator().manual_seed(seed)
    n = max(lengths)
    x = torch.randn(len(lengths), n, dim, generator=g)
    mask = torch.zeros(len(lengths), n, dtype=torch.bool)
    for i, length in enumerate(lengths):
        mask[i, :length] = True
    return x * mask[..., None], mask


@pytest.fixture
def make_batch():
    return _make_batch
