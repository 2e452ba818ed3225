"""``napari-pathm3 caption SLIDE --model DIR|demo --out result.json --heatmap heatmap.png``: headless captioning."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..device import DEVICES
from ._options import add_tissue_options, changes_grid, tissue_config, with_min_tissue

if TYPE_CHECKING:
    from .._types import Progress


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "caption",
        help="classify and caption a slide; write JSON (probabilities, caption, top patches) and a heatmap PNG",
    )
    p.add_argument(
        "slide", help="slide file or DICOM folder, or a feature bag (.h5 / .zarr / .npy / .pt / .safetensors)"
    )
    p.add_argument(
        "--model", required=True, help="checkpoint folder, or 'demo' (offline demo model, not diagnostic)"
    )
    p.add_argument("--out", type=Path, default=None, help="result JSON (default: print to stdout)")
    p.add_argument("--heatmap", type=Path, default=None, help="attention heatmap over a thumbnail (PNG)")
    p.add_argument("--csv", type=Path, default=None, help="per-patch attention table (CSV)")
    p.add_argument("--geojson", type=Path, default=None, help="top patches as GeoJSON (QuPath)")
    p.add_argument("--encoder", default=None, help="patch encoder (default: the model's own)")
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--text", default=None, help="optional text for text-conditioned classification")
    p.add_argument("--top-k", type=int, default=8, help="number of top-attention patches to report")
    p.add_argument("--mpp", type=float, default=None, help="µm/px at level 0 when the slide lacks it")
    p.add_argument(
        "--cache-dir", type=Path, default=None, help="feature cache (default: the user cache folder)"
    )
    p.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")
    p.add_argument("--per-patch", action="store_true", help="include every patch's attention in the JSON")
    p.add_argument("--thumbnail-size", type=int, default=1024, help="long side of the heatmap PNG")
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
        help="how --query phrases are mapped (docs/method.md §10; auto: singleton up to 4096 patches, else lm)",
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


class _Bar:
    """tqdm progress over the stages. Training shows epochs (``3.4/30 epochs``) with the average time per
    epoch so far, never a per-step rate; other stages show their own counts (the feature stage: patches)."""

    def __init__(self, disable: bool) -> None:
        self.disable = disable
        self.bar: Any = None
        self.stage = ""

    def __call__(self, event: Progress) -> None:
        prefix = "demo model: " if event.demo else ""
        if event.epochs:  # training: done/total = optimiser steps over the whole run
            self._show(f"{prefix}training", event.epochs, event.epochs * (event.fraction or 0.0), True)
        else:
            self._show(f"{prefix}{event.within or event.stage}", event.total, event.done, False)

    def _show(self, name: str, total: float, done: float, epochs: bool) -> None:
        from tqdm.auto import tqdm

        if name != self.stage:
            self.close()
            self.stage = name
            fmt = (
                "{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.0f} epochs [{elapsed}<{remaining}]"
                if epochs
                else "{desc}: {n_fmt}/{total_fmt} [{elapsed}]"
                if total
                else "{desc} [{elapsed}]"
            )
            # smoothing=0: the remaining time comes from the average rate since the stage began
            self.bar = tqdm(
                total=total or None,
                desc=name,
                leave=False,
                disable=self.disable,
                file=sys.stderr,
                bar_format=fmt,
                smoothing=0,
            )
        if self.bar is not None:
            if total and self.bar.total != total:
                self.bar.total = total
            if done >= self.bar.n:
                self.bar.update(done - self.bar.n)
            else:
                self.bar.n = done
                self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def run(args: argparse.Namespace) -> int:
    from .. import api

    bar = _Bar(disable=args.quiet)
    try:
        result = _caption(args, bar)
    finally:
        bar.close()
    if args.model == api.DEMO:
        from ..demo import DEMO_MODEL_NAME

        result = dataclasses.replace(result, model_name=DEMO_MODEL_NAME)
    _write_outputs(args, result)
    if args.out is not None:
        p = result.probabilities[result.label]
        print(f"{Path(args.slide).name}: {result.label} ({p:.1%}) - {result.caption}", file=sys.stderr)
    for w in result.warnings:
        print(f"napari-pathm3 caption: warning: {w}", file=sys.stderr)
    return 0


def _caption(args: argparse.Namespace, bar: Any) -> Any:
    """Caption the slide (or the precomputed feature bag) named on the command line."""
    from .. import api
    from ..inference import is_feature_bag
    from ..paths import user_cache_dir

    if is_feature_bag(args.slide):  # precomputed features (.h5 / .zarr / ...): no slide to open
        if args.heatmap is not None:
            from ..errors import PathM3Error

            raise PathM3Error(
                f"{args.slide}: a heatmap needs the slide; caption the slide file for --heatmap"
            )
        return api.caption_slide(
            args.slide,
            model=args.model,
            device=args.device,
            text=args.text,
            top_k=args.top_k,
            progress=bar,
            **_grounding_args(args),
        )
    model: Any = args.model
    tiling = None
    if changes_grid(args):  # the model's own grid with the user's tissue fraction / level
        from ..config import TilingConfig

        model = api.load_model(args.model, device=args.device, text_side=False)
        tiling = with_min_tissue(model.config.tiling or TilingConfig(), args)
    with api.open_slide(args.slide, mpp=args.mpp) as slide:
        return api.caption_slide(
            slide,
            model=model,
            encoder=args.encoder,
            device=args.device,
            text=args.text,
            tiling=tiling,
            tissue=tissue_config(args),
            cache_dir=None if args.no_cache else (args.cache_dir or user_cache_dir("features")),
            top_k=args.top_k,
            progress=bar,
            **_grounding_args(args),
        )


def _grounding_args(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "word_maps": not args.no_word_maps,
        "queries": tuple(q for q in args.query if q.strip()),
        "phrase_method": args.phrase_method,
        "word_method": args.word_method,
    }


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
    from .. import api
    from ..heatmap_png import save_heatmap_png
    from ..io.jsonfile import json_text, write_json_atomic

    maps = _maps_path(args, result)
    if maps is not None:
        result = dataclasses.replace(result, maps_file=str(maps))
        result.save_maps(maps)
    data = result.to_dict(per_patch=args.per_patch)
    if args.model == api.DEMO:
        from ..demo import DISCLAIMER

        data["disclaimer"] = DISCLAIMER
    if args.out is not None:
        write_json_atomic(args.out, data)
    else:
        print(json_text(data))  # strict JSON: NaN/Inf is an error, never a NaN literal
    if args.heatmap is not None:
        save_heatmap_png(result, args.heatmap, max_size=args.thumbnail_size, note=data.get("disclaimer"))
    if args.csv is not None:
        result.save_csv(args.csv)
    if args.geojson is not None:
        result.save_geojson(args.geojson)
