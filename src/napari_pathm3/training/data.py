"""Bags of patch features with a class and a caption: manifests, datasets and the padded collate.

torch is imported only inside :func:`collate_bags`, so widgets can build bags cheaply.

A manifest is a CSV with one row per bag. Column names (first match wins):

* key: ``slide`` | ``slide_id`` | ``id`` | ``features`` | ``path`` — a *name* looked up inside
  ``features_dir`` only (``<key>.zarr``, ``<key>``, ``<key>.h5``, ``<key>.npy``, ``<key>.pt``, ...); never a
  path (no ``/``, ``\\``, ``..``), and unique: one row per bag, so a slide cannot be in two splits
* class: ``label`` | ``subtype`` | ``class`` (class name, or an integer index)
* caption: ``caption`` | ``text`` (optional)
* split: ``split`` (optional; ``train`` / ``val`` / ``test``, or ``training`` / ``validation`` / ``valid`` /
  ``dev`` / ``testing``; empty = train); any other value is an error

PatchGastric's ``captions.csv`` (``id,subtype,text``) is a manifest of this kind.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._types import PathLike
from ..errors import FeatureStoreError, ManifestError, PathM3Error

log = logging.getLogger(__name__)

KEY_COLUMNS = ("slide", "slide_id", "id", "features", "path")
LABEL_COLUMNS = ("label", "subtype", "class")
CAPTION_COLUMNS = ("caption", "text")
IGNORE_INDEX = -100  # label of a bag without a class: skipped by the cross-entropy (torch's default)
SPLITS = ("train", "val", "test")
SPLIT_ALIASES = {"validation": "val", "valid": "val", "dev": "val", "training": "train", "testing": "test"}
#: longest caption a manifest cell may hold (characters): far above any pathology report sentence; a cell
#: beyond it is a broken file, not a caption
MAX_CAPTION_CHARS = 100_000


@dataclass(frozen=True, eq=False)
class SlideBag:
    """One training/evaluation bag: the features of some patches of one slide.

    Attributes:
        features: ``(n, d)`` float32 patch features.
        label: class index, or ``None`` when the bag has no class.
        caption: reference caption (also the text input in the image+text and text modes), or ``None``.
        slide_id: where the bag comes from (slide id, ``"<slide>#<region>"`` for regions).
        coords: ``(n, 2)`` level-0 ``(x, y)`` top-left corners of the patches, when known.
    """

    features: np.ndarray
    label: int | None = None
    caption: str | None = None
    slide_id: str = ""
    coords: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.features.shape[0])


@dataclass(frozen=True)
class BagRecord:
    """One manifest row: where the features are and what the bag is labelled with."""

    key: str
    label: str | None = None
    caption: str | None = None
    split: str | None = None


def _pick(columns: Sequence[str], names: Sequence[str]) -> str | None:
    lower = {c.strip().lower(): c for c in columns}
    return next((lower[n] for n in names if n in lower), None)


def check_bag_id(key: str, *, where: str) -> str:
    """``key`` when it is a bag *name* (looked up inside the features folder only), else
    :class:`ManifestError`: an absolute path, a path with folders or ``..`` would read outside it."""
    bad = (
        not key
        or key in (".", "..")
        or "/" in key
        or "\\" in key
        or key.startswith("~")
        or any(ord(ch) < 32 for ch in key)
        or Path(key).is_absolute()
    )
    if bad:
        raise ManifestError(
            f"{where}: id {key[:80]!r} is a path, not a name; ids name bags inside --features "
            "(e.g. 'slide_01' for FEATURES/slide_01.zarr or .h5): put the files in that folder and give their names"
        )
    return key


def canonical_split(value: str | None, *, where: str) -> str | None:
    """``train`` / ``val`` / ``test`` (aliases mapped), ``None`` for an empty cell; :class:`ManifestError`
    for anything else (a typo must not silently train on, or leave out, a bag)."""
    if value is None:
        return None
    s = value.strip().lower()
    s = SPLIT_ALIASES.get(s, s)
    if s not in SPLITS:
        raise ManifestError(
            f"{where}: split = {value[:40]!r}: not one of {', '.join(SPLITS)} (or empty for train); "
            "fix the split column"
        )
    return s


def read_manifest(path: PathLike) -> list[BagRecord]:
    """Read a manifest CSV (see the module docstring for the columns), validated row by row: ids are unique
    names, splits from the closed set.

    Raises:
        ManifestError: one line naming the file, the row, the column, the value and the fix.
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            cols = reader.fieldnames or []
            key_c = _pick(cols, KEY_COLUMNS)
            if key_c is None:
                raise ManifestError(f"{path}: no slide column; name one of {', '.join(KEY_COLUMNS)}")
            label_c, cap_c, split_c = (
                _pick(cols, LABEL_COLUMNS),
                _pick(cols, CAPTION_COLUMNS),
                _pick(cols, ("split",)),
            )

            def get(row: dict[str, str], c: str | None) -> str | None:
                v = row.get(c) if c else None
                if isinstance(v, list):  # more cells than header columns: DictReader's restkey
                    v = None
                return v.strip() if v is not None and v.strip() != "" else None

            records: list[BagRecord] = []
            first_row: dict[str, int] = {}
            for row in reader:
                key = get(row, key_c)
                if not key:
                    continue
                where = f"{path}: row {reader.line_num}"
                check_bag_id(key, where=where)
                if key in first_row:
                    raise ManifestError(
                        f"{where}: id {key!r} again (first on row {first_row[key]}); one row per bag: a bag "
                        "listed twice could be in training and validation at once. Remove the duplicate"
                    )
                first_row[key] = reader.line_num
                caption = get(row, cap_c)
                if caption is not None and len(caption) > MAX_CAPTION_CHARS:
                    raise ManifestError(
                        f"{where}: caption of {len(caption):,} characters (at most {MAX_CAPTION_CHARS:,}); "
                        "is the file's quoting broken?"
                    )
                records.append(
                    BagRecord(
                        key=key,
                        label=get(row, label_c),
                        caption=caption,
                        split=canonical_split(get(row, split_c), where=where),
                    )
                )
            return records
    except csv.Error as err:  # e.g. "field larger than field limit": a broken quote swallowed the file
        raise ManifestError(f"{path}: not a readable CSV ({err}); check its quoting") from err
    except UnicodeDecodeError as err:
        raise ManifestError(f"{path}: not UTF-8 text ({err}); save the manifest as UTF-8 CSV") from err
    except OSError as err:
        raise ManifestError(f"cannot read manifest {path}: {err}") from err


