"""Time and peak memory of the correlation module (paper config: hidden 1408, 8 heads, 256 landmarks),
Nyström vs exact attention, for bags of 1k-64k patches plus Nyström on 100k patches.

Each measurement runs in a fresh subprocess so the CPU peak (``ru_maxrss``) belongs to that size alone; on
CUDA the peak is ``torch.cuda.max_memory_allocated``. Prints one JSON line.

    python benchmarks/bench_model.py [--device cpu|cuda] [--feature-dim 1024] [--sizes 1000 4000 ...]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
EXACT_CPU_LIMIT = 16_384  # exact attention is O(n^2) time: beyond this it is estimated, not run


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:  # current RSS (Linux); ru_maxrss is the high-water mark
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def worker(method: str, n: int, feature_dim: int, device: str, repeats: int, chunk_size: int | None) -> dict:
    sys.path.insert(0, str(SRC))
    import torch

    import_mb = _rss_mb()  # torch alone (a CUDA build of torch maps several hundred MB more than the CPU one)

    from napari_pathm3.config import CorrelationConfig
    from napari_pathm3.model.correlation import CorrelationModule

    torch.manual_seed(0)
    dev = torch.device(device)
    cfg = CorrelationConfig(attention=method)
    if chunk_size:
        cfg = CorrelationConfig(attention=method, chunk_size=chunk_size)
    module = CorrelationModule(feature_dim, cfg).to(dev).eval()
    features = torch.randn(1, n, feature_dim, device=dev)
    times = []
    if dev.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        base = _rss_mb()
    for _ in range(repeats):
        start = time.perf_counter()
        with torch.no_grad():
            out = module(features)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        del out
    if dev.type == "cuda":
        peak, extra = (
            torch.cuda.max_memory_allocated() / 2**20,
            (torch.cuda.max_memory_allocated() - base) / 2**20,
        )
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
        extra = peak - base
    return {
        "method": method,
        "n": n,
        "time_s": round(min(times), 4),
        "peak_mb": round(peak, 1),  # CPU: whole-process RSS high-water (includes ~300 MB of torch itself)
        "peak_above_torch_import_mb": round(peak - import_mb, 1) if dev.type != "cuda" else None,
        "forward_extra_mb": round(extra, 1),  # peak above the state before the forward (model + input)
        "input_mb": round(n * feature_dim * 4 / 2**20, 1),
    }


def run(method: str, n: int, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--worker", method, str(n), "--feature-dim", str(args.feature_dim)]
    cmd += [
        "--device",
        args.device,
        "--repeats",
        str(args.repeats),
        "--chunk-size",
        str(args.chunk_size or 0),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return {"method": method, "n": n, "error": proc.stderr.strip().splitlines()[-1:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--feature-dim", type=int, default=1024)  # UNI / ResNet50-trunc width
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 16000, 64000])
    parser.add_argument("--large", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--chunk-size", type=int, default=None)  # default: CorrelationConfig.chunk_size
    parser.add_argument("--worker", nargs=2, metavar=("METHOD", "N"))
    args = parser.parse_args()
    if args.worker:
        print(
            json.dumps(
                worker(
                    args.worker[0],
                    int(args.worker[1]),
                    args.feature_dim,
                    args.device,
                    args.repeats,
                    args.chunk_size,
                )
            )
        )
        return
    results = []
    exact_limit = EXACT_CPU_LIMIT if args.device == "cpu" else 65_536
    for n in args.sizes:
        results.append(run("nystrom", n, args))
        if n <= exact_limit:
            results.append(run("exact", n, args))
        else:
            ran = [r for r in results if r["method"] == "exact" and "time_s" in r]
            est = ran[-1]["time_s"] * (n / ran[-1]["n"]) ** 2 if ran else None
            results.append(
                {"method": "exact", "n": n, "skipped": True, "estimated_time_s": est and round(est, 1)}
            )
    large = run("nystrom", args.large, args)
    nys = [r for r in results if r["method"] == "nystrom" and "forward_extra_mb" in r]
    # slope of the forward's extra memory between consecutive sizes: ~constant = linear in n
    slope = [
        round((b["forward_extra_mb"] - a["forward_extra_mb"]) / ((b["n"] - a["n"]) / 1000), 2)
        for a, b in zip(nys, nys[1:], strict=False)
    ]
    print(
        json.dumps(
            {
                "benchmark": "correlation_module",
                "device": args.device,
                "feature_dim": args.feature_dim,
                "hidden_size": 1408,
                "num_landmarks": 256,
                "results": results,
                "nystrom_extra_mb_per_1k_patches_slope": slope,  # ~constant = linear memory
                "one_embedding_copy_mb_per_1k_patches": round(1000 * 1408 * 4 / 2**20, 2),
                "nystrom_large": large,
                "nystrom_large_under_2gb": large.get("peak_mb", float("inf")) < 2048,
            }
        )
    )


if __name__ == "__main__":
    main()
