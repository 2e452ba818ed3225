"""The test suite's own rules: missing data fails in CI and skips locally; GUI tests carry the ``gui`` marker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TARGET = "tests/_napari/test_reader.py::test_get_reader_declines_other_files"  # needs the shared slides


def _pytest(env_extra: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "GITHUB_ACTIONS")}
    env.update({"NAPARI_PATHM3_DATA": str(tmp_path / "nowhere"), **env_extra})
    return subprocess.run(
        [sys.executable, "-m", "pytest", TARGET, "-q", "-rs", "-p", "no:cacheprovider", "-p", "no:randomly"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("ci", ["true", ""])
def test_missing_data_fails_in_ci_and_skips_locally(ci: str, tmp_path: Path) -> None:
    proc = _pytest({"CI": ci}, tmp_path)
    out = proc.stdout + proc.stderr
    if ci:
        assert proc.returncode == 1, out[-2000:]
        assert "CI=true, so this fails instead of skipping" in out
    else:
        assert proc.returncode == 0, out[-2000:]
        assert "1 skipped" in out and "skipped outside CI" in out


def test_gui_test_without_display_is_skipped_not_aborted(tmp_path: Path) -> None:
    """Plain ``pytest`` with no display: a GUI test is skipped with the reason; Qt never aborts the run."""
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "tests/_napari/test_reader.py::test_multiscale_layer_from_pyramid",
            "-q",
            "-rs",
            "-p",
            "no:cacheprovider",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = proc.stdout + proc.stderr
    if sys.platform in ("darwin", "win32"):
        pytest.skip("macOS and Windows always have a display")
    assert proc.returncode == 0, out[-2000:]
    assert "1 skipped" in out and "needs a display" in out
