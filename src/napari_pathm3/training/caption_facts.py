"""What a generated caption states, read back against the reference and the classifier.

* :func:`count_word_accuracy`: where reference captions state quantities with count words ("no", "one" …
  "ten", or digits) before a noun, the share of those (count, noun) facts the generated caption states with
  the same count for the same noun. ``None`` when no reference states a quantity.
* :class:`CaptionClassifier`: the class a caption *says*, learned from the training captions and labels
  (multinomial naive Bayes on words and word pairs, Laplace smoothing); :func:`agreement` is the share of bags
  whose generated caption says the class the classification head predicted. A caption that contradicts the
  predicted class is a fact the user must not be shown silently.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

COUNTS = {
    "no": 0,
    "zero": 0,
    "one": 1,
    "a": 1,
    "single": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
}
_WORD = re.compile(r"[a-z0-9]+")


def _tokens(text: str | None) -> list[str]:
    return _WORD.findall(str(text or "").lower())


def count_facts(caption: str | None) -> dict[str, int]:
    """``{noun: count}`` for each count word (or number) followed by a word; "a" counts only before a
    singular-looking noun it is the sole count of (it is also an article)."""
    toks = _tokens(caption)
    out: dict[str, int] = {}
    for a, b in zip(toks, toks[1:], strict=False):
        if b in COUNTS:
            continue
        if a.isdigit():
            out.setdefault(b.rstrip("s"), int(a))
        elif a in COUNTS and a != "a":
            out.setdefault(b.rstrip("s"), COUNTS[a])  # "mitotic figure(s)": the noun's stem, not its number
    return out


def count_word_accuracy(references: Sequence[str | None], captions: Sequence[str | None]) -> float | None:
    """Share of the references' (count, noun) facts that the paired caption states with the same count."""
    hits = total = 0
    for ref, cap in zip(references, captions, strict=True):
        want = count_facts(ref)
        if not want:
            continue
        got = count_facts(cap)
        total += len(want)
        hits += sum(got.get(noun) == n for noun, n in want.items())
    return hits / total if total else None


def states_quantities(captions: Sequence[str | None]) -> bool:
    """Whether any caption states a count (so count-word accuracy means something)."""
    return any(count_facts(c) for c in captions)


class CaptionClassifier:
    """The class a caption says: multinomial naive Bayes on words and adjacent word pairs of the training
    captions of each class (Laplace smoothing, class priors from the training bags)."""

    def __init__(self, captions: Sequence[str | None], labels: Sequence[int], num_classes: int) -> None:
        self.num_classes = num_classes
        self.counts: list[Counter[str]] = [Counter() for _ in range(num_classes)]
        prior = np.ones(num_classes)
        for cap, y in zip(captions, labels, strict=True):
            if cap and 0 <= int(y) < num_classes:
                self.counts[int(y)].update(self._features(cap))
                prior[int(y)] += 1
        self.vocab = set().union(*self.counts)
        self.totals = [sum(c.values()) for c in self.counts]
        self.log_prior = np.log(prior / prior.sum())
        self.trained = bool(self.vocab)

    @staticmethod
    def _features(caption: str) -> list[str]:
        toks = _tokens(caption)
        return toks + [f"{a}_{b}" for a, b in zip(toks, toks[1:], strict=False)]

    def predict(self, caption: str | None) -> int | None:
        """The most likely class, or None for an empty caption or one with no known word."""
        feats = [f for f in self._features(caption or "") if f in self.vocab]
        if not feats or not self.trained:
            return None
        v = len(self.vocab)
        scores = [
            self.log_prior[c] + sum(math.log((self.counts[c][f] + 1) / (self.totals[c] + v)) for f in feats)
            for c in range(self.num_classes)
        ]
        return int(np.argmax(scores))


def agreement(
    classifier: CaptionClassifier, captions: Sequence[str | None], predicted: Sequence[int]
) -> float | None:
    """Share of bags whose caption says the class the model predicted (bags whose caption says no known
    class count as disagreeing); None without captions."""
    pairs = [(c, int(p)) for c, p in zip(captions, predicted, strict=True) if c is not None]
    if not pairs or not classifier.trained:
        return None
    return float(np.mean([classifier.predict(c) == p for c, p in pairs]))
