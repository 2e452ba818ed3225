"""Feature extraction throughput against the encoder alone, same encoder, same run, quiet and busy.

Variants, interleaved in every round (figures: min/median/max over ``--repeat`` rounds):

* ``encoder``   ``encoder.encode`` on the same patches already in memory (preprocessing + model), in batches
* ``pipeline``  ``extract_features`` on the slide: threaded reads + decode overlapped with encoding

Both run under the package thread policy (``apply_thread_policy()``; torch threads and reader workers from one
budget). ``ratio`` = pipeline throughput / encoder throughput in the same round: 1.0 means reading is fully
hidden behind encoding. Default encoder: the built-in ``builtin:colorstats`` (the package default); ``--model
vit-s`` uses a randomly initialised ViT-S/16 (speed does not depend on the weights); ``--heavy-patches N``
adds a ViT-S/16 run on N patches to the same record.

Each variant also reports this process's CPU seconds and page faults, and a third measurement reads the same
patches on one thread (the reading's own CPU): on a machine whose cores the encoder already keeps busy, reading
costs its CPU share and extraction / encoder alone is bounded by ``1 - read share``. Prints one JSON line.

    python benchmarks/bench_extract.py [--model builtin|vit-s|vit-b] [--patches 512] [--repeat 3]
                                       [--heavy-patches 64] [--class-patches 8 [--classes-only]] [--quick]

``--class-patches N`` adds the encoder alone for a ViT-B/16 and a ViT-L/16 class encoder (the sizes of
Phikon and of UNI / Phikon-v2) on N in-memory patches: CPU quiet and busy, and the GPU when there is one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
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
    spread,
    target_verdict,
    under_conditions,
)

SIZES = {"vit-s": (384, 6), "vit-b": (768, 12), "vit-l": (1024, 16)}
LAYERS = {"vit-l": 24}  # the others: 12
#: ``--class-patches``: the encoder alone, in memory, for the two sizes foundation models come in
#: (features/cards.py): ViT-B/16 like Phikon, ViT-L/16 like UNI and Phikon-v2 (random weights: the speed is
#: the architecture's)
CLASSES = {
    "vit-b": "ViT-B/16 (Phikon class, 86 M parameters)",
    "vit-l": "ViT-L/16 (UNI, Phikon-v2 class, 304 M)",
}
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
        num_hidden_layers=LAYERS.get(name, 12),
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
        return path, g.subset(np.arange(min(len(g), args.patches, 32 if args.quick else args.patches)))
    from make_large_slide import large_slide

    path = large_slide()
    with open_slide(path) as s:
        g = make_grid(s, TilingConfig())
    n = min(len(g), args.patches)
    start = max(0, len(g) // 2 - n // 2)  # tissue patches in grid order, from the middle of the slide
    return path, g.subset(np.arange(start, start + n))


def _usage() -> tuple[float, int]:
    """CPU seconds of this process (all threads) and minor page faults so far."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime, ru.ru_minflt


def measure(path: Path, grid: Any, enc: Any, args: argparse.Namespace, untuned: Any = None) -> dict[str, Any]:
    import torch

    from napari_pathm3.features.extract import extract_features
    from napari_pathm3.io.patch_reader import PatchReader
    from napari_pathm3.io.slide import open_slide
    from napari_pathm3.threads import apply_thread_policy

    bs = args.batch_size
    usage: dict[str, list[tuple[float, int]]] = {"encoder": [], "pipeline": [], "read": []}

    def counted(name: str, fn: Any) -> Any:
        def run() -> float:
            cpu, faults = _usage()
            t = time.perf_counter()
            fn()
            wall = time.perf_counter() - t
            cpu2, faults2 = _usage()
            usage[name].append((cpu2 - cpu, faults2 - faults))
            return wall

        return run

    with open_slide(path) as slide:
        patches = PatchReader(slide, grid).read_batch(np.arange(len(grid)))
        seen: list[dict[str, int]] = []

        def encoder() -> None:
            policy = apply_thread_policy()
            seen.append({"torch_threads": torch.get_num_threads(), "policy_threads": policy.threads})
            for i in range(0, len(patches), bs):
                enc.encode(patches[i : i + bs])

        def pipeline() -> None:
            bag = extract_features(slide, grid, enc, batch_size=bs, device="cpu")
            assert bag.features.shape == (len(grid), enc.dim)

        def read() -> None:  # the reading's own CPU: one thread, a fresh tile cache, nothing else running
            reader = PatchReader(slide, grid, num_workers=1)
            reader.read_batch(np.arange(len(grid)))
            reader.close()

        pipeline()  # warm-up: first-call allocations out of the timings
        times = interleaved(
            {name: counted(name, fn) for name, fn in (("encoder", encoder), ("pipeline", pipeline))},
            args.repeat,
        )
        for _ in range(args.repeat):
            counted("read", read)()
    # the encoder alone's CPU seconds per wall second per torch thread, round by round (1.0: its threads never idle)
    core_use = [
        cpu / (wall * th["torch_threads"])
        for (cpu, _), wall, th in zip(usage["encoder"], times["encoder"], seen, strict=True)
    ]
    out = {
        "variants": rates(times, len(grid), baseline="encoder"),
        "threads": seen,
        "encoder_core_use": spread(core_use),
        "cpu_s": {k: spread([c for c, _ in v]) for k, v in usage.items()},
        "page_faults": {k: spread([f for _, f in v], 0) for k, v in usage.items()},
    }
    if untuned is not None:  # the encoder alone again, in a process that keeps glibc's allocator defaults
        out["untuned_encoder"] = untuned()
    return out


