"""End-to-end "Caption slide" on CPU with the offline demo model and the built-in encoder, quiet and busy.

1. ``inprocess``: the CMU sample slide, whole, warm (model loaded, one untimed run first), no feature cache,
   so every run reads and encodes its patches: seconds (min/median/max over ``--repeat`` runs), seconds per
   stage of the median run, torch threads, peak RSS growth.
2. ``cli``: ``napari-pathm3 caption CMU --model demo`` in a fresh process (imports, model load, cached
   features as shipped): wall seconds over ``--repeat`` runs and the largest child's peak RSS.
   ``cli_imports``: one more quiet run under ``python -X importtime``: the packages that cost most to import
   (cumulative seconds of one run) and whether transformers was imported at all (it should not be: the
   demo model's Q-Former, T5 and tokenizers load without it).
3. ``--sizes``: optional square regions of the large synthetic slide (patch counts), quiet only.

The demo model is trained once and cached before any clock starts. Prints one JSON line.

    python benchmarks/bench_caption.py [--repeat 3] [--sizes 256,1024] [--quick]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import (  # noqa: E402
    CMU_SLIDE,
    REPO,
    condition_label,
    emit,
    fmt_spread,
    load_average,
    machine,
    progress,
    rss_mb,
    spread,
    target_verdict,
    under_conditions,
)

#: the issue's targets: warm in-process caption of CMU (s, also beside busy processes); whole CLI (s, quiet)
INPROCESS_TARGET_S = 1.0
CLI_TARGET_S = 4.0


class PeakRSS:
    """Samples RSS every 20 ms in a thread; ``growth`` is the peak above the RSS at start."""

    def __init__(self) -> None:
        self.start = self.peak = rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_mb())

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())

    @property
    def growth(self) -> float:
        return self.peak - self.start


def run_once(api: Any, slide: Any, model: Any, region: list[np.ndarray] | None = None) -> dict[str, Any]:
    import torch

    with PeakRSS() as mem:
        t = time.perf_counter()
        result = api.caption_slide(slide, model=model, device="cpu", region=region)
        wall = time.perf_counter() - t
    return {
        "seconds": wall,
        "patches": result.num_patches,
        "torch_threads": torch.get_num_threads(),
        "timings": {k: round(v, 3) for k, v in result.timings.items()},
        "peak_rss_growth_mb": round(mem.growth),
        "label": result.label,
    }


def inprocess(api: Any, model: Any, path: Path, repeat: int) -> dict[str, Any]:
    with api.open_slide(path) as slide:
        run_once(api, slide, model)  # warm: first-call costs (kernels, tissue cache) out of the timings
        runs = [run_once(api, slide, model) for _ in range(repeat)]
    secs = [r["seconds"] for r in runs]
    median_run = runs[int(np.argsort(secs)[len(secs) // 2])]
    return {
        "seconds": spread(secs),
        "patches": median_run["patches"],
        "timings": median_run["timings"],
        "torch_threads": median_run["torch_threads"],
        "label": median_run["label"],
        "peak_rss_growth_mb": max(r["peak_rss_growth_mb"] for r in runs),
    }


def _cli(path: Path, out_dir: Path, *python_flags: str) -> tuple[list[str], dict[str, str]]:
    """The `napari-pathm3 caption` command on ``path`` with the demo model, and its environment."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH")) if p),
    }
    args = ["caption", str(path), "--model", "demo", "--out", str(out_dir / "caption.json"), "--quiet"]
    return [sys.executable, *python_flags, "-m", "napari_pathm3.cli", *args], env


def cli_runs(path: Path, repeat: int, out_dir: Path) -> dict[str, Any]:
    cmd, env = _cli(path, out_dir)
    secs = []
    for _ in range(repeat):
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
        secs.append(time.perf_counter() - t)
        if proc.returncode != 0:
            return {"error": proc.stderr.strip()[-800:]}
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
    return {"seconds": spread(secs), "peak_rss_mb_max_child": round(peak)}


def cli_imports(path: Path, out_dir: Path, top: int = 8) -> dict[str, Any]:
    """One CLI run under ``-X importtime``: the costliest top-level imports (s) and whether transformers loaded."""
    import re

    cmd, env = _cli(path, out_dir, "-X", "importtime")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip()[-800:]}
    total: dict[str, float] = {}
    names = set()
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)", line)
        if not m:
            continue
        names.add(m[3].split(".")[0])
        if len(m[2]) == 1:  # imported from the program itself (not inside another import)
            pkg = m[3].split(".")[0]
            total[pkg] = total.get(pkg, 0.0) + int(m[1]) / 1e6
    costly = sorted(total.items(), key=lambda kv: -kv[1])[:top]
    return {
        "load_average": round(load_average(), 2),
        "all_s": round(sum(total.values()), 2),
        "top": [[k, round(v, 3)] for k, v in costly],
        "transformers_imported": "transformers" in names,
    }


