"""``napari-pathm3 caption SLIDE --model DIR|demo --out result.json --heatmap heatmap.png``: headless captioning."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .. import api
from ._checks import IMAGE_SIDE, MPP, TOP_K, add_device
from ._options import add_tissue_options, grid_options, tissue_config
from .progress import StageProgress

EXAMPLES = """examples:
  napari-pathm3 caption slide.svs --model demo --out result.json --heatmap heatmap.png
  napari-pathm3 caption slide.svs --model runs/gastric/best --out result.json --geojson top.geojson
  napari-pathm3 caption slide.tif --model runs/gastric/best --mpp 0.25     # the file has no µm/px
  napari-pathm3 caption features/slide_01.h5 --model runs/gastric/best     # precomputed features
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "caption",
        help="classify and caption a slide; write JSON (probabilities, caption, top patches) and a heatmap PNG",
    )
    p.add_argument(
        "slide",
        nargs="+",
        help="slide file or DICOM folder, or a feature bag (.h5 / .zarr / .npy / .pt / .safetensors); "
        "several with --cohort",
    )
    p.add_argument(
        "--model", required=True, help="checkpoint folder, or 'demo' (offline demo model, not diagnostic)"
    )
    p.add_argument("--out", type=Path, default=None, help="result JSON (default: print to stdout)")
    p.add_argument("--heatmap", type=Path, default=None, help="attention heatmap over a thumbnail (PNG)")
    p.add_argument("--csv", type=Path, default=None, help="per-patch attention table (CSV)")
    p.add_argument(
        "--geojson",
        type=Path,
        default=None,
        help="QuPath GeoJSON: every tile with attention measurements (Measure > Show measurement maps), "
        "top patches and the region as classified annotations",
    )
    p.add_argument(
        "--spatialdata",
        type=Path,
        default=None,
        help="SpatialData zarr in wsidata/LazySlide layout: tiles, features table with per-tile attention "
        "(needs the [spatialdata] extra)",
    )
    p.add_argument(
        "--with-pixels",
        action="store_true",
        help="--spatialdata: copy the slide's pixels into the store (default: referenced by path)",
    )
    p.add_argument(
        "--ome-zarr",
        type=Path,
        default=None,
        help="attention and per-query maps as an OME-Zarr multiscale image in µm, aligned with the slide",
    )
    p.add_argument(
        "--cohort",
        type=Path,
        default=None,
        help="batch captioning: one AnnData table OUT.h5ad (a row per slide: prediction, probabilities, "
        "caption, warnings, paths; slide embeddings as X) and OUT.csv beside it",
    )
    p.add_argument("--encoder", default=None, help="patch encoder (default: the model's own)")
    add_device(p)
    p.add_argument("--text", default=None, help="optional text for text-conditioned classification")
    p.add_argument("--top-k", type=TOP_K, default=8, help="number of top-attention patches to report")
    p.add_argument("--mpp", type=MPP, default=None, help="µm/px at level 0 when the slide lacks it")
    p.add_argument(
        "--cache-dir", type=Path, default=None, help="feature cache (default: the user cache folder)"
    )
    p.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")
    p.add_argument("--per-patch", action="store_true", help="include every patch's attention in the JSON")
    p.add_argument("--thumbnail-size", type=IMAGE_SIDE, default=1024, help="long side of the heatmap PNG")
    p.add_argument(
        "--query",
        action="append",
        default=[],
        metavar="PHRASE",
        help='map where a phrase applies (repeatable), e.g. --query "solid nests": in the JSON and the maps file',
    )
    p.add_argument(
        "--phrase-method",
        default="auto",
        choices=("auto", "singleton", "lm", "itc", "joint"),
        help="how --query phrases are mapped (docs/method.md §11; auto: singleton up to 4096 patches, else lm)",
    )
    p.add_argument(
        "--word-method",
        default="auto",
        choices=("auto", "singleton", "gradient x attention"),
        help="how caption words are mapped (auto: singleton up to 4096 patches, else gradient x attention)",
    )
    p.add_argument("--no-word-maps", action="store_true", help="skip the per-word maps of the caption")
    p.add_argument(
        "--maps",
        type=Path,
        default=None,
        help="word and phrase maps (.npz; default beside --out as <name>.maps.npz)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_tissue_options(p)
    p.set_defaults(func=run)


# stage counter + per-stage bars with time left (issue 27: the old bars stayed at 0/5)
_Bar = StageProgress


def _check_outputs(args: argparse.Namespace) -> None:
    """Output paths that are existing folders fail now, naming the option, before any work (writing into a
    folder's name would fail at the end, naming a hidden temporary file)."""
    from ..errors import PathM3Error

    for option, example in (("out", "result.json"), ("heatmap", "heatmap.png"), ("csv", "patches.csv")):
        path = getattr(args, option)
        if path is not None and path.is_dir():
            raise PathM3Error(f"--{option} {path}: is a folder; give a file path, e.g. {path / example}")
    if args.geojson is not None and args.geojson.is_dir():
        raise PathM3Error(
            f"--geojson {args.geojson}: is a folder; give a file path, e.g. {args.geojson / 'top.geojson'}"
        )


def run(args: argparse.Namespace) -> int:
    if len(args.slide) > 1 or args.cohort is not None:
        from .caption_cohort import run_cohort

        return run_cohort(args, caption_one)
    args.slide = args.slide[0]
    caption_one(args)
    return 0


def caption_one(args: argparse.Namespace, *, keep_features: bool = False) -> Any:
    """Caption ``args.slide``, write the outputs asked for; with ``keep_features`` return
    ``(result, features)``, else the result."""
    import tempfile

    _check_outputs(args)
    bar = _Bar(disable=args.quiet)
    features = None
    with tempfile.TemporaryDirectory(prefix="pathm3-export-") as tmp:
        # --spatialdata needs the features again: without a cache they go through a temporary one
        wants = args.spatialdata is not None or keep_features
        if wants and args.no_cache and not api.is_feature_bag(args.slide):
            args.no_cache, args.cache_dir = False, Path(tmp)
        try:
            result = _caption(args, bar)
        finally:
            bar.close()
        _write_outputs(args, result)
        _write_exports(args, result)
        if keep_features:
            features = result_features(args, result)
    if args.out is not None:
        p = result.probabilities[result.label]
        print(f"{Path(args.slide).name}: {result.label} ({p:.1%}) - {result.caption}", file=sys.stderr)
    for w in result.warnings:
        print(f"napari-pathm3 caption: warning: {w}", file=sys.stderr)
    return (result, features) if keep_features else result


def _caption(args: argparse.Namespace, bar: Any) -> Any:
    """Caption the slide (or the precomputed feature bag) named on the command line."""
    if api.is_feature_bag(args.slide):  # precomputed features (.h5 / .zarr / ...): no slide to open
        if args.heatmap is not None:
            from ..errors import PathM3Error

            raise PathM3Error(
                f"{args.slide}: a heatmap needs the slide; caption the slide file for --heatmap"
            )
    return api.caption_slide(args.slide, caption_request(args), progress=bar)


def caption_request(args: argparse.Namespace) -> Any:
    """The :class:`~napari_pathm3.jobs.CaptionRequest` of the command line (the grid: the model's, with
    ``--min-tissue`` / ``--level`` / ``--mpp``, by the request's rule)."""
    from ..paths import user_cache_dir

    return api.CaptionRequest(
        model=args.model,
        encoder=args.encoder,
        device=args.device,
        text=args.text,
        tissue=tissue_config(args),
        cache_dir=None if args.no_cache else (args.cache_dir or user_cache_dir("features")),
        top_k=args.top_k,
        word_maps=not args.no_word_maps,
        queries=tuple(args.query),
        phrase_method=args.phrase_method,
        word_method=args.word_method,
        **grid_options(args),
    )


def _maps_path(args: argparse.Namespace, result: Any) -> Path | None:
    """Where the word/phrase maps go: --maps, else beside --out; None when there are none (or no --out)."""
    if result.word_maps is None and not result.phrase_maps:
        return None
    if args.maps is not None:
        return Path(args.maps)
    if args.out is not None:
        out = Path(args.out)
        return out.with_name(out.stem + ".maps.npz")
    return None


def _write_outputs(args: argparse.Namespace, result: Any) -> None:
    """The result JSON (file or stdout), and the heatmap PNG / CSV / GeoJSON asked for."""
    from ..jsonfile import json_text, write_json_atomic

    maps = _maps_path(args, result)
    if maps is not None:
        result = api.save_maps(result, maps)
    data = result.to_dict(per_patch=args.per_patch)  # a demo result carries its disclaimer
    if args.out is not None:
        write_json_atomic(args.out, data)
    elif getattr(args, "cohort", None) is None:  # batch captioning: the cohort table is the output
        print(json_text(data))  # strict JSON: NaN/Inf is an error, never a NaN literal
    if args.heatmap is not None:
        api.save_heatmap(result, args.heatmap, max_size=args.thumbnail_size, note=data.get("disclaimer"))
    if args.csv is not None:
        result.save_csv(args.csv)
    if args.geojson is not None:
        api.export_qupath(result, args.geojson)


def _write_exports(args: argparse.Namespace, result: Any) -> None:
    """``--spatialdata`` (with the features, from the bag or the feature cache) and ``--ome-zarr``."""
    if args.ome_zarr is not None:
        api.export_ome_zarr(result, args.ome_zarr)
    if args.spatialdata is None:
        return
    if api.is_feature_bag(args.slide):
        api.export_spatialdata(result, args.spatialdata, features=result_features(args, result))
        return
    with api.open_slide(args.slide, mpp=args.mpp) as slide:
        api.export_spatialdata(
            result,
            args.spatialdata,
            features=result_features(args, result),
            slide=slide,
            include_image=args.with_pixels,
        )


def result_features(args: argparse.Namespace, result: Any) -> Any:
    """The ``(n, d)`` features the result was computed from: the bag itself, or the slide's cache entry."""
    from ..paths import user_cache_dir

    return api.result_features(result, args.cache_dir or user_cache_dir("features"), mpp=args.mpp)
