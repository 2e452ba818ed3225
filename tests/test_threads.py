"""The package-wide thread policy: explicit > environment > free cores; applied to torch."""

from __future__ import annotations

import os

import pytest

from napari_pathm3 import threads
from napari_pathm3.cli import main


def test_explicit_beats_environment(monkeypatch):
    monkeypatch.setenv(threads.ENV_VAR, "3")
    assert threads.resolve_threads(5).threads == 5
    assert threads.resolve_threads(None).threads == 3
    assert threads.resolve_threads(None).source == "environment"


@pytest.mark.parametrize(("cores", "load", "expected"), [(2, 0.1, 2), (2, 2.0, 1), (2, 8.0, 1), (8, 3.4, 5)])
def test_auto_leaves_busy_cores_alone(monkeypatch, cores, load, expected):
    monkeypatch.delenv(threads.ENV_VAR, raising=False)
    monkeypatch.setattr(threads, "available_cores", lambda: cores)
    monkeypatch.setattr(threads, "busy_cores", lambda: load)
    policy = threads.resolve_threads()
    assert policy.threads == expected
    assert policy.reader_workers >= 1 and policy.encode_threads >= 1
    assert policy.reader_workers + policy.encode_threads <= max(2, policy.threads)


@pytest.mark.parametrize("bad", ["-1", "two", "1.5"])
def test_bad_values_are_clear_errors(monkeypatch, bad):
    monkeypatch.setenv(threads.ENV_VAR, bad)
    with pytest.raises(ValueError, match=threads.ENV_VAR):
        threads.resolve_threads()


def test_apply_sets_torch_threads(monkeypatch):
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    try:
        policy = threads.apply_thread_policy(1)
        assert policy.threads == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_cli_threads_flag_validated(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["info", "--threads", "zero"])
    assert exc.value.code == 2
    assert "--threads" in capsys.readouterr().err


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="Linux /proc only")
def test_own_busy_threads_are_not_other_processes_work():
    """A thread of ours still computing (e.g. OpenMP workers spinning after a torch call) is not "another
    process keeping a core busy": counted as one, it halved the next call's thread budget."""
    import hashlib
    import threading

    data = b"x" * (400 << 20)
    started = threading.Event()

    def work() -> None:  # hashlib releases the GIL: a runnable thread of this process for ~1 s
        started.set()
        hashlib.sha256(data).digest()

    alone = threads._own_running()
    worker = threading.Thread(target=work)
    worker.start()
    started.wait()
    busy = max(threads._own_running() for _ in range(20))
    worker.join()
    assert alone >= 1 and busy >= alone + 1


@pytest.mark.skipif(not os.path.exists("/proc/loadavg"), reason="Linux run queue only")
def test_a_cpu_bound_process_is_seen_in_every_sample():
    """The least of several samples ignores momentary wake-ups, but not a process that keeps a core busy."""
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        assert threads._run_queue_others() >= 1
    finally:
        proc.kill()
        proc.wait()
