"""The allocator tuning: freed buffers reused (fewer page faults), opt-outs respected, no-op off glibc."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap

import pytest

from napari_pathm3 import allocator

glibc = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only"
)

# Allocates, fills and frees a 40 MB buffer (above glibc's 32 MiB dynamic mmap ceiling, like the float copy of
# a batch of 64 patches) 20 times through the C library, and prints the page faults taken after the first round.
_FAULTS = textwrap.dedent(
    """
    import ctypes, resource
    from napari_pathm3.allocator import keep_freed_memory
    print(keep_freed_memory())
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]

    def churn():
        p = libc.malloc(40_000_000)
        ctypes.memset(p, 1, 40_000_000)
        libc.free(p)

    churn()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        churn()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


def _faults(**env: str) -> tuple[bool, int]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES"))}
    out = subprocess.run(
        [sys.executable, "-c", _FAULTS], env={**clean, **env}, capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0] == "True", int(out[1])


@glibc
def test_freed_buffers_are_reused_instead_of_faulted_in():
    applied, tuned = _faults()
    off, default = _faults(**{allocator.ENV_VAR: "0"})
    assert applied and not off
    # default glibc maps and unmaps every 40 MB buffer: ~9,800 faults each; tuned: reused from the heap
    assert default > 20 * 5000
    assert tuned < default / 20


class _FakeLibc:
    def __init__(self, result: int = 1) -> None:
        self.calls: list[tuple[int, int]] = []
        self.trimmed = 0
        self.result = result

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return self.result

    def malloc_trim(self, pad: int) -> int:
        self.trimmed += 1
        return 1


@pytest.fixture
def fresh(monkeypatch):
    """The module as in a new process, with a fake C library and no malloc settings in the environment."""
    monkeypatch.setattr(allocator, "_applied", None)
    for name in (allocator.ENV_VAR, *allocator._USER_TUNING):
        monkeypatch.delenv(name, raising=False)
    libc = _FakeLibc()
    monkeypatch.setattr(allocator, "_libc", lambda: libc)
    return libc


def test_applied_once_and_released(fresh):
    assert allocator.keep_freed_memory() and allocator.keep_freed_memory()
    assert fresh.calls == [(-3, allocator.MMAP_THRESHOLD), (-1, allocator.TRIM_THRESHOLD)]
    allocator.release_free_memory()
    assert fresh.trimmed == 1


@pytest.mark.parametrize(
    ("name", "value"),
    [(allocator.ENV_VAR, "0"), ("MALLOC_TRIM_THRESHOLD_", "65536"), ("GLIBC_TUNABLES", "x=1")],
)
def test_user_settings_win(fresh, monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    assert not allocator.keep_freed_memory()
    allocator.release_free_memory()  # nothing was kept: nothing to hand back
    assert fresh.calls == [] and fresh.trimmed == 0


def test_refused_and_unsupported_are_no_ops(fresh, monkeypatch):
    fresh.result = 0  # mallopt refused the value
    assert not allocator.keep_freed_memory()
    monkeypatch.setattr(allocator, "_applied", None)
    monkeypatch.setattr(allocator, "_libc", lambda: None)  # musl, macOS, Windows
    assert not allocator.keep_freed_memory()
