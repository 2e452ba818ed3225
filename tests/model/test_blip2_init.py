"""``qformer_init``: the Q-Former and query tokens start from a BLIP-2 checkpoint (a tiny one built offline with
transformers and saved as safetensors), tensor for tensor; what cannot map is re-initialised and listed, and a
checkpoint that does not fit fails with one line naming the keys."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from napari_pathm3.config import CorrelationConfig, PathM3Config, QFormerConfig
from napari_pathm3.errors import CheckpointError, PathM3Error
from napari_pathm3.model.blip2_init import read_blip2_tensors
from napari_pathm3.model.pathm3 import PathM3Model

FEATURE_DIM = 16
CLASSES = ("tubular", "papillary", "poorly")


def save_tiny_blip2(folder, *, vision_width=32, layers=2, max_shard_size=None):
    """A Blip2ForConditionalGeneration with the tiny config's Q-Former sizes (hidden 32, 4 queries) saved in
    safetensors (sharded with an index when ``max_shard_size`` is given)."""
    from transformers import Blip2Config, Blip2ForConditionalGeneration

    cfg = Blip2Config(
        vision_config=dict(
            hidden_size=vision_width,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=28,
            patch_size=14,
        ),
        qformer_config=dict(
            hidden_size=32,
            num_hidden_layers=layers,
            num_attention_heads=4,
            intermediate_size=64,
            encoder_hidden_size=vision_width,
            cross_attention_frequency=2,
        ),
        text_config=dict(
            model_type="t5", d_model=16, d_ff=32, num_layers=1, num_decoder_layers=1, num_heads=2, d_kv=8
        ),
        num_query_tokens=4,
    )
    torch.manual_seed(123)
    model = Blip2ForConditionalGeneration(cfg)
    kw = {} if max_shard_size is None else {"max_shard_size": max_shard_size}
    model.save_pretrained(folder, **kw)
    return {k: v.clone() for k, v in model.state_dict().items()}


def _config(source, **kw):
    return PathM3Config.tiny(
        feature_dim=FEATURE_DIM,
        class_names=CLASSES,
        encoder_name="test:identity",
        qformer_init=str(source),
        **kw,
    )


def test_qformer_loads_bit_for_bit(tmp_path):
    blip2 = save_tiny_blip2(tmp_path / "blip2")
    assert (tmp_path / "blip2" / "model.safetensors").is_file()
    torch.manual_seed(0)
    model = PathM3Model(_config(tmp_path / "blip2"))
    ours = model.state_dict()
    qformer = {k: v for k, v in blip2.items() if k.startswith("qformer.")}
    assert len(qformer) > 40
    for key, value in qformer.items():
        assert torch.equal(ours[key], value), key
    assert torch.equal(ours["qformer.query_tokens"], blip2["query_tokens"])
    report = model.qformer_init_report
    assert len(report.loaded) == len(qformer) + 1 and report.reinitialised == []
    # transformers' BLIP-2 has no Q-Former text side: ours keeps its own, and the report says so
    assert "qformer.embeddings.word_embeddings.weight" in report.not_in_source
    assert "scratch" in report.projection  # a scratch LM never takes BLIP-2's projection
    # the checkpoint records the source; loading it reads our weights, not BLIP-2 again
    model.save_pretrained(tmp_path / "ckpt")
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text())["qformer_init"] == str(
        tmp_path / "blip2"
    )
    again = PathM3Model.from_pretrained(tmp_path / "ckpt")
    assert again.qformer_init_report is None
    assert torch.equal(again.state_dict()["qformer.query_tokens"], blip2["query_tokens"])


def test_sharded_checkpoint_reads_only_what_it_needs(tmp_path):
    blip2 = save_tiny_blip2(tmp_path / "blip2", max_shard_size="20KB")
    index = json.loads((tmp_path / "blip2" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 2  # really sharded
    tensors = read_blip2_tensors(str(tmp_path / "blip2"))
    assert not any(k.startswith(("vision_model.", "language_model.")) for k in tensors)
    for key, value in tensors.items():
        assert torch.equal(value, blip2[key]), key


def test_cross_attention_width_mismatch_is_reinitialised_and_listed(tmp_path, caplog):
    blip2 = save_tiny_blip2(tmp_path / "blip2", vision_width=24)  # BLIP-2's vision width != our 32
    torch.manual_seed(0)
    with caplog.at_level("WARNING"):
        model = PathM3Model(_config(tmp_path / "blip2"))
    report = model.qformer_init_report
    assert sorted(r.split(":")[0] for r in report.reinitialised) == [
        "qformer.encoder.layer.0.crossattention.attention.key.weight",
        "qformer.encoder.layer.0.crossattention.attention.value.weight",
    ]
    assert "(32, 24)" in report.reinitialised[0] and "(32, 32)" in report.reinitialised[0]
    assert "re-initialised" in caplog.text
    ours = model.state_dict()
    bias = "qformer.encoder.layer.0.crossattention.attention.key.bias"
    assert bias not in report.loaded  # the pair (weight and bias) keeps our initialisation
    query = "qformer.encoder.layer.0.crossattention.attention.query.weight"
    assert torch.equal(ours[query], blip2[query])  # the rest of the layer loads


def test_name_mismatch_is_one_line_naming_the_keys(tmp_path):
    save_tiny_blip2(tmp_path / "blip2")
    deeper = dataclasses.replace(PathM3Config.tiny().qformer, num_hidden_layers=3)
    with pytest.raises(CheckpointError) as err:
        PathM3Model(_config(tmp_path / "blip2", qformer=deeper))
    msg = str(err.value)
    assert "\n" not in msg and "qformer.encoder.layer.2.attention.attention.query.weight" in msg
    # a renamed tensor: missing under its name, unexpected under the other
    path = tmp_path / "blip2" / "model.safetensors"
    tensors = load_file(path)
    tensors["qformer.encoder.layer.1.attention.attention.qry.weight"] = tensors.pop(
        "qformer.encoder.layer.1.attention.attention.query.weight"
    )
    save_file(tensors, path)
    with pytest.raises(CheckpointError) as err:
        PathM3Model(_config(tmp_path / "blip2"))
    msg = str(err.value)
    assert "\n" not in msg and "attention.query.weight" in msg and "attention.qry.weight" in msg


def test_other_shape_mismatch_fails_and_changes_nothing(tmp_path):
    save_tiny_blip2(tmp_path / "blip2")
    wider = QFormerConfig(
        num_query_tokens=4,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,  # BLIP-2's is 64
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        max_text_length=32,
    )
    with pytest.raises(CheckpointError, match=r"intermediate_query\.dense\.weight \(64, 32\) vs \(48, 32\)"):
        PathM3Model(_config(tmp_path / "blip2", qformer=wider))


def test_pickle_only_and_offline_sources_fail_in_one_line(tmp_path, monkeypatch):
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(CheckpointError, match="safetensors"):
        read_blip2_tensors(str(tmp_path / "bin"))
    import huggingface_hub

    def offline(*args, **kwargs):
        raise huggingface_hub.errors.LocalEntryNotFoundError("offline")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(PathM3Error) as err:
        read_blip2_tensors("Salesforce/blip2-flan-t5-xl")
    msg = str(err.value)
    assert "\n" not in msg and "hf download Salesforce/blip2-flan-t5-xl" in msg and "--qformer-init" in msg


def test_paper_preset_starts_from_blip2():
    cfg = PathM3Config.preset("paper", feature_dim=1408, encoder_name="x", class_names=("a", "b"))
    assert cfg.qformer_init == "Salesforce/blip2-flan-t5-xl"
    # BLIP-2-FlanT5-XL's Q-Former shapes: 32 queries of 768, 12 layers, cross-attention to width 1408
    assert (cfg.qformer.num_query_tokens, cfg.qformer.hidden_size, cfg.qformer.num_hidden_layers) == (
        32,
        768,
        12,
    )
    assert cfg.cross_attention_width == 1408 and cfg.correlation == CorrelationConfig(attention="nystrom")


def test_hub_id_fetches_only_the_shards_it_needs(tmp_path, monkeypatch):
    """A hub id goes through huggingface_hub (faked here by a local sharded folder): the index, then only
    the shards holding Q-Former tensors; the ViT and LM shards are never requested."""
    import huggingface_hub

    blip2 = save_tiny_blip2(tmp_path / "blip2", max_shard_size="20KB")
    index = json.loads((tmp_path / "blip2" / "model.safetensors.index.json").read_text())["weight_map"]
    asked = []

    def fake_download(repo_id, filename, **kwargs):
        assert repo_id == "Salesforce/blip2-tiny"
        asked.append(filename)
        return str(tmp_path / "blip2" / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    tensors = read_blip2_tensors("Salesforce/blip2-tiny")
    needed = {
        f
        for k, f in index.items()
        if k == "query_tokens" or k.startswith(("qformer.", "language_projection."))
    }
    assert asked[0] == "model.safetensors.index.json" and set(asked[1:]) == needed
    assert len(set(index.values())) > len(needed)  # some shards were skipped
    assert all(torch.equal(v, blip2[k]) for k, v in tensors.items())
