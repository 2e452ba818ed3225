"""Imports point one way: the import-linter layers contract in pyproject.toml holds, and no module of the
package imports itself back through others (function-level imports included; see docs/architecture.md)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

importlinter = pytest.importorskip(
    "importlinter", reason="import-linter is in the [testing] extra: pip install -e '.[testing]'"
)


def _graph(*, type_checking: bool):  # noqa: ANN202 - grimp's ImportGraph
    import grimp

    return grimp.build_graph(
        "napari_pathm3",
        include_external_packages=False,
        exclude_type_checking_imports=not type_checking,
        cache_dir=None,  # nothing written into the checkout
    )


def _cycles(graph) -> list[list[str]]:  # noqa: ANN001
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    adj = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(adj):
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            v, i = work.pop()
            if i == 0:
                index[v] = low[v] = len(index)
                stack.append(v)
                on_stack.add(v)
            if i < len(adj[v]):
                work.append((v, i + 1))
                w = adj[v][i]
                if w not in index:
                    work.append((w, 0))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[v])
    return found


def test_layers_contract_is_kept() -> None:
    """`lint-imports` (pyproject.toml [tool.importlinter]): every import, including those inside functions and
    under TYPE_CHECKING, points down the layers config -> io -> tiling -> features/model -> training ->
    heatmaps -> result -> layers/heatmap_png -> inference -> demo -> api -> _napari -> widgets -> cli.
    In a subprocess: import-linter reconfigures logging (it would silence the package's loggers here).
    The other contracts (no Qt in the core, faces through api, ...) are checked in tests/test_contracts.py."""
    code = (
        "import sys\n"
        "from importlinter.cli import lint_imports\n"
        f"sys.exit(lint_imports(config_filename={str(ROOT / 'pyproject.toml')!r}, no_cache=True,"
        " limit_to_contracts=('layers',)))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]


def test_no_import_cycles() -> None:
    """No circle of runtime imports (module- or function-level) anywhere in the package. Imports under
    TYPE_CHECKING only name types and never run, so they do not count here (the layers contract checks them)."""
    sys.path.insert(0, str(ROOT / "src"))
    try:
        cycles = _cycles(_graph(type_checking=False))
    finally:
        sys.path.remove(str(ROOT / "src"))
    assert cycles == [], f"import cycles: {cycles}"


def test_cycle_finder_finds_a_cycle() -> None:
    """The check above can fail: a two-module circle is reported."""

    class Fake:
        modules = {"a", "b", "c"}
        edges = {"a": {"b"}, "b": {"a"}, "c": {"a"}}

        def find_modules_directly_imported_by(self, m: str) -> set[str]:
            return self.edges[m]

    assert _cycles(Fake()) == [["a", "b"]]
