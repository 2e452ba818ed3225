"""Extraction runs under the package thread policy: torch threads and reader workers from one budget, and a
machine that got busy since the last call gets fewer threads at the next one."""

from __future__ import annotations

import pytest

from napari_pathm3 import threads
from napari_pathm3.features.extract import extract_features
from napari_pathm3.tiling import reader as reader_mod

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
        assert workers == [threads.resolve_threads().reader_workers] == [1]  # ... the reader its share
        assert bag.features.shape[0] == 8
    finally:
        torch.set_num_threads(before)


def test_policy_follows_the_run_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(threads.ENV_VAR, raising=False)
    monkeypatch.setattr(threads, "available_cores", lambda: 4)
    busy = [0.0]
    monkeypatch.setattr(threads, "_run_queue_others", lambda samples=3: busy[0])
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