def check_training_split(train: Sequence[BagRecord], class_names: Sequence[str], *, source: str) -> None:
    """At least one training bag, and one per class: a class the model never sees cannot be learned, and an
    empty training set would "train" on nothing and still write a checkpoint.

    Raises:
        ManifestError: naming the manifest, the class(es) without training bags and the fix.
    """
    if not train:
        raise ManifestError(
            f"{source}: no training bags (every row has split val/test); mark some rows split=train "
            "or leave the split column empty"
        )
    seen = {label_index(r.label, class_names) for r in train}
    missing = [c for i, c in enumerate(class_names) if i not in seen]
    if missing:
        raise ManifestError(
            f"{source}: no training bag of class(es) {missing} (of {list(class_names)}); add training rows of "
            "those classes, or leave them out of --classes"
        )


def class_names_from(records: Sequence[BagRecord]) -> tuple[str, ...]:
    """Sorted distinct class names of ``records`` (for a manifest whose classes are not given)."""
    return tuple(sorted({r.label for r in records if r.label is not None}))


def label_index(label: str | int | None, class_names: Sequence[str]) -> int | None:
    """Class index of ``label`` (a name, case-insensitive, or an index)."""
    if label is None:
        return None
    if isinstance(label, (int, np.integer)):
        idx = int(label)
    else:
        lookup = {c.lower(): i for i, c in enumerate(class_names)}
        s = str(label).strip()
        if s.lower() in lookup:
            return lookup[s.lower()]
        if not s.lstrip("-").isdigit():
            raise PathM3Error(f"label {s!r} is not one of the classes {list(class_names)}")
        idx = int(s)
    if not 0 <= idx < len(class_names):
        raise PathM3Error(f"label index {idx} out of range for {len(class_names)} classes")
    return idx


