"""The package-wide thread policy: explicit > environment > free cores; applied to torch."""

from __future__ import annotations

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
