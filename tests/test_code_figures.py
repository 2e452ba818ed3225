"""docs/architecture.md quotes the structure figures that benchmarks/code_figures.py measures; they may not
drift: each documented figure is within 10 % of the measurement."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _figures() -> dict[str, object]:
    spec = importlib.util.spec_from_file_location("code_figures", ROOT / "benchmarks" / "code_figures.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.figures()


def test_documented_figures_match_the_code() -> None:
    doc = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    found = re.search(r"<!-- code_figures: (\{.*\}) -->", doc)
    assert found, "docs/architecture.md lost its code_figures line"
    documented = json.loads(found.group(1))
    measured = _figures()
    for key, bound in documented.items():
        value = measured[key]
        assert isinstance(value, int)
        # a band, not equality: a merge that adds one `Any` elsewhere does not break the suite, but the
        # table can never be more than 10 % off what the code has
        assert abs(value - bound) <= 0.1 * bound, (
            f"{key}: docs/architecture.md says {bound}, the code has {value}: update the table and its JSON line"
        )


def test_the_counter_counts() -> None:
    import ast

    spec = importlib.util.spec_from_file_location("code_figures", ROOT / "benchmarks" / "code_figures.py")
    assert spec is not None and spec.loader is not None
    cf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cf)
    code = 'from typing import Any\nx: "dict[str, Any]" = {}\ndef f(a: Any, *b, c=1, **d) -> Any: ...\n'
    tree = ast.parse(code)
    assert cf._count_any(tree) == 3
    fn = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef))
    assert cf._n_params(fn) == 4