# --------------------------------------------------------------------------------------------- feature files

_SUFFIXES = (".zarr", "", ".h5", ".hdf5", ".npy", ".pt", ".pth", ".safetensors")


def resolve_features(key: str, features_dir: PathLike | None = None) -> Path:
    """Path of the features of ``key``: with ``features_dir``, the feature store entry of slide ``key`` in it,
    else ``features_dir/<key><suffix>`` (``key`` must be a name: nothing outside ``features_dir`` is read);
    without, ``key`` itself as a path (API use)."""
    p = Path(key)
    if features_dir is None and p.exists():
        return p
    if features_dir is not None:
        check_bag_id(key, where=f"bag {key[:80]!r}")
        from ..io.feature_store import FeatureStore

        base = Path(features_dir)
        try:
            store_path = FeatureStore(base).path_for(key)  # %-quoted slide ids
        except ValueError:
            store_path = None
        if store_path is not None and store_path.exists():
            return store_path
        for suffix in _SUFFIXES:
            cand = base / f"{key}{suffix}"
            if cand.exists():
                return cand
    where = f" in {features_dir}" if features_dir is not None else ""
    raise FeatureStoreError(
        f"no features for {key!r}{where}; run `napari-pathm3 extract` first or fix the path"
    )


def load_features(path: PathLike) -> tuple[np.ndarray, np.ndarray | None]:
    """``(features (n, d) float32, coords (n, 2) or None)`` from a feature store or an exported file."""
    from ..io.interop import read_feature_file

    bag = read_feature_file(path)  # float32 (n, d) features, int64 (n, 2) coords: checked by FeatureBag
    if len(bag) == 0:
        raise FeatureStoreError(
            f"{path}: expected (n, d) features with n >= 1, got shape {bag.features.shape}"
        )
    return bag.features, bag.coords


# --------------------------------------------------------------------------------------------- datasets


def row_major_order(coords: np.ndarray) -> np.ndarray:
    """Indices that sort patches row-major by their level-0 top-left ``(x, y)``: by y, then x.

    Nyström landmarks are means of contiguous segments of a bag (docs/method.md §2): in row-major order a
    segment is a band of neighbouring patches, in file or hash order a random sample of the whole slide.
    The sort is stable, so patches with equal coordinates keep their order.
    """
    coords = np.asarray(coords)
    return np.lexsort((coords[:, 0], coords[:, 1]))


def spatially_ordered(bag: SlideBag) -> SlideBag:
    """``bag`` with its patches in row-major order (unchanged when it has no coords or is already sorted)."""
    if bag.coords is None or len(bag) < 2:
        return bag
    order = row_major_order(bag.coords)
    if np.array_equal(order, np.arange(len(order))):
        return bag
    return SlideBag(bag.features[order], bag.label, bag.caption, bag.slide_id, bag.coords[order])


@dataclass(eq=False)
class BagDataset:
    """Map-style dataset of :class:`SlideBag` (works with ``torch.utils.data.DataLoader``).

    Items are either in-memory :class:`SlideBag` s (e.g. from :func:`~.regions.bags_from_regions`) or
    :class:`BagRecord` s whose features are read from ``features_dir`` when indexed.

    Args:
        items: bags or manifest records.
        class_names: the model's classes; labels are mapped to their index.
        features_dir: where record keys are looked up.
        max_patches: when set, a bag with more patches is randomly subsampled to this many (bounds memory in
            training; ``reseed`` makes the choice depend on the epoch). ``None`` keeps every patch.
        loader: ``path -> (features, coords)``, defaults to :func:`load_features`.
        spatial_order: return bags with coords in row-major patch order (:func:`spatially_ordered`), so
            the Nyström landmarks are local; bags without coords keep their order.
    """

    items: Sequence[SlideBag | BagRecord]
    class_names: Sequence[str] = ()
    features_dir: PathLike | None = None
    max_patches: int | None = None
    seed: int = 0
    loader: Callable[[Path], tuple[np.ndarray, np.ndarray | None]] | None = None
    spatial_order: bool = True
    _epoch: int = field(default=0, repr=False)

    def __len__(self) -> int:
        return len(self.items)

    def reseed(self, epoch: int) -> None:
        self._epoch = epoch

    @property
    def labels(self) -> list[int | None]:
        return [self._label(it) for it in self.items]

    def _label(self, item: SlideBag | BagRecord) -> int | None:
        if isinstance(item, SlideBag):
            return item.label
        return label_index(item.label, self.class_names)

    def __getitem__(self, i: int) -> SlideBag:
        item = self.items[i]
        if isinstance(item, SlideBag):
            bag = item
        else:
            feats, coords = (self.loader or load_features)(resolve_features(item.key, self.features_dir))
            bag = SlideBag(feats, self._label(item), item.caption, Path(item.key).stem or item.key, coords)
        if self.max_patches is not None and len(bag) > self.max_patches:
            rng = np.random.default_rng((self.seed, self._epoch, i))
            keep = np.sort(rng.choice(len(bag), self.max_patches, replace=False))
            coords = None if bag.coords is None else bag.coords[keep]
            bag = SlideBag(bag.features[keep], bag.label, bag.caption, bag.slide_id, coords)
        return spatially_ordered(bag) if self.spatial_order else bag


