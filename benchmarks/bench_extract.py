"""Feature extraction throughput against the encoder alone, same encoder, same run, quiet and busy.

Variants, interleaved in every round (figures: min/median/max over ``--repeat`` rounds):

* ``encoder``   ``encoder.encode`` on the same patches already in memory (preprocessing + model), in batches
* ``pipeline``  ``extract_features`` on the slide: threaded reads + decode overlapped with encoding

Both run under the package thread policy (``apply_thread_policy()``; torch threads and reader workers from one
budget). ``ratio`` = pipeline throughput / encoder throughput in the same round: 1.0 means reading is fully
hidden behind encoding. Default encoder: the built-in ``builtin:colorstats`` (the package default); ``--model
vit-s`` uses a randomly initialised ViT-S/16 (speed does not depend on the weights). Prints one JSON line.

    python benchmarks/bench_extract.py [--model builtin|vit-s|vit-b] [--patches 512] [--repeat 3] [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    CMU_SLIDE,
    condition_label,
    emit,
    fmt_spread,
    interleaved,
    machine,
    progress,
    rates,
    target_verdict,
    under_conditions,
)

SIZES = {"vit-s": (384, 6), "vit-b": (768, 12)}
#: the issue's target: extraction >= this x the encoder alone (default encoder)
TARGET = 0.95


def build_encoder(name: str) -> Any:
    from napari_pathm3.features.encoders import DEFAULT_ENCODER, FrozenEncoder, get_encoder

    if name == "builtin":
        return get_encoder(DEFAULT_ENCODER, device="cpu")
    import torch
    from transformers import ViTConfig, ViTModel

    from napari_pathm3.features._loaders import _hf_pool

    hidden, heads = SIZES[name]
    cfg = ViTConfig(
        hidden_size=hidden,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        num_hidden_layers=12,
        image_size=224,
        patch_size=16,
    )
    torch.manual_seed(0)
    model = ViTModel(cfg, add_pooling_layer=False)
    return FrozenEncoder(model, name=f"bench:{name}", input_size=224, pool=_hf_pool).prepare("cpu")


def patch_grid(args: argparse.Namespace) -> tuple[Path, Any]:
    from napari_pathm3.config import TilingConfig
    from napari_pathm3.io.slide import open_slide
    from napari_pathm3.tiling import make_grid

    if args.quick or args.no_large:
        path = Path(args.slide)
        with open_slide(path) as s:
            g = make_grid(s, TilingConfig(min_tissue_fraction=0.0))
        return path, g.subset(np.arange(min(len(g), 32 if args.quick else args.patches)))
    from make_large_slide import large_slide

    path = large_slide()
    with open_slide(path) as s:
        g = make_grid(s, TilingConfig())
    n = min(len(g), args.patches)
    start = max(0, len(g) // 2 - n // 2)  # tissue patches in grid order, from the middle of the slide
    return path, g.subset(np.arange(start, start + n))


def measure(path: Path, grid: Any, enc: Any, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from napari_pathm3.features.extract import extract_features
    from napari_pathm3.io.slide import open_slide
    from napari_pathm3.threads import apply_thread_policy
    from napari_pathm3.tiling import PatchReader

    bs = args.batch_size
    with open_slide(path) as slide:
        patches = PatchReader(slide, grid).read_batch(np.arange(len(grid)))
        seen: list[dict[str, int]] = []

        def encoder() -> float:
            policy = apply_thread_policy()
            seen.append({"torch_threads": torch.get_num_threads(), "policy_threads": policy.threads})
            t = time.perf_counter()
            for i in range(0, len(patches), bs):
                enc.encode(patches[i : i + bs])
            return time.perf_counter() - t

        def pipeline() -> float:
            t = time.perf_counter()
            bag = extract_features(slide, grid, enc, batch_size=bs, device="cpu")
            assert bag.features.shape == (len(grid), enc.dim)
            return time.perf_counter() - t

        pipeline()  # warm-up: first-call allocations out of the timings
        times = interleaved({"encoder": encoder, "pipeline": pipeline}, args.repeat)
    return {"variants": rates(times, len(grid), baseline="encoder"), "threads": seen}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=("builtin", "vit-s", "vit-b"), default="builtin")
    ap.add_argument("--patches", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--slide", default=str(CMU_SLIDE))
    ap.add_argument("--no-large", action="store_true", help="use the CMU sample instead of the large slide")
    ap.add_argument("--quick", action="store_true", help="tiny sizes for the test suite")
    args = ap.parse_args(argv)
    if args.quick:
        args.repeat, args.batch_size = 1, 16
    else:
        args.repeat = max(3, args.repeat)
    enc = build_encoder(args.model)
    path, grid = patch_grid(args)
    progress(f"{path.name}: {len(grid)} patches, encoder {enc.name}")
    conds = under_conditions(lambda: measure(path, grid, enc, args), args.quick)
    emit(
        {
            "bench": "extract",
            "machine": machine(),
            "encoder": enc.name,
            "slide": path.name,
            "patches": len(grid),
            "batch_size": args.batch_size,
            "repeat": args.repeat,
            "quick": args.quick,
            "conditions": conds,
        }
    )


# ------------------------------------------------------------------------------------------------ report
def checks(record: dict[str, Any]) -> list[tuple[str, str, str]]:
    out = []
    for cond in record.get("conditions", []):
        ratio = cond["variants"]["pipeline"].get("ratio")
        out.append(
            (
                f"extraction ÷ encoder alone ({record.get('encoder')}), {cond['condition']}",
                fmt_spread(ratio, "×"),
                target_verdict(ratio["median"] if ratio else None, TARGET),
            )
        )
    return out


def to_markdown(record: dict[str, Any]) -> str:
    lines = [
        f"Encoder `{record.get('encoder')}`, {record.get('patches')} patches of `{record.get('slide')}`, batches of "
        f"{record.get('batch_size')}, {record.get('repeat')} interleaved rounds per condition. `encoder`: the",
        "encoder alone on the same patches in memory; `pipeline`: `extract_features` reading the slide. Both",
        "under the package thread policy.",
        "",
        "| condition | variant | torch threads | patches/s | × encoder alone |",
        "|---|---|---|---|---|",
    ]
    for cond in record.get("conditions", []):
        th = cond.get("threads") or [{}]
        for name, v in cond["variants"].items():
            lines.append(
                f"| {condition_label(cond)} | {name} | {th[0].get('torch_threads', '–')} | "
                f"{fmt_spread(v['per_s'])} | {fmt_spread(v.get('ratio'), '×')} |"
            )
    lines += ["", "| check | measured | verdict |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in checks(record)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
