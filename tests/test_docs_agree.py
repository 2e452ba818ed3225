"""Docs that cannot drift (issue 27, item 8): figures quoted in the README and the guides agree with the
generated benchmark page, no document prints a path of the machine that wrote it, and the model-size
defaults of the CLI and the Train widget are stated where they differ."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
#: absolute paths of a machine: /work/..., /home/..., /root/..., /Users/..., C:\Users\...
MACHINE_PATH = re.compile(r"(?<![\w.~])(/work/|/home/\w|/root/|/Users/\w|[A-Z]:\\\\Users)")


def _table_rows(page: str, heading: str) -> list[list[str]]:
    section = page.split(heading, 1)[1].split("\n## ", 1)[0]
    return [
        [c.strip() for c in ln.strip("|").split("|")]
        for ln in section.splitlines()
        if ln.startswith("|") and not ln.startswith("|---")
    ][1:]


def cold_demo_walls() -> list[float]:
    """Every cold-demo wall time (min and max of each condition) of docs/benchmarks.md, which
    ``benchmarks/run_all.py`` writes from the run's JSON (bench_demo's ``to_markdown``)."""
    page = (REPO / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    walls = []
    for row in _table_rows(page, "## Cold demo"):
        lo, _, hi = (float(v) for v in row[3].split("/"))
        walls += [lo, hi]
    return walls


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_no_machine_paths(doc: Path) -> None:
    hits = [ln for ln in doc.read_text(encoding="utf-8").splitlines() if MACHINE_PATH.search(ln)]
    assert not hits, f"{doc.name} prints a machine's path: {hits[:3]}"


def test_relative_cmd_strips_the_checkout() -> None:
    import sys

    sys.path.insert(0, str(REPO / "benchmarks"))
    from run_all import REPO as BENCH_REPO
    from run_all import relative_cmd

    cmd = f"{BENCH_REPO}/benchmarks/bench_view.py --screenshots {BENCH_REPO}/docs/images"
    assert relative_cmd(cmd) == "benchmarks/bench_view.py --screenshots docs/images"


def test_cold_demo_times_quoted_in_the_docs_match_the_benchmark_page() -> None:
    walls = cold_demo_walls()
    assert len(walls) >= 2, "docs/benchmarks.md has no cold-demo table"
    quoted = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8").replace("\n", " ")
        for m in re.finditer(r"(\d+)[–-](\d+) s\b([^.]{0,80})", text):
            ctx = text[max(0, m.start() - 120) : m.end()]
            if "demo" in ctx and "cold demo" in ctx.lower() or "stays at" in ctx:
                quoted.append((doc.name, int(m[1]), int(m[2])))
    assert len(quoted) >= 3, quoted  # README, user guide (twice), limitations
    for name, lo, hi in quoted:
        assert lo <= min(walls) and max(walls) <= hi, (
            f"{name}: {lo}–{hi} s vs measured {min(walls)}–{max(walls)} s"
        )


def test_no_other_cold_demo_figures() -> None:
    """The demo time is quoted only as the measured range: no "about two minutes" beside "25–30 s"."""
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8").replace("\n", " ")
        for m in re.finditer(r"demo[^.]{0,160}", text):
            assert not re.search(r"about (two|three|\d+) minutes?", m[0]), f"{doc.name}: {m[0]}"


def test_model_size_defaults_are_stated_where_they_differ() -> None:
    from napari_pathm3.cli import build_parser
    from napari_pathm3.config import DEFAULT_SIZE
    from napari_pathm3.widgets.train import SIZE_TOOLTIP, WIDGET_SIZE

    train_help = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    guide = (REPO / "docs" / "user-guide.md").read_text(encoding="utf-8").replace("\n   ", " ")
    if WIDGET_SIZE == DEFAULT_SIZE:
        return
    assert f"default: {DEFAULT_SIZE}" in " ".join(train_help.split()) and "widget starts at tiny" in " ".join(
        train_help.split()
    )
    assert f"starts at {WIDGET_SIZE}" in SIZE_TOOLTIP and f"default is {DEFAULT_SIZE}" in SIZE_TOOLTIP
    assert f"model size {WIDGET_SIZE}" in guide and f"`train --size` defaults to *{DEFAULT_SIZE}*" in guide
