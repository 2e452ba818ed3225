"""Loading without the Q-Former's text side (``text_side=False``): what Caption slide does to save memory."""

from __future__ import annotations

import pytest
import torch

from napari_pathm3.model.pathm3 import PathM3Model
from napari_pathm3.model.qformer import is_text_side_key


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_image_only_load_gives_the_same_results_with_fewer_weights(tiny_model, make_batch, tmp_path):
    tiny_model.save_pretrained(tmp_path / "ckpt")
    full = PathM3Model.from_pretrained(tmp_path / "ckpt")
    lean = PathM3Model.from_pretrained(tmp_path / "ckpt", text_side=False)
    x, mask = make_batch([7, 5])

    a, b = full.classify(x, mask), lean.classify(x, mask)
    torch.testing.assert_close(a.probabilities, b.probabilities, rtol=0, atol=0)
    torch.testing.assert_close(a.query_attention, b.query_attention, rtol=0, atol=0)
    assert full.generate_captions(x, mask, max_new_tokens=6) == lean.generate_captions(
        x, mask, max_new_tokens=6
    )

    dropped = [k for k in full.qformer.state_dict() if is_text_side_key(k)]
    assert dropped and not any(is_text_side_key(k) for k in lean.qformer.state_dict())
    assert _params(lean) < _params(full)


def test_image_only_model_refuses_text_and_saving(tiny_model, make_batch, tmp_path):
    tiny_model.save_pretrained(tmp_path / "ckpt")
    lean = PathM3Model.from_pretrained(tmp_path / "ckpt", text_side=False)
    x, mask = make_batch([4])
    ids = torch.ones(1, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="text_side=True"):
        lean.qformer(x.new_zeros(1, 4, lean.config.cross_attention_width), mask, text_ids=ids)
    with pytest.raises(ValueError, match="text_side=True"):
        lean.save_pretrained(tmp_path / "again")


def test_text_side_keys_are_only_text_weights():
    assert is_text_side_key("embeddings.word_embeddings.weight")
    assert is_text_side_key("encoder.layer.3.intermediate.dense.weight")
    assert is_text_side_key("encoder.layer.10.output.LayerNorm.bias")
    assert not is_text_side_key("encoder.layer.3.intermediate_query.dense.weight")
    assert not is_text_side_key("encoder.layer.3.output_query.dense.weight")
    assert not is_text_side_key("encoder.layer.0.attention.output.dense.weight")
    assert not is_text_side_key("query_tokens")
