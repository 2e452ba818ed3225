"""CLI progress that moves (issue 27, item 6): ``extract`` shows each slide's patches with the time left, not
only a slide counter that sits at 0/1 for a one-slide run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from napari_pathm3.cli import main


def test_extract_shows_patches_with_time_left(
    synthetic_slide: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["extract", str(synthetic_slide), "--out", str(tmp_path / "f"), "--patch-size", "64"]) == 0
    err = capsys.readouterr().err
    m = re.findall(r"(\d+)/(\d+) patches \[\d\d:\d\d<", err)  # done/total patches [elapsed<remaining]
    assert m, err[-2000:]
    assert int(m[0][1]) > 1
