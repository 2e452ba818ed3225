"""Helpers shared by the benchmark scripts: where data lives, machine facts, memory and timing.

Every benchmark prints exactly one JSON line on stdout (``emit``); ``run_all.py`` collects them.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
#: shared test data (the CMU sample slide); NAPARI_PATHM3_DATA overrides, as in tests/conftest.py
DATA_DIR = Path(os.environ.get("NAPARI_PATHM3_DATA", REPO.parent / "shared" / "data"))
CMU_SLIDE = DATA_DIR / "slides" / "CMU-1-Small-Region.svs"
#: generated benchmark inputs (the large slide): gitignored ``tmp/`` in the repository by default
os.environ.setdefault("NAPARI_PATHM3_DATA", str(DATA_DIR))  # the sample slide resolves here, offline
BENCH_DIR = Path(os.environ.get("NAPARI_PATHM3_BENCH_DIR", REPO / "tmp" / "benchmarks"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """CPU model, cores, RAM and library versions: the header of every results table."""
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(terse=True),
    }
    try:
        import psutil

        info["ram_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        info["ram_gb"] = None
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        info["torch"] = None
    return info


def rss_mb() -> float:
    """Resident memory of this process in MiB."""
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def timeit(fn: Callable[[], Any], repeat: int = 3) -> tuple[float, float, Any]:
    """``(min, median, last result)`` of ``repeat`` wall-clock runs of ``fn``."""
    times, out = [], None
    for _ in range(max(1, repeat)):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), statistics.median(times), out


def parallel_headroom(seconds: float = 0.4) -> float:
    """How many cores are free right now: throughput of GIL-free work (sha256) in ``cores`` threads over
    one thread. About ``cores`` on an idle machine; near 1 when other jobs hold the CPUs, in which case no
    thread pool can show a speed-up."""
    import hashlib
    import threading

    buf = b"\0" * (8 << 20)

    def rate(threads: int) -> float:
        count = [0] * threads
        stop = time.perf_counter() + seconds

        def work(i: int) -> None:
            while time.perf_counter() < stop:
                hashlib.sha256(buf).digest()
                count[i] += 1

        ts = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        return sum(count) / seconds

    n = os.cpu_count() or 1
    return round(rate(n) / max(rate(1), 1e-9), 2) if n > 1 else 1.0


def emit(record: dict[str, Any]) -> None:
    """Print the benchmark's one JSON result line."""
    print(json.dumps(record, default=_jsonable), flush=True)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def load_average() -> float:
    """1-minute load average (0 where the OS has none): reported beside every figure."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return 0.0


_BURN = "import time\nwhile True:\n    sum(i * i for i in range(10000))\n"


class busy:
    """Context manager: ``n`` CPU-burning processes (default: one per core) for the "busy machine" condition.

    Users' machines are never idle, so every benchmark reports a quiet run and one beside these processes.
    ``with busy(0):`` is the quiet condition (starts nothing). The processes are killed on exit, even on error.
    """

    def __init__(self, n: int | None = None, *, settle: float = 1.0) -> None:
        self.n = (os.cpu_count() or 1) if n is None else n
        self.settle = settle
        self._procs: list[Any] = []

    def __enter__(self) -> busy:
        import subprocess

        self._procs = [subprocess.Popen([sys.executable, "-c", _BURN]) for _ in range(self.n)]
        if self.n:
            time.sleep(self.settle)  # let them reach the run queue before anything is timed
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self._procs:
            proc.kill()
        for proc in self._procs:
            proc.wait()
        self._procs = []


def conditions(quick: bool = False) -> list[tuple[str, int]]:
    """The two machine conditions every benchmark reports: ``[("quiet", 0), ("busy", cores)]``."""
    return [("quiet", 0), ("busy", os.cpu_count() or 1)]


# ------------------------------------------------------------------------------------------ repeats and conditions
def spread(values: list[float], nd: int = 3) -> dict[str, float]:
    """``{"min", "median", "max"}`` of repeated measurements (every figure is reported with its spread)."""
    if not values:
        return {}
    return {
        "min": round(min(values), nd),
        "median": round(statistics.median(values), nd),
        "max": round(max(values), nd),
    }


def interleaved(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    """Seconds of each of ``fns`` over ``repeats`` rounds, run interleaved (a, b, c, a, b, c, ...) so that a
    drift in machine load hits every variant alike. A function may return its own seconds (a float) to
    exclude set-up from the timing; otherwise its wall time is used."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(max(1, repeats)):
        for name, fn in fns.items():
            t = time.perf_counter()
            out = fn()
            times[name].append(float(out) if isinstance(out, float) else time.perf_counter() - t)
    return times


def rates(
    times: dict[str, list[float]], items: int, baseline: str | None = None
) -> dict[str, dict[str, Any]]:
    """Throughput (``items`` per second) spread of each variant and, with ``baseline``, its speed ratio to the
    baseline per round (same round = same machine state) as a spread too."""
    out: dict[str, dict[str, Any]] = {}
    for name, ts in times.items():
        row: dict[str, Any] = {"per_s": spread([items / t for t in ts], 1), "seconds": spread(ts)}
        if baseline is not None and name != baseline:
            row["ratio"] = spread([b / t for b, t in zip(times[baseline], ts, strict=True)], 2)
        out[name] = row
    return out


def under_conditions(measure: Callable[[], dict[str, Any]], quick: bool = False) -> list[dict[str, Any]]:
    """Run ``measure()`` once per machine condition (quiet, then beside ``cores`` busy processes) and tag each
    result with the condition and the load average at its start and end."""
    out = []
    for label, n in conditions(quick):
        progress(f"condition {label} ({n} busy processes)")
        with busy(n, settle=0.2 if quick else 1.0):
            start = load_average()
            headroom = parallel_headroom(0.1 if quick else 0.3)
            result = measure()
            out.append(
                {
                    "condition": label,
                    "busy_processes": n,
                    "load_start": start,
                    "load_end": load_average(),
                    "parallel_headroom": headroom,
                    **result,
                }
            )
    return out


def progress(message: str) -> None:
    """A progress line on stderr (stdout carries only the JSON result)."""
    print(f"[{Path(sys.argv[0]).stem}] {message}", file=sys.stderr, flush=True)


def fmt_spread(s: dict[str, float] | None, unit: str = "") -> str:
    """``median (min–max)`` for the docs tables."""
    if not s:
        return "–"
    return f"{s['median']:g}{unit} ({s['min']:g}–{s['max']:g})"


def condition_label(row: dict[str, Any]) -> str:
    """``quiet (load 0.4–0.6, parallel 1.9×)`` / ``busy ×2 (load 2.9–3.4, parallel 1.0×)``: the load average
    at start and end, and how much faster GIL-free work ran in ``cores`` threads than in one at the start
    (about ``cores`` when cores were free)."""
    name = row.get("condition", "?")
    n = row.get("busy_processes", 0)
    head = f"{name} ×{n}" if n else name
    hr = row.get("parallel_headroom")
    extra = f", parallel {hr}×" if hr is not None else ""
    return f"{head} (load {row.get('load_start', '?')}–{row.get('load_end', '?')}{extra})"


def target_verdict(value: float | None, target: float, *, at_most: bool = False) -> str:
    """'meets' / 'misses' a numeric target, computed from the measured value."""
    if value is None:
        return "not measured"
    ok = value <= target if at_most else value >= target
    return f"{'meets' if ok else 'misses'} ({'≤' if at_most else '≥'} {target:g})"
