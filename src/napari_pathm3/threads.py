"""One CPU thread policy for the whole package: torch intra-/inter-op threads, patch-reader workers and loaders.

Why: on a 2-core machine that is not idle, torch's default (one intra-op thread per core, plus OpenMP threads
that spin while waiting) beside reader threads oversubscribes the cores; training then ran ~10x slower per
step and the demo burnt minutes of CPU spinning. The policy picks a budget of threads from the cores this
process may use *minus the cores other processes keep busy* (the 1-minute load average), never below one,
and every part of the package draws from that budget.

Override, in order of precedence: an explicit ``threads=`` (CLI ``--threads``, widget setting), the
``NAPARI_PATHM3_THREADS`` environment variable, then the automatic choice. This module is stdlib-only at import
(torch is touched inside :func:`apply_thread_policy`), so configs, the CLI and the widgets can call it cheaply.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from .allocator import keep_freed_memory

__all__ = [
    "ENV_VAR",
    "ThreadPolicy",
    "apply_thread_policy",
    "available_cores",
    "busy_cores",
    "current_policy",
    "resolve_threads",
]

log = logging.getLogger(__name__)

#: Environment variable that fixes the thread budget (a positive integer).
ENV_VAR = "NAPARI_PATHM3_THREADS"


@dataclass(frozen=True, kw_only=True)
class ThreadPolicy:
    """The thread budget and how it is split.

    ``threads`` is the number of CPU threads the package keeps busy at once. Compute (torch intra-op) gets all
    of them while nothing else runs; during extraction, reading and encoding overlap, so the reader gets
    ``reader_workers`` of the budget and torch the rest (at least one each).
    """

    threads: int
    source: str  # "argument", "environment" or "auto (N cores, load L)"

    @property
    def torch_threads(self) -> int:
        return self.threads

    @property
    def reader_workers(self) -> int:
        """Patch-reading threads when reading runs beside encoding (half the budget, at least one)."""
        return max(1, self.threads // 2)

    @property
    def encode_threads(self) -> int:
        """torch threads while the reader runs beside the encoder."""
        return max(1, self.threads - self.reader_workers) if self.threads > 1 else 1


def available_cores() -> int:
    """Cores this process may run on (CPU affinity where the OS has it, else the CPU count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def busy_cores() -> float:
    """Cores other processes keep busy.

    Where the OS shows its run queue (Linux ``/proc/loadavg``), the number of runnable threads *right now*
    other than this process's own (the least of five samples over ~4 ms: a CPU-bound process is runnable in
    every sample, a thread that wakes for a moment is not; a one-off spike once cost a whole job a core). It
    sees other work the moment it starts. Elsewhere the 1-minute load average, which lags by up to a minute
    and, later in a run, counts this process's own work too.
    """
    now = _run_queue_others()
    if now is not None:
        return now
    try:
        return max(0.0, os.getloadavg()[0])
    except (AttributeError, OSError):  # Windows
        return 0.0


def _run_queue_others(samples: int = 5) -> float | None:
    import time

    counts = []
    try:
        for i in range(samples):
            with open("/proc/loadavg") as fh:
                running = int(fh.read().split()[3].split("/")[0])  # "1.20 0.90 0.70 3/512 12345"
            # minus this process's own runnable threads: the one reading the file, and OpenMP workers still
            # spinning after the previous torch call (counted as "others", they halved the next run's budget)
            counts.append(max(0, running - max(1, _own_running())))
            if i + 1 < samples:
                time.sleep(0.001)
    except (OSError, ValueError, IndexError):
        return None
    return float(min(counts))


def _own_running() -> int:
    """Runnable threads of this process (state ``R`` in ``/proc/self/task/*/stat``); 0 where unreadable."""
    count = 0
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return 0
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/stat") as fh:
                stat = fh.read()
        except OSError:  # the thread ended meanwhile
            continue
        # "pid (comm) S ...": the state follows the last ")" (comm may itself hold ")" or spaces)
        if stat[stat.rfind(")") + 2 : stat.rfind(")") + 3] == "R":
            count += 1
    return count


#: most threads a budget may name: far above any machine's cores, low enough for every thread API's integer
MAX_THREADS = 1024


def _parse(value: int | str | None, where: str) -> int | None:
    if value is None or value == 0 or (isinstance(value, str) and value.strip() in ("", "0", "auto")):
        return None
    from .errors import OptionError
    from .schemas import bounded

    try:
        return int(bounded(value, name=where, ge=1, le=MAX_THREADS))
    except ValueError:
        raise OptionError(
            f"{where}: threads must be an integer in [1, {MAX_THREADS}] or 'auto', got {str(value)[:40]!r}"
        ) from None


def resolve_threads(threads: int | str | None = None) -> ThreadPolicy:
    """The thread budget for ``threads`` (``None``/``0``/``"auto"``: environment, then automatic).

    Automatic: cores available minus the cores busy with other work (rounded down), at least one. The load
    average lags by up to a minute, which errs towards fewer threads right after other work starts — the
    cheaper mistake on a shared machine.
    """
    explicit = _parse(threads, "threads")
    if explicit is not None:
        return ThreadPolicy(threads=explicit, source="argument")
    env = _parse(os.environ.get(ENV_VAR), ENV_VAR)
    if env is not None:
        return ThreadPolicy(threads=env, source="environment")
    cores = available_cores()
    load = busy_cores()
    # Round the load to the nearest core: load 0.3 on an idle box must not cost a core, load 1.8 from one
    # busy process plus noise must.
    free = max(1, cores - int(load + 0.5))
    return ThreadPolicy(threads=free, source=f"auto ({cores} cores, {load:.1f} busy)")


_current: ThreadPolicy | None = None


def apply_thread_policy(threads: int | str | None = None) -> ThreadPolicy:
    """Resolve the budget and apply it to torch (intra-op threads; inter-op one, when still settable), and
    let the C allocator reuse freed buffers (:func:`napari_pathm3.allocator.keep_freed_memory`).

    Call once at the start of a command, a training run or a widget job; calling again re-applies (the
    budget may change when the machine gets busier). Returns the policy for the reader and loaders.
    """
    global _current
    explicit = threads is not None and _parse(threads, "threads") is not None
    if (
        not explicit
        and _current is not None
        and _current.source != "argument"
        and not os.environ.get(ENV_VAR)
        and _run_queue_others(1) is None
    ):
        # Without a run queue to read, keep the first automatic choice for the life of the process: later, the
        # load average counts our own busy threads and would shrink the budget at every call. With one, each
        # call re-reads it, so a machine that got busy since the last call gets fewer threads.
        policy = _current
    else:
        policy = resolve_threads(threads)
    keep_freed_memory()  # torch's per-op buffers reused instead of faulted in afresh (see .allocator)
    import torch

    if torch.get_num_threads() != policy.torch_threads:
        torch.set_num_threads(policy.torch_threads)
    try:
        # Inter-op parallelism is unused by our models and can only be set before the first parallel op.
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    if _current != policy:
        log.info("thread policy: %d thread(s), %s", policy.threads, policy.source)
    _current = policy
    return policy


def current_policy() -> ThreadPolicy:
    """The policy last applied, or a freshly resolved one (not applied) when none was."""
    return _current if _current is not None else resolve_threads()


def quiet_openmp() -> None:
    """Make OpenMP threads sleep instead of spinning while they wait (set before torch is first imported).

    Spinning OpenMP workers burn a core each while the main thread reads patches or runs Python, which on a
    busy machine takes CPU from other processes and from our own reader threads.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
