from __future__ import annotations

import dataclasses
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from napari_pathm3 import threads
from napari_pathm3._types import CancelFlag, Progress
from napari_pathm3.errors import Cancelled, EncoderError, NoTissueError
from napari_pathm3.features.encoders import FrozenEncoder, get_encoder
from napari_pathm3.features.extract import extract_features
from napari_pathm3.io.feature_store import inspect_bag, read_bag
from napari_pathm3.io.patch_reader import PatchReader

N_SUB = 40  # patches used by the store tests (of 53)


@pytest.fixture(autouse=True)
def _fixed_thread_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """One thread budget for every run here, subprocesses included. The automatic budget follows the machine's
    load from call to call, and a matmul's rounding depends on its thread count: a resumed bag compared bit
    for bit with a full one must not see the suite's other work (it did once, in a full-suite run)."""
    monkeypatch.setenv(threads.ENV_VAR, "2")


class MeanPool(torch.nn.Module):
    """A trivial model: per-channel means; optionally runs out of memory once on big batches."""

    def __init__(self, oom_above: int | None = None, always: bool = False) -> None:
        super().__init__()
        self.oom_above, self.always = oom_above, always
        self.batches: list[int] = []
        self.scale = torch.nn.Parameter(torch.ones(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.oom_above is not None and x.shape[0] > self.oom_above:
            if not self.always:
                self.oom_above = None
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        self.batches.append(int(x.shape[0]))
        return x.mean((2, 3)) * self.scale


def counting(name: str = "test:meanpool", **kw: Any) -> FrozenEncoder:
    return FrozenEncoder(MeanPool(**kw), name=name, input_size=None, mean=(0, 0, 0), std=(1, 1, 1), dim=3)


@pytest.fixture(scope="module")
def sub_grid(cmu_grid):
    return cmu_grid.subset(np.arange(N_SUB))


def test_builtin_on_cmu_matches_grid(cmu_slide, cmu_grid) -> None:
    calls: list[tuple[int, int, str]] = []
    bag = extract_features(
        cmu_slide,
        cmu_grid,
        "builtin:colorstats",
        batch_size=32,
        device="cpu",
        progress=lambda e: calls.append((e.done, e.total, e.stage)),
    )
    assert bag.features.shape == (53, 94) and bag.features.dtype == np.float32
    np.testing.assert_array_equal(bag.coords, cmu_grid.coords)
    assert (bag.patch_size, bag.mpp, bag.encoder_name) == (224, cmu_grid.mpp, "builtin:colorstats")
    assert bag.slide_id == "CMU-1-Small-Region" and bag.fingerprint == cmu_slide.fingerprint
    assert calls[0] == (0, 53, "extract") and calls[-1] == (53, 53, "extract")
    assert [c[0] for c in calls] == sorted(c[0] for c in calls)
    # same numbers as encoding the reader's patches directly
    enc = get_encoder("builtin:colorstats")
    ref = enc.encode(PatchReader(cmu_slide, cmu_grid).read_batch([0, 17, 52]))
    np.testing.assert_allclose(bag.features[[0, 17, 52]], ref, rtol=1e-5, atol=1e-6)


def test_tiny_hf_on_cmu(cmu_slide, cmu_grid, tiny_hf_dir: Path) -> None:
    bag = extract_features(cmu_slide, cmu_grid, f"hf:{tiny_hf_dir}", batch_size=32, device="cpu")
    assert bag.features.shape == (53, 32)
    np.testing.assert_array_equal(bag.coords, cmu_grid.coords)
    assert np.isfinite(bag.features).all() and bag.features.std(0).min() > 0


def test_tiny_timm_on_cmu(cmu_slide, sub_grid, tiny_timm_dir: Path) -> None:
    pytest.importorskip("timm")
    bag = extract_features(cmu_slide, sub_grid, f"local:{tiny_timm_dir}", batch_size=16, device="cpu")
    assert bag.features.shape == (N_SUB, 32)
    np.testing.assert_array_equal(bag.coords, sub_grid.coords)


def test_store_equals_memory_and_is_reused(cmu_slide, sub_grid, tmp_path: Path) -> None:
    enc = counting()
    mem = extract_features(cmu_slide, sub_grid, enc, device="cpu", batch_size=8)
    store = tmp_path / "s.zarr"
    bag = extract_features(cmu_slide, sub_grid, enc, store=store, device="cpu", batch_size=8, chunk_rows=16)
    np.testing.assert_array_equal(bag.features, mem.features)
    np.testing.assert_array_equal(bag.coords, mem.coords)
    assert bag.meta.complete and bag.meta.encoder.weights_hash == enc.weights_hash
    enc.model.batches.clear()
    again = extract_features(cmu_slide, sub_grid, enc, store=store, device="cpu", batch_size=8, chunk_rows=16)
    assert enc.model.batches == []  # complete store reused, nothing encoded
    np.testing.assert_array_equal(again.features, mem.features)


def test_float16_store(cmu_slide, sub_grid, tmp_path: Path) -> None:
    enc = counting()
    ref = extract_features(cmu_slide, sub_grid, enc, device="cpu")
    half = extract_features(
        cmu_slide, sub_grid, enc, device="cpu", store=tmp_path / "h.zarr", dtype="float16"
    )
    assert half.features.dtype == np.float32
    np.testing.assert_allclose(half.features, ref.features, rtol=2e-3, atol=1e-3)


@pytest.fixture(scope="module")
def tiny_enc(tiny_hf_dir: Path) -> FrozenEncoder:
    """A real transformer (batched matmuls), small enough to keep the resume tests fast."""
    return get_encoder(f"hf:{tiny_hf_dir}")


def test_cancel_then_resume_is_identical(
    cmu_slide, sub_grid, tmp_path: Path, tiny_enc: FrozenEncoder
) -> None:
    enc = tiny_enc
    full = extract_features(
        cmu_slide, sub_grid, enc, store=tmp_path / "full.zarr", batch_size=8, chunk_rows=8, device="cpu"
    )
    flag = CancelFlag()
    store = tmp_path / "cut.zarr"

    def stop_after_two_chunks(event: Progress) -> None:
        if event.done >= 16:
            flag.set()

    with pytest.raises(Cancelled):
        extract_features(
            cmu_slide,
            sub_grid,
            enc,
            store=store,
            batch_size=8,
            chunk_rows=8,
            device="cpu",
            progress=stop_after_two_chunks,
            cancel=flag,
        )
    state, _ = inspect_bag(store, dataclasses.replace(full.meta, done=0, complete=False))
    assert state == "partial"
    assert read_bag(store, allow_partial=True).features.shape[0] == 16
    seen: list[int] = []
    resumed = extract_features(
        cmu_slide,
        sub_grid,
        enc,
        store=store,
        batch_size=8,
        chunk_rows=8,
        device="cpu",
        progress=lambda e: seen.append(e.done),
    )
    assert seen[0] == 16  # started where it stopped
    np.testing.assert_array_equal(resumed.features, full.features)


_KILL_SCRIPT = """
import sys, time
from pathlib import Path
import numpy as np
from napari_pathm3.io import open_slide
from napari_pathm3.tiling import make_grid
from napari_pathm3.features.extract import extract_features
slide_path, store, flag, n, encoder = sys.argv[1:6]
def progress(event):
    if event.done >= 16:
        Path(flag).write_text(str(event.done))
        time.sleep(600)  # wait here to be killed
with open_slide(slide_path) as slide:
    grid = make_grid(slide).subset(np.arange(int(n)))
    extract_features(slide, grid, encoder, store=store, batch_size=8, chunk_rows=8, device="cpu",
                     progress=progress)
"""


@pytest.mark.slow  # a fresh interpreter importing torch + transformers: ~5-15 s
def test_sigkill_mid_run_then_resume_is_identical(
    cmu_slide, cmu_slide_path: Path, sub_grid, tmp_path: Path, tiny_hf_dir: Path, tiny_enc: FrozenEncoder
) -> None:
    store, flag = tmp_path / "killed.zarr", tmp_path / "flag"
    script = tmp_path / "run.py"
    script.write_text(_KILL_SCRIPT)
    proc = subprocess.Popen(
        [
            sys.executable,
            str(script),
            str(cmu_slide_path),
            str(store),
            str(flag),
            str(N_SUB),
            f"hf:{tiny_hf_dir}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while not flag.exists():
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "child died"
            assert time.monotonic() < deadline, "child never reached 16 patches"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    partial = read_bag(store, allow_partial=True)
    assert not partial.meta.complete and 16 <= partial.meta.done < N_SUB
    enc = tiny_enc
    resumed = extract_features(
        cmu_slide, sub_grid, enc, store=store, batch_size=8, chunk_rows=8, device="cpu"
    )
    full = extract_features(cmu_slide, sub_grid, enc, batch_size=8, device="cpu")
    np.testing.assert_array_equal(resumed.features, full.features)
    np.testing.assert_array_equal(resumed.coords, full.coords)


class _OtherSlide:
    """The CMU slide with another fingerprint (as if the file had been replaced)."""

    def __init__(self, slide: Any) -> None:
        self._slide = slide
        self.fingerprint = "0" * 32

    def __getattr__(self, name: str) -> Any:
        return getattr(self._slide, name)


def test_stale_stores_are_recomputed(
    cmu_slide, cmu_grid, sub_grid, tmp_path: Path, caplog, tiny_hf_dir: Path
) -> None:
    store = tmp_path / "stale.zarr"
    enc = counting()
    extract_features(cmu_slide, sub_grid, enc, store=store, device="cpu", batch_size=8)

    def recomputed(**kw: Any) -> Any:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="napari_pathm3.io.feature_store"):
            bag = extract_features(
                **{
                    "slide": cmu_slide,
                    "grid": sub_grid,
                    "encoder": enc,
                    "store": store,
                    "device": "cpu",
                    "batch_size": 8,
                    **kw,
                }
            )
        assert "recomputing" in caplog.text
        return bag

    # other encoder (other dim) / same name but other weights
    assert recomputed(encoder=f"hf:{tiny_hf_dir}").dim == 32
    extract_features(cmu_slide, sub_grid, enc, store=store, device="cpu", batch_size=8)
    other = counting()
    with torch.no_grad():
        other.model.scale.mul_(2)
    bag = recomputed(encoder=other)
    assert bag.meta.encoder.weights_hash == other.weights_hash != enc.weights_hash
    # other grid
    assert len(recomputed(encoder=enc, grid=cmu_grid)) == len(cmu_grid)
    # changed slide file
    bag = recomputed(slide=_OtherSlide(cmu_slide), grid=cmu_grid)
    assert bag.fingerprint == "0" * 32
    # unchanged: no warning, nothing encoded
    enc.model.batches.clear()
    caplog.clear()
    extract_features(_OtherSlide(cmu_slide), cmu_grid, enc, store=store, device="cpu", batch_size=8)
    assert enc.model.batches == [] and "recomputing" not in caplog.text


def test_oom_halves_batch_and_matches(cmu_slide, sub_grid, caplog) -> None:
    ref = extract_features(cmu_slide, sub_grid, counting(), device="cpu", batch_size=16)
    enc = counting(oom_above=4)
    with caplog.at_level(logging.WARNING):
        bag = extract_features(cmu_slide, sub_grid, enc, device="cpu", batch_size=16)
    assert "batch size lowered to 8" in caplog.text
    assert max(enc.model.batches) == 8  # stays halved after the failure
    np.testing.assert_allclose(bag.features, ref.features, rtol=1e-6)
    with pytest.raises(EncoderError, match="out of memory even on one patch"):
        extract_features(cmu_slide, sub_grid, counting(oom_above=0, always=True), device="cpu", batch_size=4)


def test_empty_grid_and_bad_args(cmu_slide, cmu_grid) -> None:
    with pytest.raises(NoTissueError):
        extract_features(cmu_slide, cmu_grid.subset(np.zeros(len(cmu_grid), bool)), counting(), device="cpu")
    with pytest.raises(ValueError, match="batch_size"):
        extract_features(cmu_slide, cmu_grid, counting(), batch_size=0)


def test_cancel_before_start(cmu_slide, cmu_grid) -> None:
    flag = CancelFlag()
    flag.set()
    with pytest.raises(Cancelled):
        extract_features(cmu_slide, cmu_grid, counting(), device="cpu", cancel=flag)
