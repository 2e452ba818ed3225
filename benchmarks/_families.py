"""Task families of synthetic MIL + caption bags (issue 21), and the one writer of benchmark bags.

Every family draws bags of instance *kinds*; a kind's feature is its prototype (a random direction in
``width`` dims, fixed per seed) plus Gaussian noise, so instances are never repeated between bags or
splits. The families differ in what decides the class and what the caption states:

* ``presence``: two rare key kinds among distractors; the class is which of them the bag holds (neither /
  one / both); the caption names each kind present with a count word (1-4), then the grade.
* ``abundance``: both key kinds are present in varying numbers; the class is which one outnumbers the other;
  the caption says which predominates and whether a third kind (inflammation) is present.
* ``counting``: one key kind, 0-4 instances, in bags of 10-150 patches (so its share does not give the
  count); the class is "high" for 3 or more; the caption states the count.
* ``spatial``: 4-8 key instances on a grid of patches (``coords``); the class is whether they lie in one
  compact cluster or scattered; features alone cannot tell (the same kinds in both classes).
* ``distractors``: heavy distractor load (80-160 patches, a third of them *mimics* close to the key kind);
  the class is whether 1-4 key instances are present; the caption states how many.

Bags are written as TRIDENT/CLAM-style ``.h5`` files (``features``, ``coords``) plus ``manifest.csv``
(slide,label,caption,split) that ``napari-pathm3 train --manifest`` reads. Splits are stratified by class
(20/40/40 train/val/test by default, as in the issue's measurement).
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: count words the captions use (and the evaluation reads back)
COUNT_WORDS = ("no", "one", "two", "three", "four")
NOISE = 1.0  # per-dimension noise; prototypes have unit variance per dimension
MIMIC = 0.55  # a mimic's prototype lies this far from the key kind's, towards a distractor's


@dataclass(frozen=True)
class Bag:
    """One synthetic slide: its instance kinds (``-1`` = distractor), patch grid coordinates, class, caption."""

    kinds: np.ndarray  # (n,) int: key kind index, -1 distractor, -2 mimic
    coords: np.ndarray  # (n, 2) int64 grid positions (x, y) in patches
    label: str
    caption: str


@dataclass(frozen=True)
class Family:
    """A task family: its classes, default feature width, and how one bag of a class is drawn."""

    name: str
    classes: tuple[str, ...]
    width: int
    draw: Callable[[np.random.Generator, str], Bag]
    counting: bool  # captions state quantities with count words
    what: str  # what decides the class / what the caption states (docs)


def _noun(n: int, singular: str, plural: str) -> str:
    return f"{COUNT_WORDS[n]} {singular if n == 1 else plural}"


def _line(n: int) -> np.ndarray:
    """Patches in reading order on a square-ish grid (coords of the bags whose layout does not matter)."""
    side = int(np.ceil(np.sqrt(n)))
    idx = np.arange(n)
    return np.stack([idx % side, idx // side], 1).astype(np.int64)


def _mix(rng: np.random.Generator, keys: list[int], size: int, *, mimics: int = 0) -> np.ndarray:
    kinds = np.asarray(keys + [-2] * mimics + [-1] * max(0, size - len(keys) - mimics), dtype=np.int64)
    return rng.permutation(kinds)


# ----------------------------------------------------------------------------------------------- families
MITOSIS = ("mitotic figure", "mitotic figures")
NECROSIS = ("necrotic focus", "necrotic foci")


def _presence(rng: np.random.Generator, cls: str) -> Bag:
    has = {"benign": (), "low grade": (0,) if rng.random() < 0.5 else (1,), "high grade": (0, 1)}[cls]
    counts = [int(rng.integers(1, 5)) if k in has else 0 for k in (0, 1)]
    size = int(rng.integers(20, 121))
    kinds = _mix(rng, [0] * counts[0] + [1] * counts[1], size)
    parts = [_noun(c, *noun) for c, noun in zip(counts, (MITOSIS, NECROSIS), strict=True) if c]
    caption = (" and ".join(parts) if parts else "no atypia") + f" . {cls} ."
    return Bag(kinds, _line(len(kinds)), cls, caption)


def _abundance(rng: np.random.Generator, cls: str) -> Bag:
    few, many = int(rng.integers(2, 6)), int(rng.integers(8, 15))
    n0, n1 = (many, few) if cls == "glandular" else (few, many)
    inflamed = rng.random() < 0.5
    size = int(rng.integers(30, 61))
    kinds = _mix(rng, [0] * n0 + [1] * n1 + [2] * (3 if inflamed else 0), size)
    main, other = ("glands", "solid sheets") if cls == "glandular" else ("solid sheets", "glands")
    caption = f"mostly {main} with some {other} . " + (
        "inflammation present ." if inflamed else "no inflammation ."
    )
    return Bag(kinds, _line(len(kinds)), cls, caption)


def _counting(rng: np.random.Generator, cls: str) -> Bag:
    n = int(rng.integers(3, 5)) if cls == "high" else int(rng.integers(0, 3))
    size = int(rng.integers(10, 151))
    kinds = _mix(rng, [0] * n, size)
    return Bag(kinds, _line(len(kinds)), cls, f"{_noun(n, *MITOSIS)} . {cls} mitotic count .")


def _spatial(rng: np.random.Generator, cls: str) -> Bag:
    side = int(rng.integers(8, 13))
    n = int(rng.integers(4, 9))
    cells = np.stack(np.meshgrid(np.arange(side), np.arange(side), indexing="xy"), -1).reshape(-1, 2)
    if cls == "clustered":  # the n cells nearest a random centre
        centre = rng.integers(1, side - 1, 2)
        d = np.abs(cells - centre).sum(1) + rng.random(len(cells)) * 0.5
        chosen = np.argsort(d)[:n]
    else:  # scattered: no two key cells adjacent (8-neighbourhood)
        chosen = []
        for j in rng.permutation(len(cells)):
            if all(np.abs(cells[j] - cells[i]).max() > 1 for i in chosen):
                chosen.append(int(j))
            if len(chosen) == n:
                break
        chosen = np.asarray(chosen)
    kinds = np.full(len(cells), -1, np.int64)
    kinds[chosen] = 0
    inflamed = rng.random() < 0.5
    if inflamed:
        free = np.flatnonzero(kinds == -1)
        kinds[rng.choice(free, 3, replace=False)] = 2
    arrangement = "a single tumour nest" if cls == "clustered" else "scattered tumour cells"
    caption = f"{arrangement} . " + ("inflammation present ." if inflamed else "no inflammation .")
    return Bag(kinds, cells.astype(np.int64), cls, caption)


def _distractors(rng: np.random.Generator, cls: str) -> Bag:
    n = int(rng.integers(1, 5)) if cls == "positive" else 0
    size = int(rng.integers(80, 161))
    kinds = _mix(rng, [0] * n, size, mimics=size // 3)
    caption = f"{_noun(n, 'tumour cell', 'tumour cells')} among reactive cells . {cls} ."
    return Bag(kinds, _line(len(kinds)), cls, caption)


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            name="presence",
            classes=("benign", "low grade", "high grade"),
            width=64,
            draw=_presence,
            counting=True,
            what="class: which of two rare key kinds the bag holds; caption: each kind present with its count",
        ),
        Family(
            name="abundance",
            classes=("glandular", "solid"),
            width=256,
            draw=_abundance,
            counting=False,
            what="class: which of two kinds outnumbers the other; caption: that, and whether a third kind is present",
        ),
        Family(
            name="counting",
            classes=("low", "high"),
            width=128,
            draw=_counting,
            counting=True,
            what="class: 3+ key instances in bags of 10-150 patches; caption: the count (0-4)",
        ),
        Family(
            name="spatial",
            classes=("clustered", "scattered"),
            width=64,
            draw=_spatial,
            counting=False,
            what="class: key patches in one cluster or scattered (only coords tell); caption: that, and inflammation",
        ),
        Family(
            name="distractors",
            classes=("negative", "positive"),
            width=512,
            draw=_distractors,
            counting=True,
            what="class: 1-4 key instances among 80-160 patches, a third of them mimics; caption: the count",
        ),
    )
}


# -------------------------------------------------------------------------------------------- features
def prototypes(seed: int, width: int, kinds: int = 3, distractor_kinds: int = 6) -> dict[str, np.ndarray]:
    """Per seed: key-kind prototypes ``(kinds, width)``, distractor prototypes and the mimic prototype."""
    rng = np.random.default_rng([seed, width, 7])
    keys = rng.standard_normal((kinds, width)).astype(np.float32)
    distract = rng.standard_normal((distractor_kinds, width)).astype(np.float32)
    mimic = (1 - MIMIC) * keys[0] + MIMIC * distract[0]
    return {"keys": keys, "distractors": distract, "mimic": mimic.astype(np.float32)}


def features_of(bag: Bag, protos: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """``(n, width)`` float32 instance features of ``bag``: prototype + N(0, NOISE²) per dimension."""
    width = protos["keys"].shape[1]
    means = np.empty((len(bag.kinds), width), np.float32)
    key = bag.kinds >= 0
    means[key] = protos["keys"][bag.kinds[key]]
    dis = bag.kinds == -1
    means[dis] = protos["distractors"][rng.integers(0, len(protos["distractors"]), int(dis.sum()))]
    means[bag.kinds == -2] = protos["mimic"]
    return (means + NOISE * rng.standard_normal(means.shape).astype(np.float32)).astype(np.float32)


SPLIT = (("train", 0.2), ("val", 0.4), ("test", 0.4))


def make_cohort(family: Family, seed: int, bags: int, *, width: int | None = None) -> dict[str, list]:
    """``{split: [(features, Bag), ...]}``: ``bags`` bags, classes balanced, split 20/40/40 stratified by
    class. Deterministic in ``(family, seed, bags, width)``."""
    width = width or family.width
    rng = np.random.default_rng([seed, bags, width, sum(map(ord, family.name))])
    protos = prototypes(seed, width)
    per_class = {c: [family.draw(rng, c) for _ in range(bags // len(family.classes))] for c in family.classes}
    out: dict[str, list] = {s: [] for s, _ in SPLIT}
    for items in per_class.values():
        a, b = round(SPLIT[0][1] * len(items)), round((SPLIT[0][1] + SPLIT[1][1]) * len(items))
        for split, part in (("train", items[:a]), ("val", items[a:b]), ("test", items[b:])):
            out[split] += [(features_of(bag, protos, rng), bag) for bag in part]
    for split in out:  # classes interleaved, not in blocks
        order = rng.permutation(len(out[split]))
        out[split] = [out[split][j] for j in order]
    return out


# ----------------------------------------------------------------------------------------------- writing
def write_bags(rows: Sequence[tuple[str, np.ndarray, np.ndarray | None, str, str]], folder: Path) -> Path:
    """TRIDENT/CLAM-style ``.h5`` bags (``features``, ``coords`` in level-0 pixels, ``patch_size``) and
    ``manifest.csv`` (slide,label,caption,split), read back like any user's h5 bags. ``rows`` are
    ``(split, features, grid coords or None, label, caption)``; bags are named ``<split>_<index>``."""
    import h5py

    folder.mkdir(parents=True, exist_ok=True)
    manifest_rows, seen = [], {}
    for split, feats, grid, label, caption in rows:
        key = f"{split}_{seen.setdefault(split, 0):04d}"
        seen[split] += 1
        if grid is None:  # patches in a row
            grid = np.stack([np.arange(len(feats)), np.zeros(len(feats))], 1)
        with h5py.File(folder / f"{key}.h5", "w") as fh:
            fh.create_dataset("features", data=np.asarray(feats, np.float32))
            fh.create_dataset("coords", data=(np.asarray(grid) * 8).astype(np.int64))
            fh.attrs["patch_size"] = 8
        manifest_rows.append({"slide": key, "label": label, "caption": caption, "split": split})
    manifest = folder / "manifest.csv"
    with manifest.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["slide", "label", "caption", "split"])
        w.writeheader()
        w.writerows(manifest_rows)
    return manifest


def write_cohort(cohort: dict[str, list], folder: Path) -> Path:
    """:func:`write_bags` of a :func:`make_cohort` result."""
    rows = [(s, f, b.coords, b.label, b.caption) for s, items in cohort.items() for f, b in items]
    return write_bags(rows, folder)
