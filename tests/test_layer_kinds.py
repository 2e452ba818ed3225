"""Result-layer kinds are one enum, and `is_result_layer` is the one test of "a layer we added"."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

from napari_pathm3.layer_kinds import ResultLayerKind, is_result_layer, result_layer_kind

SRC = Path(__file__).resolve().parents[1] / "src" / "napari_pathm3"


def test_kind_of_a_layer() -> None:
    heat = SimpleNamespace(metadata={"kind": "attention"})
    assert result_layer_kind(heat) is ResultLayerKind.ATTENTION
    assert is_result_layer(heat) and is_result_layer(heat, ResultLayerKind.ATTENTION)
    assert not is_result_layer(heat, ResultLayerKind.TOP_PATCHES, ResultLayerKind.TISSUE)
    for other in (SimpleNamespace(metadata={}), SimpleNamespace(metadata={"kind": "spline"}), object()):
        assert result_layer_kind(other) is None and not is_result_layer(other)
    assert str(ResultLayerKind.PHRASE_MAP) == "phrase_map"


def test_no_module_reads_the_kind_key_itself() -> None:
    pattern = re.compile(r"""["']kind["']\)?\s*(==|!=|not in|in)|\.get\(["']kind["']\)|\[["']kind["']\]""")
    found = [
        f"{p.relative_to(SRC)}:{i}"
        for p in sorted(SRC.rglob("*.py"))
        if p.name != "layer_kinds.py"
        for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if pattern.search(line)
    ]
    assert found == [], f"use napari_pathm3.layer_kinds (result_layer_kind / is_result_layer): {found}"
