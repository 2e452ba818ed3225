"""The caption loss reads only image-only queries, and the optional image-text contrastive loss (ITC)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from napari_pathm3.config import PathM3Config
from napari_pathm3.model import PathM3Model, build_model
from napari_pathm3.model.heads import contrastive_loss

CAPTIONS = ["no zeros . one seven .", "zeros are present . one seven .", "no zeros . one seven ."]


@pytest.mark.parametrize("mode", ["image", "image_text"])
def test_caption_loss_does_not_depend_on_the_text_input(tiny_config: PathM3Config, make_batch, mode: str):
    """The LM prefix comes from the image-only query pass: the caption text fed beside the queries (image_text
    training) cannot lower the caption loss, so inference (no text) sees the prefix training optimised."""
    model = build_model(dataclasses.replace(tiny_config, mode=mode)).eval()
    x, mask = make_batch([5, 9, 7])
    labels = torch.tensor([0, 1, 0])
    with torch.no_grad():
        with_text = model(x, mask, captions=CAPTIONS, labels=labels, text=CAPTIONS)
        shuffled = model(x, mask, captions=CAPTIONS, labels=labels, text=CAPTIONS[::-1])
        no_text = model(x, mask, captions=CAPTIONS, labels=labels)
    torch.testing.assert_close(with_text.loss_caption, no_text.loss_caption, rtol=0, atol=0)
    torch.testing.assert_close(shuffled.loss_caption, no_text.loss_caption, rtol=0, atol=0)


def test_contrastive_loss_counts_equal_captions_as_positives():
    e = torch.nn.functional.normalize(torch.eye(3), dim=-1)
    temp = torch.tensor(0.07)
    aligned = contrastive_loss(e[:, None], e, torch.tensor([0, 1, 2]), temp)
    crossed = contrastive_loss(e[[1, 2, 0]][:, None], e, torch.tensor([0, 1, 2]), temp)
    assert float(aligned) < 0.01 < 1.0 < float(crossed)
    # bags 0 and 2 share a caption: the best the loss can do is split each row between them (ln 2)
    tied = contrastive_loss(e[[0, 1, 0]][:, None], e[[0, 1, 0]], torch.tensor([0, 1, 0]), temp)
    assert float(tied) == pytest.approx(2 / 3 * torch.log(torch.tensor(2.0)).item(), abs=1e-3)


def test_itc_term_trains_the_queries_and_round_trips(tiny_config: PathM3Config, make_batch, tmp_path: Path):
    cfg = dataclasses.replace(tiny_config, mode="image", itc_weight=0.5)
    torch.manual_seed(0)
    model = build_model(cfg).train()
    x, mask = make_batch([5, 9, 7])
    labels = torch.tensor([0, 1, 0])
    out = model(x, mask, captions=CAPTIONS, labels=labels)
    assert out.loss_itc is not None
    expected = cfg.alpha * out.loss_cls + (1 - cfg.alpha) * out.loss_caption + 0.5 * out.loss_itc
    torch.testing.assert_close(out.loss, expected)
    out.loss_itc.backward()
    assert model.query_tokens.grad is not None and float(model.query_tokens.grad.norm()) > 0
    assert model.vision_proj.weight.grad is not None and model.text_proj.weight.grad is not None
    # one distinct caption in the batch: nothing to contrast, the term is left out
    assert model(x, mask, captions=[CAPTIONS[0]] * 3, labels=labels).loss_itc is None
    assert build_model(tiny_config)(x, mask, captions=CAPTIONS).loss_itc is None  # off by default (paper)
    model.eval()
    folder = model.save_pretrained(tmp_path / "ckpt")
    loaded = PathM3Model.from_pretrained(folder)
    with torch.no_grad():
        a, b = model(x, mask, captions=CAPTIONS), loaded(x, mask, captions=CAPTIONS)
    torch.testing.assert_close(a.loss_itc, b.loss_itc, rtol=0, atol=0)