def square_regions(slide: Any, sizes: list[int], model: Any) -> list[tuple[int, list[np.ndarray]]]:
    """For each target patch count, a square around the densest tissue holding about that many patches."""
    from napari_pathm3.config import TilingConfig
    from napari_pathm3.tiling import make_grid

    grid = make_grid(slide, model.config.tiling or TilingConfig())
    if len(grid) == 0:
        return []
    centers = grid.centers()
    cell = grid.size_level0 * 20
    keys = np.floor(centers / cell).astype(np.int64)
    uniq, counts = np.unique(keys, axis=0, return_counts=True)
    c = (uniq[np.argmax(counts)] + 0.5) * cell
    order = np.sort(np.abs(centers - c).max(axis=1))
    out = []
    for n in sizes:
        if n > len(order):
            break
        half = float(order[n - 1]) + 1.0
        x0, y0, x1, y1 = c[0] - half, c[1] - half, c[0] + half, c[1] + half
        out.append((n, [np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])]))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sizes", default="", help="patch counts of large-slide regions (quiet only)")
    ap.add_argument("--slide", default=str(CMU_SLIDE))
    ap.add_argument("--no-cli", action="store_true")
    ap.add_argument("--quick", action="store_true", help="one run per condition, for the test suite")
    args = ap.parse_args(argv)
    repeat = 1 if args.quick else max(3, args.repeat)

    from napari_pathm3 import api
    from napari_pathm3.demo import ensure_demo_model

    t = time.perf_counter()
    model = api.load_model(ensure_demo_model(device="cpu"), device="cpu")
    record: dict[str, Any] = {
        "bench": "caption",
        "machine": machine(),
        "device": "cpu",
        "repeat": repeat,
        "slide": Path(args.slide).name,
        "demo_model_setup_s": round(time.perf_counter() - t, 2),
        "quick": args.quick,
    }
    progress("in-process caption, warm")
    record["inprocess"] = under_conditions(
        lambda: inprocess(api, model, Path(args.slide), repeat), args.quick
    )
    if not args.no_cli:
        import tempfile

        progress("command line, fresh process")
        with tempfile.TemporaryDirectory() as tmp:
            record["cli"] = under_conditions(
                lambda: cli_runs(Path(args.slide), repeat, Path(tmp)), args.quick
            )
            record["cli_imports"] = cli_imports(Path(args.slide), Path(tmp))
    sizes = [int(s) for s in args.sizes.split(",") if s]
    if sizes:
        from make_large_slide import large_slide

        path = large_slide()
        rows = []
        with api.open_slide(path) as slide:
            for n, region in square_regions(slide, sizes, model):
                progress(f"large slide region ~{n} patches")
                row = run_once(api, slide, model, region)
                rows.append({"target": n, **row, "seconds": round(row["seconds"], 3)})
        record["large"] = {"slide": path.name, "regions": rows}
    emit(record)


# ------------------------------------------------------------------------------------------------ report
def checks(record: dict[str, Any]) -> list[tuple[str, str, str]]:
    out = []
    for cond in record.get("inprocess", []):
        s = cond.get("seconds")
        out.append(
            (
                f"Caption slide, CMU, warm in-process, {cond['condition']}",
                fmt_spread(s, " s"),
                target_verdict(s["median"] if s else None, INPROCESS_TARGET_S, at_most=True),
            )
        )
    for cond in record.get("cli", []):
        if cond["condition"] != "quiet":
            continue
        s = cond.get("seconds")
        out.append(
            (
                "`napari-pathm3 caption` CLI, CMU, whole process, quiet",
                fmt_spread(s, " s"),
                target_verdict(s["median"] if s else None, CLI_TARGET_S, at_most=True),
            )
        )
    return out


def to_markdown(record: dict[str, Any]) -> str:
    lines = [
        f"Slide `{record.get('slide')}`, demo model, built-in encoder, CPU; {record.get('repeat')} runs per "
        "condition (seconds: median, min–max).",
        "",
        "| condition | what | seconds | patches | torch threads | stages of the median run (s) | peak RSS MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for cond in record.get("inprocess", []):
        stages = ", ".join(f"{k} {v:g}" for k, v in cond.get("timings", {}).items())
        lines.append(
            f"| {condition_label(cond)} | in-process, warm | {fmt_spread(cond.get('seconds'))} | "
            f"{cond.get('patches')} | {cond.get('torch_threads')} | {stages} | "
            f"+{cond.get('peak_rss_growth_mb')} |"
        )
    for cond in record.get("cli", []):
        if "error" in cond:
            lines.append(f"| {condition_label(cond)} | CLI | error: {cond['error'][:200]} ||||||")
            continue
        lines.append(
            f"| {condition_label(cond)} | CLI, fresh process | {fmt_spread(cond.get('seconds'))} | "
            f"| | | {cond.get('peak_rss_mb_max_child')} (largest child) |"
        )
    imports = record.get("cli_imports") or {}
    if imports.get("top"):
        costly = ", ".join(f"{k} {v:g}" for k, v in imports["top"])
        lines += [
            "",
            f"Imports of one quiet CLI run (`python -X importtime`, load {imports.get('load_average')}): "
            f"{imports.get('all_s')} s in all; costliest (cumulative s): {costly}; transformers "
            f"{'imported' if imports.get('transformers_imported') else 'not imported'}.",
        ]
    regions = record.get("large", {}).get("regions", [])
    if regions:
        lines += [
            "",
            f"Regions of `{record['large']['slide']}` (quiet, one run each):",
            "",
            "| target patches | patches | seconds | patches/s | peak RSS growth MB |",
            "|---|---|---|---|---|",
        ]
        for r in regions:
            lines.append(
                f"| {r['target']} | {r['patches']} | {r['seconds']} | "
                f"{round(r['patches'] / r['seconds'], 1)} | +{r['peak_rss_growth_mb']} |"
            )
    lines += ["", "| check | measured | verdict |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in checks(record)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