def untuned_encoder(name: str, patches: int, args: argparse.Namespace) -> dict[str, Any]:
    """Encoder alone in a subprocess with ``NAPARI_PATHM3_MALLOC=0`` (the allocator tuning cannot be undone in
    this process): what :mod:`napari_pathm3.allocator` changes. Same patches, batches and rounds."""
    cmd = [sys.executable, __file__, "--untuned-worker", "--model", name, "--patches", str(patches)]
    cmd += ["--batch-size", str(args.batch_size), "--repeat", str(args.repeat), "--slide", args.slide]
    cmd += ["--quick"] * args.quick + ["--no-large"] * args.no_large
    env = {**os.environ, "NAPARI_PATHM3_MALLOC": "0"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _untuned_worker(args: argparse.Namespace) -> None:
    from napari_pathm3.allocator import keep_freed_memory
    from napari_pathm3.io.patch_reader import PatchReader
    from napari_pathm3.io.slide import open_slide
    from napari_pathm3.threads import apply_thread_policy

    enc = build_encoder(args.model)
    path, grid = patch_grid(args)
    with open_slide(path) as slide:
        patches = PatchReader(slide, grid).read_batch(np.arange(len(grid)))
    rounds: list[tuple[float, float, int]] = []
    for i in range(args.repeat + 1):  # the first round warms up, as the in-process variants' warm-up does
        apply_thread_policy()
        cpu, faults = _usage()
        t = time.perf_counter()
        for j in range(0, len(patches), args.batch_size):
            enc.encode(patches[j : j + args.batch_size])
        wall = time.perf_counter() - t
        cpu2, faults2 = _usage()
        if i:
            rounds.append((wall, cpu2 - cpu, faults2 - faults))
    print(
        json.dumps(
            {
                "allocator_tuned": keep_freed_memory(),
                "per_s": spread([len(grid) / w for w, _, _ in rounds], 1),
                "cpu_s": spread([c for _, c, _ in rounds]),
                "page_faults": spread([f for _, _, f in rounds], 0),
            }
        )
    )


def cpu_arithmetic(cond: dict[str, Any]) -> dict[str, float] | None:
    """What the CPU figures allow: reading's share of the work, and how busy the encoder alone keeps its
    threads. When that is ~100 %, extraction / encoder alone cannot exceed ``1 - read_share``."""
    cpu = cond.get("cpu_s")
    if not cpu or not cpu.get("read"):
        return None
    enc_cpu, read_cpu = cpu["encoder"]["median"], cpu["read"]["median"]
    return {
        "read_share": round(read_cpu / (enc_cpu + read_cpu), 3),
        "encoder_core_use": cond.get("encoder_core_use", {}).get("median", float("nan")),
    }


def run_encoder(
    name: str, patches: int, args: argparse.Namespace, *, untuned: bool = False
) -> dict[str, Any]:
    enc = build_encoder(name)
    path, grid = patch_grid(argparse.Namespace(**{**vars(args), "patches": patches}))
    progress(f"{path.name}: {len(grid)} patches, encoder {enc.name}")
    baseline = (lambda: untuned_encoder(name, patches, args)) if untuned else None
    return {
        "encoder": enc.name,
        "slide": path.name,
        "patches": len(grid),
        "conditions": under_conditions(lambda: measure(path, grid, enc, args, baseline), args.quick),
    }


def class_throughput(patches: int, batch: int, repeat: int, quick: bool) -> dict[str, Any]:
    """Patches per second of the encoder alone (preprocessing + model, patches already in memory) for a ViT-B
    and a ViT-L class encoder, on the CPU under the package thread policy and, when one exists, on the GPU;
    interleaved rounds, quiet and busy on the CPU."""
    import torch

    from napari_pathm3.threads import apply_thread_policy

    apply_thread_policy()
    batch = min(batch, patches)  # the batches actually run
    x = np.random.default_rng(0).integers(0, 256, (patches, 224, 224, 3), dtype=np.uint8)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    out: dict[str, Any] = {
        "patches": patches,
        "batch_size": batch,
        "repeat": repeat,
        "classes": CLASSES,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "devices": {},
    }
    for device in devices:
        out["devices"][device] = _classes_on(device, x, batch, repeat, quick)
    return out


def _classes_on(device: str, x: np.ndarray, batch: int, repeat: int, quick: bool) -> list[dict[str, Any]]:
    encs = {name: build_encoder(name).prepare(device) for name in CLASSES}

    def run(enc: Any) -> float:
        t = time.perf_counter()
        for i in range(0, len(x), batch):
            enc.encode(x[i : i + batch])  # returns numpy: waits for a GPU too
        return time.perf_counter() - t

    for enc in encs.values():
        enc.encode(x[:1])  # first call: allocations, kernels

    def measure() -> dict[str, Any]:
        fns = {name: (lambda e=enc: run(e)) for name, enc in encs.items()}
        return {"variants": rates(interleaved(fns, repeat), len(x))}

    if device == "cpu":
        return under_conditions(measure, quick)
    # busy CPU processes hardly change a GPU's speed: one condition
    return [{"condition": "quiet", "busy_processes": 0, **measure()}]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=("builtin", "vit-s", "vit-b"), default="builtin")
    ap.add_argument("--patches", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--slide", default=str(CMU_SLIDE))
    ap.add_argument("--no-large", action="store_true", help="use the CMU sample instead of the large slide")
    ap.add_argument(
        "--heavy-patches",
        type=int,
        default=0,
        help="also measure a ViT-S/16 encoder on this many patches (0: skip): reading beside an encoder "
        "that dominates the CPU work",
    )
    ap.add_argument(
        "--class-patches",
        type=int,
        default=0,
        help="also measure the encoder alone for a ViT-B and a ViT-L class encoder on this many in-memory "
        "patches, on the CPU and any GPU (0: skip)",
    )
    ap.add_argument("--classes-only", action="store_true", help="only the --class-patches measurement")
    ap.add_argument("--quick", action="store_true", help="tiny sizes for the test suite")
    ap.add_argument("--untuned-worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.quick:
        args.repeat, args.batch_size = 1, 16
    else:
        args.repeat = max(3, args.repeat)
    if args.untuned_worker:
        return _untuned_worker(args)
    classes = (
        class_throughput(args.class_patches, min(args.batch_size, 8), args.repeat, args.quick)
        if args.class_patches > 0
        else None
    )
    if args.classes_only:
        if classes is None:
            ap.error("--classes-only needs --class-patches N")
        emit({"bench": "extract", "machine": machine(), "quick": args.quick, "class_throughput": classes})
        return None
    main_run = run_encoder(args.model, args.patches, args, untuned=True)
    record = {
        "bench": "extract",
        "machine": machine(),
        **main_run,
        "batch_size": args.batch_size,
        "repeat": args.repeat,
        "quick": args.quick,
    }
    if args.heavy_patches > 0:
        record["heavy"] = run_encoder("vit-s", args.heavy_patches, args)
    if classes is not None:
        record["class_throughput"] = classes
    emit(record)


# ------------------------------------------------------------------------------------------------ report
def _ratio_rows(run: dict[str, Any], label: str) -> list[tuple[str, str, str]]:
    out = []
    for cond in run.get("conditions", []):
        ratio = cond["variants"]["pipeline"].get("ratio")
        out.append(
            (
                f"extraction ÷ encoder alone ({label}), {cond['condition']}",
                fmt_spread(ratio, "×"),
                target_verdict(ratio["median"] if ratio else None, TARGET),
            )
        )
    return out


def checks(record: dict[str, Any]) -> list[tuple[str, str, str]]:
    out = _ratio_rows(record, str(record.get("encoder")))
    heavy = record.get("heavy")
    if (
        heavy
    ):  # not the target (that is the default encoder): shows the overlap where encoding dominates
        out += _ratio_rows(heavy, f"{heavy.get('encoder')}, {heavy.get('patches')} patches, not the default")
    return out


def _run_table(run: dict[str, Any]) -> list[str]:
    lines = [
        "| condition | variant | torch threads per round | patches/s | × encoder alone | CPU s | page faults |",
        "|---|---|---|---|---|---|---|",
    ]
    for cond in run.get("conditions", []):
        # every round's torch threads (the policy re-reads the free cores at each call)
        th = "/".join(str(t.get("torch_threads", "–")) for t in cond.get("threads") or [{}])
        cpu, faults = cond.get("cpu_s", {}), cond.get("page_faults", {})
        for name, v in cond["variants"].items():
            lines.append(
                f"| {condition_label(cond)} | {name} | {th} | "
                f"{fmt_spread(v['per_s'])} | {fmt_spread(v.get('ratio'), '×')} | "
                f"{fmt_spread(cpu.get(name))} | {fmt_spread(faults.get(name))} |"
            )
        un = cond.get("untuned_encoder")
        if un:
            lines.append(
                f"| {condition_label(cond)} | encoder, glibc allocator defaults (own process) | – | "
                f"{fmt_spread(un['per_s'])} | – | {fmt_spread(un['cpu_s'])} | {fmt_spread(un['page_faults'])} |"
            )
        if cpu.get("read"):
            lines.append(
                f"| {condition_label(cond)} | read alone (1 thread) | – | – | – | {fmt_spread(cpu['read'])} | "
                f"{fmt_spread(faults.get('read'))} |"
            )
    return lines


def classes_markdown(ct: dict[str, Any]) -> list[str]:
    """The section's table of ``--class-patches``: patches/s of a ViT-B and a ViT-L class encoder."""
    gpu = ct.get("gpu")
    lines = [
        f"Foundation-model sizes, the encoder alone ({ct.get('patches')} patches of 224 px in memory, batches of "
        f"{ct.get('batch_size')}, {ct.get('repeat')} interleaved rounds, random weights of the architecture):",
        "",
        "| encoder class | device | condition | patches/s median (min–max) | s per patch (median) |",
        "|---|---|---|---|---|",
    ]
    n = ct.get("patches") or 1
    for device, conds in ct.get("devices", {}).items():
        for cond in conds:
            label = condition_label(cond) if "load_start" in cond else cond.get("condition", "")
            for name, row in cond["variants"].items():
                title = ct.get("classes", {}).get(name, name)
                sec = row.get("seconds") or {}
                # from the seconds (3 significant digits): the rounded rates read 0.1 for every slow encoder
                rate = (
                    {k: float(f"{n / sec[k]:.3g}") for k in ("min", "median", "max")} if sec else row["per_s"]
                )
                rate = {"min": rate["max"], "median": rate["median"], "max": rate["min"]} if sec else rate
                per = f"{sec['median'] / n:.3g}" if sec else "–"
                lines.append(f"| {title} | {device} | {label} | {fmt_spread(rate)} | {per} |")
    if not gpu:
        lines += ["", "No GPU on the machine that ran this: GPU throughput not measured."]
    return lines


def to_markdown(record: dict[str, Any]) -> str:
    if "class_throughput" in record and "conditions" not in record:  # a --classes-only record
        return "\n".join(classes_markdown(record["class_throughput"])) + "\n"
    lines = [
        f"Encoder `{record.get('encoder')}`, {record.get('patches')} patches of `{record.get('slide')}`, batches of "
        f"{record.get('batch_size')}, {record.get('repeat')} interleaved rounds per condition. `encoder`: the",
        "encoder alone on the same patches in memory; `pipeline`: `extract_features` reading the slide. Both",
        "under the package thread policy. CPU s: this process's CPU time over the variant (all threads);",
        "`read alone`: the same patches read by one thread with a fresh tile cache (the reading's own cost).",
        "`encoder, glibc allocator defaults`: the encoder alone in a separate process with",
        "`NAPARI_PATHM3_MALLOC=0`, after the same rounds (not interleaved): what `napari_pathm3.allocator` changes.",
        "",
        *_run_table(record),
        "",
        "What the CPU figures allow (medians): reading's share of the CPU work, and how much of its threads'",
        "time the encoder alone keeps busy. When that is near 100 %, the pipeline cannot beat",
        "`1 − read share` unless reading runs in the encoder's idle core time.",
        "",
        "| condition | read share of the CPU work | encoder alone: core use |",
        "|---|---|---|",
    ]
    for cond in record.get("conditions", []):
        arith = cpu_arithmetic(cond)
        if arith:
            lines.append(
                f"| {condition_label(cond)} | {arith['read_share']:.1%} | {arith['encoder_core_use']:.0%} |"
            )
    heavy = record.get("heavy")
    if heavy:
        lines += [
            "",
            f"Beside an encoder that dominates the CPU work (`{heavy.get('encoder')}`, a randomly initialised",
            f"ViT-S/16; {heavy.get('patches')} patches of `{heavy.get('slide')}`), the same pipeline:",
            "",
            *_run_table(heavy),
        ]
    if record.get("class_throughput"):
        lines += ["", *classes_markdown(record["class_throughput"])]
    lines += ["", "| check | measured | verdict |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in checks(record)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
