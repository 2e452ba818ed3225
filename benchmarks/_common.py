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

    def __init__(self, n: int | None = None) -> None:
        self.n = (os.cpu_count() or 1) if n is None else n
        self._procs: list[Any] = []

    def __enter__(self) -> busy:
        import subprocess

        self._procs = [subprocess.Popen([sys.executable, "-c", _BURN]) for _ in range(self.n)]
        if self.n:
            time.sleep(1.0)  # let them reach the run queue before anything is timed
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
