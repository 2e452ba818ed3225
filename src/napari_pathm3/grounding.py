"""Word -> region and phrase -> region maps of one bag as numpy (the math: :mod:`napari_pathm3.model.grounding`,
docs/method.md §11), their files, and whether the caption's diagnosis agrees with the classifier.

A map is a distribution over the bag's patches (each row sums to 1, like the aggregate attention map), so it
shows on the same fixed scale: log2 of the value relative to uniform 1/N.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._types import PathLike

if TYPE_CHECKING:
    from .model.pathm3 import PathM3Model

__all__ = [
    "PHRASE_METHODS",
    "WORD_METHOD",
    "WORD_METHODS",
    "resolve_method",
    "PhraseMap",
    "WordMaps",
    "caption_class_agreement",
    "phrase_map",
    "save_maps_npz",
    "word_maps",
]

#: how word maps are made (recorded in every output). "singleton": the trained model applied to each patch
#: as a bag of one, m_w(n) ∝ p(w | patch n alone); "gradient x attention": the LM's gradient at each
#: cross-attention layer's context times each patch's attention-weighted value, positive part (docs/method.md §11)
WORD_METHODS = ("singleton", "gradient x attention")
#: "auto": singleton up to this many patches (its cost grows with n times the LM: docs/method.md §11,
#: 16 s at 10k patches on one CPU thread), gradient x attention beyond (whole slides)
SINGLETON_MAX_PATCHES = 4096
WORD_METHOD = "auto"
#: phrase map methods of a PathM3 model (see napari_pathm3.model.grounding)
PHRASE_METHODS = ("auto", "singleton", "lm", "itc", "joint")


def resolve_method(method: str, n: int, *, phrase: bool) -> str:
    """``"auto"`` -> ``"singleton"`` for bags of at most :data:`SINGLETON_MAX_PATCHES` patches, else the
    cheap gradient method (``"gradient x attention"`` for words, ``"lm"`` for phrases)."""
    if method != "auto":
        return method
    if n <= SINGLETON_MAX_PATCHES:
        return "singleton"
    return "lm" if phrase else "gradient x attention"


def _distribution(relevance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positive part of each row normalised to sum 1; rows with no positive relevance become uniform (and
    are flagged: the map says nothing there)."""
    r = np.clip(np.asarray(relevance, dtype=np.float64), 0.0, None)
    r = np.atleast_2d(r)
    total = r.sum(axis=1, keepdims=True)
    empty = total[:, 0] <= 0
    n = r.shape[1]
    out = np.where(total > 0, r / np.where(total > 0, total, 1.0), 1.0 / max(n, 1))
    return out.astype(np.float32), empty


@dataclass(frozen=True, eq=False)
class WordMaps:
    """One patch map per caption word.

    Attributes:
        words: the caption's whitespace words, in order.
        maps: ``(W, n)`` each word's distribution over the patches.
        no_evidence: ``(W,)`` True where no patch raised the word's probability (the map is uniform).
        log_probs: ``(W,)`` log-probability the LM gave each word (sum over its tokens).
        seconds: time to compute all maps.
    """

    words: tuple[str, ...]
    maps: np.ndarray
    no_evidence: np.ndarray
    log_probs: np.ndarray
    method: str = WORD_METHOD
    seconds: float = 0.0

    def __len__(self) -> int:
        return len(self.words)

    def labels(self) -> list[str]:
        """``"3: threes"`` per word (index first: a word can occur twice)."""
        return [f"{i + 1}: {w}" for i, w in enumerate(self.words)]

    def summary(self, *, top: int = 3) -> list[dict[str, Any]]:
        """Per word: the word, its probability, whether the map carries evidence and its top patches."""
        out = []
        for i, w in enumerate(self.words):
            order = np.argsort(-self.maps[i], kind="stable")[:top]
            out.append(
                {
                    "index": i,
                    "word": w,
                    "probability": round(float(np.exp(self.log_probs[i])), 4),
                    "evidence": not bool(self.no_evidence[i]),
                    "top_patches": [int(j) for j in order],
                }
            )
        return out


@dataclass(frozen=True, eq=False)
class PhraseMap:
    """Where a typed phrase applies: a distribution over the patches (``values`` ``(n,)``)."""

    phrase: str
    values: np.ndarray
    method: str
    no_evidence: bool = False
    seconds: float = 0.0
    #: other per-phrase facts (e.g. the zero-shot model's prompts)
    info: dict[str, Any] = field(default_factory=dict)

    def summary(self, *, top: int = 3) -> dict[str, Any]:
        order = np.argsort(-self.values, kind="stable")[:top]
        return {
            "phrase": self.phrase,
            "method": self.method,
            "evidence": not self.no_evidence,
            "top_patches": [int(j) for j in order],
            **self.info,
        }


def _tensor(model: PathM3Model, features: np.ndarray) -> Any:
    import torch

    return torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))[None].to(model.device)