def split_records(records: Sequence[BagRecord]) -> dict[str, list[BagRecord]]:
    """Group records by their ``split`` column (records without one go to ``"train"``)."""
    out: dict[str, list[BagRecord]] = {"train": [], "val": [], "test": []}
    for r in records:
        s = canonical_split(r.split, where=f"bag {r.key!r}") or "train"
        out[s].append(r)
    return out


# --------------------------------------------------------------------------------------------- collate


@dataclass
class Batch:
    """Padded batch. ``features (b, n, d)`` zero-padded, ``mask (b, n)`` True on real patches,
    ``labels (b,)`` long with :data:`IGNORE_INDEX` for unlabelled bags, ``captions`` (None when absent).

    :attr:`caption_mask` marks the bags with a caption: the model leaves the others out of the caption loss
    (and, in ``image_text`` mode, gives them the image-only path) bag by bag, so one caption-less bag does
    not change what the rest of the batch trains on."""

    features: Any
    mask: Any
    labels: Any
    captions: list[str | None]
    slide_ids: list[str]
    indices: list[int] = field(default_factory=list)

    @property
    def caption_mask(self) -> Any:
        """``(b,)`` bool tensor, True for bags with a (non-blank) caption."""
        import torch

        return torch.tensor([c is not None and c.strip() != "" for c in self.captions], dtype=torch.bool)

    def to(self, device: Any) -> Batch:
        return Batch(
            self.features.to(device, non_blocking=True),
            self.mask.to(device, non_blocking=True),
            self.labels.to(device, non_blocking=True),
            self.captions,
            self.slide_ids,
            self.indices,
        )


def collate_bags(bags: Sequence[SlideBag]) -> Batch:
    """Stack bags of different sizes into one zero-padded :class:`Batch` with a boolean mask."""
    import torch

    if not bags:
        raise ValueError("bags: empty batch")
    n = max(len(b) for b in bags)
    d = bags[0].features.shape[1]
    feats = torch.zeros(len(bags), n, d, dtype=torch.float32)
    mask = torch.zeros(len(bags), n, dtype=torch.bool)
    for i, b in enumerate(bags):
        if b.features.shape[1] != d:
            raise FeatureStoreError(f"{b.slide_id}: feature dim {b.features.shape[1]} != {d} of the batch")
        feats[i, : len(b)] = torch.from_numpy(np.ascontiguousarray(b.features, dtype=np.float32))
        mask[i, : len(b)] = True
    labels = torch.tensor([IGNORE_INDEX if b.label is None else b.label for b in bags], dtype=torch.long)
    return Batch(feats, mask, labels, [b.caption for b in bags], [b.slide_id for b in bags])


class _Indexed:
    """Dataset wrapper returning ``(index, bag)`` so evaluation can de-duplicate DistributedSampler padding."""

    def __init__(self, dataset: Sequence[SlideBag] | BagDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[int, SlideBag]:
        return i, self.dataset[i]


def collate_indexed(items: Sequence[tuple[int, SlideBag]]) -> Batch:
    batch = collate_bags([b for _, b in items])
    batch.indices = [i for i, _ in items]
    return batch
