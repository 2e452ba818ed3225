"""One strict atomic JSON writer: NaN/Inf refused before anything is written, the old file kept, and no
other module of the package writes JSON files itself."""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import numpy as np
import pytest

from napari_pathm3.errors import NonFiniteError
from napari_pathm3.jsonfile import finite_or_null, json_text, write_json_atomic

SRC = Path(__file__).resolve().parents[1] / "src" / "napari_pathm3"
#: the writer itself, and the QuPath exporter that streams 100k-tile GeoJSON (strict, atomic rename itself)
ALLOWED = {"jsonfile.py", "io/qupath.py"}


def test_writes_strict_json_atomically(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "a.json"
    write_json_atomic(path, {"b": np.float32(1.5), "a": np.arange(2), "p": Path("x")}, sort_keys=True)
    assert json.loads(path.read_text()) == {"a": [0, 1], "b": 1.5, "p": "x"}
    assert path.read_text().index('"a"') < path.read_text().index('"b"')
    assert [p.name for p in path.parent.iterdir()] == ["a.json"]  # no temporary left


def test_nan_is_refused_and_the_old_file_kept(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    write_json_atomic(path, {"ok": 1})
    with pytest.raises(NonFiniteError, match=r"'x'\[1\] = nan"):
        write_json_atomic(path, {"x": [1.0, math.nan]})
    assert json.loads(path.read_text()) == {"ok": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_compact_and_finite_or_null() -> None:
    assert json_text({"a": [1, 2]}, indent=None) == '{"a":[1,2]}'
    assert finite_or_null({"a": (math.inf, np.float64(2.0))}) == {"a": [None, 2.0]}


def _json_writes(tree: ast.AST) -> list[int]:
    """Lines that write JSON to a file without the writer: ``json.dump(...)`` or
    ``<path>.write_text(json.dumps(...))``."""
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        if (
            node.func.attr == "dump"
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "json"
        ):
            first = node.args[1] if len(node.args) > 1 else None
            if not (isinstance(first, ast.Attribute) and first.attr == "stdout"):  # printing is not a file
                lines.append(node.lineno)
        if node.func.attr == "write_text":
            inner = [n for a in node.args for n in ast.walk(a)]
            if any(isinstance(n, ast.Attribute) and n.attr in ("dumps", "to_json") for n in inner):
                lines.append(node.lineno)
    return lines


def test_no_module_writes_json_itself() -> None:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel in ALLOWED:
            continue
        found += [f"{rel}:{line}" for line in _json_writes(ast.parse(path.read_text(encoding="utf-8")))]
    assert found == [], f"write these through napari_pathm3.jsonfile.write_json_atomic: {found}"


def test_the_scan_finds_a_plain_write() -> None:
    code = "import json\nopen('a').write('x')\njson.dump({}, fh)\nPath('a').write_text(json.dumps({}))\n"
    assert _json_writes(ast.parse(code)) == [3, 4]
