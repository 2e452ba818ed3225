"""Extraction runs under the package thread policy: torch threads and reader workers from one budget, and a
machine that got busy since the last call gets fewer threads at the next one."""

from __future__ import annotations

import pytest

from napari_pathm3 import threads
from napari_pathm3.features.extract import extract_features
from napari_pathm3.io import patch_reader as reader_mod

torch = pytest.importorskip("torch")


def test_extraction_applies_the_policy(cmu_slide, cmu_grid, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    monkeypatch.setenv(threads.ENV_VAR, "2")
    workers: list[int] = []
    original = reader_mod.PatchReader.__init__

    def spy(self, slide, grid, **kw):  # noqa: ANN001, ANN003
        original(self, slide, grid, **kw)
        workers.append(self.num_workers)

    monkeypatch.setattr(reader_mod.PatchReader, "__init__", spy)
    before = torch.get_num_threads()
    try:
        bag = extract_features(cmu_slide, cmu_grid.subset(range(8)), "builtin:colorstats", device="cpu")
        assert torch.get_num_threads() == 2  # torch gets the budget ...
        assert workers == [2]  # ... and the reader, whose threads run at a lower priority beside it
        assert bag.features.shape[0] == 8
    finally:
        torch.set_num_threads(before)


def test_policy_follows_the_run_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(threads.ENV_VAR, raising=False)
    monkeypatch.setattr(threads, "available_cores", lambda: 4)
    busy = [0.0]
    monkeypatch.setattr(threads, "_run_queue_others", lambda samples=5: busy[0])
    before = torch.get_num_threads()
    try:
        assert threads.apply_thread_policy().threads == 4
        busy[0] = 3.0  # three other processes started since the last call
        assert threads.apply_thread_policy().threads == 1
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
        threads._current = None


def test_run_queue_is_read_on_linux() -> None:
    value = threads._run_queue_others()
    if value is None:
        pytest.skip("no /proc/loadavg on this OS")
    assert value >= 0


def test_reader_threads_lower_their_priority(cmu_slide, cmu_grid) -> None:  # noqa: ANN001
    import os
    import sys
    import threading

    if not sys.platform.startswith("linux"):
        pytest.skip("per-thread priorities are set on Linux only")
    seen: list[int] = []
    reader = reader_mod.PatchReader(cmu_slide, cmu_grid.subset(range(4)), num_workers=1)
    reader.nice = 3
    original = reader._read_block

    def spy(block, out):  # noqa: ANN001
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        original(block, out)

    reader._read_block = spy
    base = os.getpriority(os.PRIO_PROCESS, 0)
    for _ in reader.iter_batches(batch_size=2):
        pass
    assert seen and all(p == min(19, base + 3) for p in seen)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == base  # the caller keeps its own


def test_one_thread_budget_reads_in_the_calling_thread(cmu_slide, cmu_grid, monkeypatch) -> None:  # noqa: ANN001
    """With one thread of budget and a CPU encoder, patches are read between encoder calls, in the caller's
    thread: no reader thread competes with torch's for the one free core. The features are the same."""
    import threading

    grid = cmu_grid.subset(range(12))
    before = torch.get_num_threads()
    alive: list[list[str]] = []
    try:
        monkeypatch.setenv(threads.ENV_VAR, "2")
        threaded = extract_features(cmu_slide, grid, "builtin:colorstats", device="cpu", batch_size=4)
        monkeypatch.setenv(threads.ENV_VAR, "1")
        inline = extract_features(
            cmu_slide,
            grid,
            "builtin:colorstats",
            device="cpu",
            batch_size=4,
            progress=lambda e: alive.append([t.name for t in threading.enumerate()]),
        )
    finally:
        torch.set_num_threads(before)
        threads._current = None
    assert len(alive) == 4  # the start, then one event per batch
    assert not any(name.startswith("pathm3-read") for names in alive for name in names)
    assert (inline.features == threaded.features).all()
