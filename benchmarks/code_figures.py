"""Structure figures of `src/napari_pathm3`, printed as one JSON line (docs/architecture.md quotes them and
tests/test_code_figures.py checks the doc against this script, so they cannot drift).

Counting rules (all by `ast`, so comments, strings and docstrings never count):
- `any_count`: occurrences of the name `Any` (`Any` or `typing.Any`/`t.Any`) outside import statements, in
  code and in annotations, including annotations written as strings (they are parsed).
- `functions_ge8_params`: functions and methods whose parameter list (positional, keyword-only, `*args`,
  `**kwargs`; `self`/`cls` excluded) has 8 or more names.
- `largest_file`: the longest source file by line count.
- `mypy_clean`: whether `mypy` (configured in pyproject.toml) reports no errors on the core packages; only
  with `--mypy` (it takes a minute on a busy machine), otherwise `null`.
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "napari_pathm3"
CORE = ("io", "tiling", "features", "model", "training")


def _count_any(node: ast.AST) -> int:
    count = 0
    for sub in ast.walk(node):
        if isinstance(sub, ast.Import | ast.ImportFrom):
            continue
        if isinstance(sub, ast.Name) and sub.id == "Any":
            count += 1
        elif isinstance(sub, ast.Attribute) and sub.attr == "Any":
            count += 1
        elif isinstance(sub, ast.Constant) and isinstance(sub.value, str) and "Any" in sub.value:
            # a quoted annotation ("dict[str, Any]"): count only if the string parses as an expression
            try:
                expr = ast.parse(sub.value, mode="eval")
            except SyntaxError:
                continue
            count += _count_any(expr)
    return count


def _n_params(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    a = fn.args
    names = [*a.posonlyargs, *a.args, *a.kwonlyargs]
    n = len(names) + (a.vararg is not None) + (a.kwarg is not None)
    if names and names[0].arg in ("self", "cls"):
        n -= 1
    return n


def figures(*, src: Path = SRC) -> dict[str, object]:
    any_count = 0
    long_functions: list[str] = []
    largest = ("", 0)
    for path in sorted(src.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        rel = path.relative_to(src.parent).as_posix()
        lines = len(text.splitlines())
        if lines > largest[1]:
            largest = (rel, lines)
        tree = ast.parse(text)
        # docstrings are Constants too: drop them before counting quoted annotations
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
                if isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
                    body[0].value.value = ""
        any_count += _count_any(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and _n_params(node) >= 8:
                long_functions.append(f"{rel}:{node.name}:{_n_params(node)}")
    return {
        "any_count": any_count,
        "functions_ge8_params": len(long_functions),
        "functions_ge8_list": long_functions,
        "largest_file": largest[0],
        "largest_file_lines": largest[1],
    }


def mypy_clean() -> bool:
    targets = [str(SRC / pkg) for pkg in CORE]
    proc = subprocess.run([sys.executable, "-m", "mypy", *targets], cwd=ROOT, capture_output=True, text=True)
    return proc.returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mypy", action="store_true", help="also run mypy on the core packages")
    args = parser.parse_args()
    out = figures()
    out["mypy_clean"] = mypy_clean() if args.mypy else None
    print(json.dumps(out))


if __name__ == "__main__":
    main()
