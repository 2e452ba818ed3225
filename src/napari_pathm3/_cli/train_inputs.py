"""What ``napari-pathm3 train`` reads before training: the manifest's records and splits, and the facts the
feature store records (feature width, encoder, patch grid) that the new model inherits."""

from __future__ import annotations

import argparse
from typing import Any


def feature_width(records, features_dir) -> int:
    from ..training.data import load_features, resolve_features

    feats, _ = load_features(resolve_features(records[0].key, features_dir))
    return int(feats.shape[1])


def manifest_records(args: argparse.Namespace) -> tuple[list[Any], tuple[str, ...], list[Any], list[Any]]:
    """All rows, class names and the train / validation records of ``--manifest`` (a stratified validation split of
    the training rows when the manifest has none and ``--val-fraction`` > 0)."""
    from ..errors import PathM3Error
    from ..training.data import check_training_split, class_names_from, read_manifest, split_records
    from ..training.protocol import stratified_split

    records = read_manifest(args.manifest)
    if not records:
        raise PathM3Error(f"{args.manifest}: no rows")
    class_names = tuple(args.classes) if args.classes else class_names_from(records)
    if len(class_names) < 2:
        raise PathM3Error(
            f"{args.manifest}: its labels name {len(class_names)} class(es) {list(class_names)}; "
            "training a classifier needs at least two classes (add bags of another class, or pass --classes)"
        )
    parts = split_records(records)
    train_recs, val_recs = parts["train"], parts["val"]
    if not val_recs and args.val_fraction > 0:
        tr, va = stratified_split(
            [r.label for r in train_recs],
            fractions=(1 - args.val_fraction, args.val_fraction),
            seed=args.seed,
        )
        train_recs, val_recs = [train_recs[i] for i in tr], [train_recs[i] for i in va]
        source = f"{args.manifest} with --val-fraction {args.val_fraction:g}"
    else:
        source = str(args.manifest)
    check_training_split(train_recs, class_names, source=source)
    return records, class_names, train_recs, val_recs


def store_encoder(features_dir: str) -> str:
    """The registry name of the encoder of the zarr feature store's bags ("" when none is recorded, e.g.
    imported TRIDENT/CLAM files); two different encoders in one folder are an error."""
    from ..errors import PathM3Error
    from ..io.feature_store import FeatureStore

    store = FeatureStore(features_dir)
    names = {store.open_bag(key).encoder_name for key in store.keys()}
    names.discard("")
    if len(names) > 1:
        raise PathM3Error(
            f"{features_dir}: features of several encoders ({', '.join(sorted(names))}); train on one encoder's "
            "features (extract each into its own folder)"
        )
    return names.pop() if names else ""


def store_tiling(features_dir: str) -> Any:
    """The patch grid of the zarr feature store's bags (a ``TilingConfig``), or ``None`` when it records
    none (feature files of other toolkits carry no grid)."""
    from ..config import TilingConfig
    from ..errors import FeatureStoreError
    from ..io.feature_store import FeatureStore
    from ..schemas import load_config

    store = FeatureStore(features_dir)
    for key in store.keys():
        grid = store.open_bag(key).meta.grid
        tiling = None if grid is None else grid.tiling
        if tiling:
            source = f"{store.path_for(key)}: grid.tiling"
            fix = "re-extract this store (napari-pathm3 extract --overwrite)"
            return load_config(TilingConfig, tiling, source=source, fix=fix, error=FeatureStoreError)
    return None