def _softmax_rows(logp: np.ndarray) -> np.ndarray:
    """Rows of log-probabilities -> distributions over the patches (p / Σ p)."""
    z = logp - logp.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def word_maps(
    model: PathM3Model, features: np.ndarray, caption: str, *, method: str = WORD_METHOD
) -> WordMaps:
    """Maps of every word of ``caption`` (generated for ``features`` ``(n, d)`` by ``model``), by one of
    :data:`WORD_METHODS`."""
    from .model import grounding as g

    if method not in ("auto", *WORD_METHODS):
        raise ValueError(f"word map method: unknown {method!r} (use 'auto' or one of {WORD_METHODS})")
    t0 = time.perf_counter()
    n = int(features.shape[0])
    method = resolve_method(method, n, phrase=False)
    x = _tensor(model, features)
    qp = g.query_pass(model, x)
    rel, patch_rel = g.text_relevance(model, qp, caption)
    words, _ = g.words_of(caption, rel)
    index = g.token_words(caption, rel.offsets, len(rel.token_ids))
    w = len(words)
    per_word = np.zeros((w, n), np.float64)
    logp = np.zeros(w, np.float64)
    if method == "singleton":
        _, single = g.singleton_log_probs(model, x, caption)
        patch_rel = single
    for t, wi in enumerate(index):
        per_word[wi] += patch_rel[t].numpy()
        logp[wi] += float(rel.log_probs[t])
    if not w:
        maps, empty = np.zeros((0, n), np.float32), np.zeros(0, bool)
    elif method == "singleton":
        maps, empty = _softmax_rows(per_word), np.zeros(w, bool)
    else:
        maps, empty = _distribution(per_word)
    return WordMaps(
        words=tuple(words),
        maps=maps,
        no_evidence=empty,
        log_probs=logp,
        method=method,
        seconds=time.perf_counter() - t0,
    )


def phrase_map(model: PathM3Model, features: np.ndarray, phrase: str, *, method: str = "auto") -> PhraseMap:
    """Where ``phrase`` applies among the patches ``features`` ``(n, d)``, by one of :data:`PHRASE_METHODS`:
    ``"auto"`` (:func:`resolve_method`), ``"singleton"`` (p(phrase | patch alone) as the caption, normalised over the patches), ``"lm"`` (gradient x attention of the phrase's LM probability, as word maps), ``"itc"`` (contrastive
    head: query weights from the phrase-query similarity, times their attention) or ``"joint"`` (the queries'
    attention with the phrase beside them; needs the Q-Former's text side)."""
    from .model import grounding as g

    phrase = " ".join(str(phrase).split())
    if not phrase:
        raise ValueError("phrase: empty; type a few words, e.g. 'solid nests'")
    if method not in PHRASE_METHODS:
        raise ValueError(f"phrase method: unknown {method!r} (use one of {PHRASE_METHODS})")
    t0 = time.perf_counter()
    method = resolve_method(method, int(features.shape[0]), phrase=True)
    x = _tensor(model, features)
    if method == "singleton":
        _, single = g.singleton_log_probs(model, x, phrase)
        maps, empty = _softmax_rows(single.sum(dim=0).numpy()[None].astype(np.float64)), np.zeros(1, bool)
    elif method == "joint":
        values = g.joint_attention(model, x, phrase).mean(dim=0).cpu().numpy()
        maps, empty = _distribution(values[None])
    else:
        qp = g.query_pass(model, x)
        if method == "lm":
            _, patch_rel = g.text_relevance(model, qp, phrase)
            maps, empty = _distribution(patch_rel.sum(dim=0).numpy()[None])
        else:
            weights = g.phrase_query_weights(model, qp.query_output[0], phrase)
            attn = _image_attention(model, x)
            maps, empty = _distribution((weights.cpu() @ attn.cpu()).numpy()[None])
    return PhraseMap(phrase, maps[0], method, bool(empty[0]), time.perf_counter() - t0)


def _image_attention(model: PathM3Model, x: Any) -> Any:
    """The image-only cross-attention (q, n) (heads and layers averaged)."""
    import torch

    with torch.no_grad():
        patches, mask = model._encode(x, None, "image")
        return model.qformer(patches, mask).cross_attention[0].float()


def save_maps_npz(
    path: PathLike, *, words: WordMaps | None, phrases: tuple[PhraseMap, ...], coords: np.ndarray
) -> Path:
    """Word and phrase maps in one ``.npz`` beside a result JSON: ``coords`` (n, 2) level-0 x, y; ``words``
    (W,) and ``word_maps`` (W, n); ``phrases`` (P,) and ``phrase_maps`` (P, n). Written atomically."""
    import os
    import tempfile

    path = Path(path)
    n = len(coords)
    arrays = {
        "coords": np.asarray(coords, dtype=np.int64),
        "words": np.asarray(words.words if words else (), dtype=str),
        "word_maps": words.maps if words else np.zeros((0, n), np.float32),
        "phrases": np.asarray([p.phrase for p in phrases], dtype=str),
        "phrase_maps": np.stack([p.values for p in phrases]) if phrases else np.zeros((0, n), np.float32),
    }
    fd, tmp = tempfile.mkstemp(suffix=".npz", dir=path.parent if str(path.parent) else ".")
    os.close(fd)
    try:
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def caption_class_agreement(caption: str, label: str, class_names: tuple[str, ...]) -> dict[str, Any]:
    """Whether the caption names a class, and whether it is the classifier's.

    A class counts as named when its name occurs in the caption as whole words (case-insensitive); when
    several do, the longest wins (a name can contain another). ``agrees`` is None when the caption names
    no class (nothing to compare).
    """
    text = " " + " ".join(re.findall(r"[\w-]+", str(caption).lower())) + " "
    named = [
        c for c in class_names if " " + " ".join(re.findall(r"[\w-]+", c.lower())) + " " in text and c.strip()
    ]
    caption_class = max(named, key=len) if named else None
    if caption_class is None:
        note = "the caption names no class"
        agrees = None
    elif caption_class == label:
        note = f"caption and classifier agree ({label})"
        agrees = True
    else:
        note = f"the caption says {caption_class!r}, the classifier {label!r}: they disagree"
        agrees = False
    return {"caption_class": caption_class, "classifier_class": label, "agrees": agrees, "note": note}
