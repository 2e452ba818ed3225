"""``napari-pathm3 extract``: patch features of many slides into a feature store.

    napari-pathm3 extract SLIDE [SLIDE ...] --out STORE [--encoder NAME]
    napari-pathm3 extract --manifest slides.csv --out STORE --workers 4        # local dask cluster
    napari-pathm3 extract --manifest slides.csv --out STORE --scheduler tcp://host:8786

Exit status 1 when any slide failed (each failure is listed; the others are still extracted).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..config import DEFAULT_ENCODER
from ._checks import BATCH, FRACTION, MPP, PATCH_SIZE, WORKERS, add_device

EXAMPLES = """examples:
  napari-pathm3 extract slide1.svs slide2.svs --out features/
  napari-pathm3 extract --manifest slides.csv --out features/ --encoder timm:hf-hub:MahmoodLab/UNI --device cuda
  napari-pathm3 extract slide.tif --mpp 0.25 --out features/      # a slide without µm/px in its file
  napari-pathm3 extract --list-encoders
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("extract", help="extract patch features of slides into a feature store (resumable)")
    p.add_argument("slides", nargs="*", help="slide files or DICOM folders")
    p.add_argument("--manifest", help="CSV with a 'slide' column (optional: slide_id, mpp)")
    p.add_argument("--out", help="feature store folder (one zarr group per slide)")
    p.add_argument(
        "--encoder",
        default=DEFAULT_ENCODER,
        help="encoder name: builtin:colorstats (offline), timm:…, hf:…, local:FOLDER (default: %(default)s)",
    )
    p.add_argument(
        "--list-encoders", action="store_true", help="print known and cached encoder names and exit"
    )
    p.add_argument("--patch-size", type=PATCH_SIZE, default=224, help="patch side in px, 8-4096")
    p.add_argument("--target-mpp", type=MPP, default=0.5, help="µm/px of the patches (default: %(default)s)")
    p.add_argument("--min-tissue", type=FRACTION, default=0.25, help="minimum tissue fraction of a patch")
    p.add_argument("--mpp", type=MPP, default=None, help="µm/px at level 0 for slides that lack it")
    p.add_argument("--batch-size", type=BATCH, default=64, help="patches per encoder batch, 1-4096")
    p.add_argument("--num-workers", type=WORKERS, default=None, help="patch-reading threads per slide, 1-256")
    add_device(p)
    p.add_argument(
        "--dtype", choices=("float32", "float16"), default="float32", help="stored feature precision"
    )
    p.add_argument("--overwrite", action="store_true", help="recompute even finished slides")
    p.add_argument(
        "--format",
        choices=("store", "spatialdata"),
        default="store",
        help="store = our feature store (default); spatialdata = one SpatialData zarr per slide in "
        "wsidata/LazySlide layout, OUT/<slide_id>.zarr (features cached in OUT/.pathm3-store; needs the "
        "[spatialdata] extra)",
    )
    p.add_argument(
        "--scheduler", help="dask.distributed scheduler address: one task per slide on that cluster"
    )
    p.add_argument(
        "--workers", type=WORKERS, default=None, help="start a local dask cluster with N workers, 1-256"
    )
    p.add_argument(
        "--cluster-threads", action="store_true", help="local cluster workers as threads, not processes"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .._types import Progress
    from ..config import TilingConfig
    from ..errors import PathM3Error
    from ..features.batch import SlideJob, extract_many, jobs_from_paths, read_manifest, summarize

    if args.list_encoders:
        from ..features.encoders import list_encoders

        print("\n".join(list_encoders()))
        return 0
    if not args.out:
        raise PathM3Error("--out STORE is required")
    jobs: list[SlideJob] = read_manifest(args.manifest) if args.manifest else []
    jobs += jobs_from_paths(args.slides)
    if not jobs:
        raise PathM3Error("no slides: pass slide paths or --manifest slides.csv")
    if args.mpp is not None:
        jobs = [j if j.mpp is not None else SlideJob(j.slide, j.slide_id, args.mpp) for j in jobs]
    tiling = TilingConfig(
        patch_size=args.patch_size, target_mpp=args.target_mpp, min_tissue_fraction=args.min_tissue
    )

    from tqdm.auto import tqdm

    from .progress import COUNT_FORMAT, second_line

    bar = tqdm(total=len(jobs), unit="slide", desc="extract", disable=args.no_progress, file=sys.stderr)
    # a slide's own bar in patches with the time left (with one slide the slide counter alone sat at 0/1)
    patches: dict[str, Any] = {"bar": None, "slide": None}

    def on_slides(event: Progress) -> None:
        bar.update(event.done - bar.n)

    def on_patches(event: Progress) -> None:  # detail: the slide id
        if patches["slide"] != event.detail or patches["bar"] is None:
            if patches["bar"] is not None:
                patches["bar"].close()
            patches["slide"] = event.detail
            patches["bar"] = tqdm(
                total=event.total or None,
                desc=str(event.detail),
                leave=False,
                file=sys.stderr,
                position=second_line(),
                smoothing=0,
                bar_format=COUNT_FORMAT.replace("{unit}", " patches"),
            )
        patches["bar"].update(event.done - patches["bar"].n)

    try:
        if args.format == "spatialdata":  # fail before hours of extraction, not after
            from ..io.extras import require

            require("spatialdata", purpose="extract --format spatialdata")
        results = extract_many(
            jobs,
            args.encoder,
            _store_dir(args),
            tiling=tiling,
            batch_size=args.batch_size,
            num_workers=args.num_workers,
            device=args.device,
            dtype=args.dtype,
            overwrite=args.overwrite,
            scheduler=args.scheduler,
            workers=args.workers,
            processes=not args.cluster_threads,
            progress=on_slides,
            patch_progress=None if args.no_progress else on_patches,
        )
    finally:
        if patches["bar"] is not None:
            patches["bar"].close()
        bar.close()
    if args.format == "spatialdata":
        results = _to_spatialdata(results, args, {j.slide_id: j.mpp for j in jobs})
    print(summarize(results))
    return 0 if all(r.ok for r in results) else 1


def _store_dir(args: argparse.Namespace) -> str:
    from pathlib import Path

    return str(Path(args.out) / ".pathm3-store") if args.format == "spatialdata" else args.out


def _to_spatialdata(results: list, args: argparse.Namespace, mpps: dict) -> list:
    """Export every extracted slide as ``OUT/<slide_id>.zarr`` (SpatialData); a failed export fails that slide."""
    import dataclasses

    from ..errors import PathM3Error
    from ..exports import export_bag_spatialdata
    from ..io.feature_store import FeatureStore, read_bag
    from ..io.slide import open_slide

    root = FeatureStore(args.out)  # the same %-quoted names as a feature store: training finds them by id
    out = []
    for r in results:
        if not r.ok:
            out.append(r)
            continue
        target = root.path_for(r.slide_id)
        try:
            with open_slide(r.slide, mpp=mpps.get(r.slide_id)) as slide:
                export_bag_spatialdata(read_bag(r.store_path), target, slide=slide, overwrite=True)
            out.append(dataclasses.replace(r, store_path=str(target)))
        except (PathM3Error, OSError, ValueError) as err:
            out.append(dataclasses.replace(r, ok=False, error=f"SpatialData export: {err}"))
    return out
