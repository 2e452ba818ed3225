"""Caption decoding for the plain-torch caption LMs (:mod:`.t5`, :mod:`.gpt2`): greedy, multinomial sampling
and beam search with the logits processors we expose (repetition penalty, no-repeat n-gram, temperature,
top-k, top-p) and a length penalty.

Written to give the same token ids as ``transformers``' ``generate`` (5.x: ``_sample`` and the vectorised
``_beam_search`` with ``early_stopping=False``) on the same weights, so a checkpoint captions the same whichever
implementation runs it; tests/model/test_native_lm.py compares both. No KV cache: every step re-runs the
decoder over the tokens so far, which costs nothing next to the rest at caption lengths (<= 64 tokens).

Dimensions: b bags, k beams, n = b·k rows, L tokens so far, V vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypedDict

import torch
from torch import Tensor

__all__ = ["DecodeOptions", "Decoding", "DecodingKwargs", "decode"]


@dataclass(frozen=True, kw_only=True)
class Decoding:
    """How captions are decoded: greedy (default), beam search (``num_beams > 1``; ``length_penalty`` > 1
    favours longer beams) or sampling (``do_sample``; ``seed`` makes it reproducible).
    ``no_repeat_ngram_size`` n forbids any n-gram twice, ``repetition_penalty`` > 1 discourages repeated
    tokens (transformers ``generate`` semantics)."""

    max_new_tokens: int | None = None  # None: the model's ``language.max_caption_tokens``
    num_beams: int = 1
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float | None = None
    no_repeat_ngram_size: int | None = None
    length_penalty: float | None = None
    seed: int | None = None


class DecodingKwargs(TypedDict, total=False):
    """The fields of :class:`Decoding` as keyword arguments (``model.generate_captions(x, num_beams=3)``)."""

    max_new_tokens: int | None
    num_beams: int
    do_sample: bool
    temperature: float
    top_k: int | None
    top_p: float | None
    repetition_penalty: float | None
    no_repeat_ngram_size: int | None
    length_penalty: float | None
    seed: int | None


#: logits (n, V) of the next token given the tokens so far (n, L) and which prefix row each of the n rows uses
NextLogits = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True, kw_only=True)
class DecodeOptions:
    max_new_tokens: int
    eos_token_id: int
    pad_token_id: int
    num_beams: int = 1
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float | None = None
    no_repeat_ngram_size: int | None = None
    length_penalty: float = 1.0


def _process(opts: DecodeOptions, ids: Tensor, scores: Tensor) -> Tensor:
    """The logits processors of ``generate`` in its order (penalties, then the sampling warpers)."""
    if opts.repetition_penalty is not None and opts.repetition_penalty != 1.0 and ids.shape[1]:
        v = scores.shape[-1]
        padded = torch.nn.functional.pad(scores, (0, 1))
        idx = ids.clamp(max=v)
        s = torch.gather(padded, 1, idx)
        s = torch.where(s < 0, s * opts.repetition_penalty, s / opts.repetition_penalty)
        scores = padded.scatter(1, idx, s)[:, :v]
    n = opts.no_repeat_ngram_size
    if n and ids.shape[1] >= n:
        cur = ids.shape[1]
        prefix = ids[:, cur + 1 - n :]
        windows = ids.unfold(dimension=1, size=n, step=1)
        matches = (windows[..., :-1] == prefix.unsqueeze(1)).all(dim=-1)
        v = scores.shape[-1]
        banned = scores.new_zeros((scores.shape[0], v + 1), dtype=torch.bool)
        banned.scatter_(1, torch.where(matches, windows[..., -1].clamp(max=v), v), True)
        scores = scores.masked_fill(banned[:, :v], -float("inf"))
    if opts.do_sample:
        keep = 2 if opts.num_beams > 1 else 1  # beams keep one non-eos token beside eos
        if opts.temperature != 1.0:
            scores = scores / opts.temperature
        if opts.top_k:
            k = max(min(opts.top_k, scores.size(-1)), keep)
            scores = scores.masked_fill(scores < torch.topk(scores, k)[0][..., -1, None], -float("inf"))
        if opts.top_p is not None and opts.top_p < 1.0:
            sorted_logits, order = torch.sort(scores, descending=False)
            remove = sorted_logits.softmax(dim=-1).cumsum(dim=-1) <= (1 - opts.top_p)
            remove[..., -keep:] = 0
            scores = scores.masked_fill(remove.scatter(1, order, remove), -float("inf"))
    return scores


def decode(next_logits: NextLogits, start: Tensor, opts: DecodeOptions) -> Tensor:
    """Token ids (b, L0 + new) from ``start`` (b, L0), the tokens every row begins with (T5: the decoder
    start token; GPT-2 with an embedding prefix: none)."""
    if opts.num_beams > 1:
        return _beam_search(next_logits, start, opts)
    return _greedy_or_sample(next_logits, start, opts)


def _greedy_or_sample(next_logits: NextLogits, start: Tensor, opts: DecodeOptions) -> Tensor:
    ids = start
    rows = torch.arange(start.shape[0], device=start.device)
    max_length = start.shape[1] + opts.max_new_tokens
    unfinished = torch.ones(start.shape[0], dtype=torch.long, device=start.device)
    while ids.shape[1] < max_length:
        scores = _process(opts, ids, next_logits(ids, rows).float())
        if opts.do_sample:
            nxt = torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1).squeeze(1)
        else:
            nxt = torch.argmax(scores, dim=-1)
        nxt = nxt * unfinished + opts.pad_token_id * (1 - unfinished)  # finished rows get padding
        ids = torch.cat([ids, nxt[:, None]], dim=-1)
        unfinished = unfinished & (nxt != opts.eos_token_id).long()
        if int(unfinished.max()) == 0:
            break
    return ids


def _gather(t: Tensor, idx: Tensor) -> Tensor:
    while idx.dim() < t.dim():
        idx = idx.unsqueeze(-1)
    return torch.take_along_dim(t, idx, dim=1)


def _beam_search(next_logits: NextLogits, start: Tensor, opts: DecodeOptions) -> Tensor:
    """transformers 5's vectorised beam search (``early_stopping=False``, one returned sequence per bag)."""
    b, prompt_len = start.shape
    k, dev = opts.num_beams, start.device
    max_length = prompt_len + opts.max_new_tokens
    keep = 2 * k  # eos plus one: enough continuations that k stay open when the best k all end
    top_mask = torch.cat([torch.ones(k, dtype=torch.bool), torch.zeros(keep - k, dtype=torch.bool)]).to(dev)
    # unfilled positions hold padding, or eos when the pad id is 0 (transformers' ``pad or eos``)
    fill = opts.pad_token_id or opts.eos_token_id
    running = torch.full((b, k, max_length), fill, dtype=torch.int64, device=dev)
    running[:, :, :prompt_len] = start[:, None, :]
    sequences = running.clone()
    running_scores = torch.zeros(b, k, device=dev)
    running_scores[:, 1:] = -1e9  # only the first beam's tokens count at step one
    scores = torch.full((b, k), -1e9, device=dev)
    finished = torch.zeros(b, k, dtype=torch.bool, device=dev)
    improvable = torch.ones(b, 1, dtype=torch.bool, device=dev)
    running_idx = torch.full((b, k, max_length - prompt_len), -1, dtype=torch.int32, device=dev)
    beam_idx = running_idx.clone()
    rows = torch.arange(b, device=dev).repeat_interleave(k)  # prefix row of each of the b·k rows
    cur = prompt_len
    while True:
        flat = running[:, :, :cur].reshape(b * k, cur)
        logp = torch.log_softmax(next_logits(flat, rows).float(), dim=-1)
        logp = _process(opts, flat, logp)
        logp = (logp.view(b, k, -1) + running_scores[:, :, None]).reshape(b, -1)
        v = logp.shape[-1] // k
        if opts.do_sample:
            top_i = torch.multinomial(torch.softmax(logp, dim=-1), num_samples=keep)
            top_lp, order = torch.gather(logp, 1, top_i).sort(dim=-1, descending=True)
            top_i = top_i.gather(-1, order)
        else:
            top_lp, top_i = torch.topk(logp, k=keep)
        src = top_i // v
        top_idx = _gather(running_idx, src)
        top_seq = _gather(running, src)
        top_seq[:, :, cur] = top_i % v
        top_idx[:, :, cur - prompt_len] = src + torch.arange(b, device=dev).view(-1, 1) * k
        hits = (top_seq[:, :, cur] == opts.eos_token_id) | (cur + 1 >= max_length)
        # e. the best k continuations that did not end stay running
        run_lp = top_lp + hits.float() * -1.0e9
        nxt = torch.topk(run_lp, k=k)[1]
        running, running_scores, running_idx = (
            _gather(top_seq, nxt),
            _gather(run_lp, nxt),
            _gather(top_idx, nxt),
        )
        # f. ended ones among the top k enter the finished set, scored with the length penalty
        just_done = hits & top_mask[None, :]
        fin_lp = top_lp / ((cur + 1 - prompt_len) ** opts.length_penalty)
        fin_lp = fin_lp + (~improvable).float() * -1.0e9 + (~just_done) * -1.0e9
        merged = torch.topk(torch.cat([scores, fin_lp], dim=1), k=k)[1]
        sequences = _gather(torch.cat([sequences, top_seq], dim=1), merged)
        scores = _gather(torch.cat([scores, fin_lp], dim=1), merged)
        beam_idx = _gather(torch.cat([beam_idx, top_idx], dim=1), merged)
        finished = _gather(torch.cat([finished, just_done], dim=1), merged)
        cur += 1
        best_running = running_scores[:, :1] / ((cur - prompt_len) ** opts.length_penalty)
        worst_done = torch.where(finished, torch.min(scores, dim=1, keepdim=True)[0], -1.0e9)
        improvable = improvable & torch.any(best_running > worst_done, dim=-1, keepdim=True)
        if not bool(torch.any(improvable)) or bool(torch.all(hits)):
            break
    best = sequences[:, 0, :]
    generated = int(((beam_idx[:, 0, :] + 1).bool()).sum(dim=1).max())
    return best[:, : prompt_len + generated]
