"""The import-linter contracts in pyproject.toml mean something: each is kept by a clean synthetic package and
broken by one planted import, and the real package keeps every contract that is not still pending."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: import-linter depends on tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PKG = "napari_pathm3"

pytest.importorskip(
    "importlinter", reason="import-linter is in the [testing] extra: pip install -e '.[testing]'"
)

CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
CONTRACTS = {c["id"]: c for c in CONFIG["contracts"]}

# Contracts whose last violations are being removed by the front-door refactor (issue 22 items 1-3, j22b):
# they are checked on the real package as expected failures until then, and on synthetic packages always.
PENDING = {"faces-through-api"}

# One planted import per contract: (module to create, its source). Each breaks exactly that contract.
PLANTED = {
    "layers": ("napari_pathm3.io._planted", "from napari_pathm3 import api\n"),
    "core-headless": ("napari_pathm3.tiling._planted", "import qtpy\n"),
    "model-tensors-only": ("napari_pathm3.model._planted", "from napari_pathm3.io import _planted_target\n"),
    "inference-not-training": ("napari_pathm3.inference", "from napari_pathm3.training import loop\n"),
    "faces-through-api": ("napari_pathm3.widgets._planted", "from napari_pathm3 import inference\n"),
}

# The faces may import these top-level units of the package (the front door and the shared vocabulary).
FACE_ALLOWED = {
    "api",
    "layer_kinds",
    "config",
    "errors",
    "_types",
    "threads",
    "device",
    "paths",
    "result",
    "schemas",
    "jsonfile",
    "jobs",  # the requests and the run context the faces build (issue 22 item 1)
    "viewer",  # napari-side vocabulary: which slide and region a viewer holds, show() (no Qt)
}
FACES = {"cli", "_cli", "widgets", "_napari"}


def _config_text() -> str:
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    start = text.index("\n[tool.importlinter]\n") + 1
    end = text.index("\n[tool.", start + 1)
    return text[start:end]


def _names(contract: dict) -> set[str]:
    names: set[str] = set()
    for key in ("source_modules", "forbidden_modules"):
        names.update(contract.get(key, []))
    for layer in contract.get("layers", []):
        names.update(part.strip() for part in re.split(r"[|:]", layer))
    return {n for n in names if n == PKG or n.startswith(PKG + ".")}


def _write_module(src: Path, dotted: str, text: str = "") -> None:
    parts = dotted.split(".")
    for i in range(1, len(parts)):
        pkg = src.joinpath(*parts[:i])
        pkg.mkdir(exist_ok=True)  # parents come first: the loop walks down
        (pkg / "__init__.py").touch()
    path = src.joinpath(*parts)
    if path.is_dir():  # a package: the planted text goes into its __init__
        (path / "__init__.py").write_text(text)
    else:
        path.with_suffix(".py").write_text(text)


def _synthetic(tmp_path: Path) -> Path:
    """A package with an empty module for every unit the contracts name, under the real contracts."""
    src = tmp_path / "src"
    src.mkdir()
    names = set().union(*(_names(c) for c in CONTRACTS.values()))
    for name in sorted(names, key=lambda n: n.count(".")):
        # every unit becomes a package, so a planted module can go into any of them
        _write_module(src, name + ".__init__")
    _write_module(src, "napari_pathm3.io._planted_target")
    _write_module(src, "napari_pathm3.training.loop")
    (tmp_path / "pyproject.toml").write_text(_config_text())
    return src


def _lint(cwd: Path, src: Path, *contracts: str) -> subprocess.CompletedProcess[str]:
    code = (
        "import sys\n"
        "from importlinter.cli import lint_imports\n"
        f"sys.exit(lint_imports(config_filename={str(cwd / 'pyproject.toml')!r}, no_cache=True,"
        f" limit_to_contracts={contracts!r}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True)


def test_every_contract_has_a_planted_violation() -> None:
    assert set(PLANTED) == set(CONTRACTS)


def test_clean_synthetic_package_keeps_every_contract(tmp_path: Path) -> None:
    src = _synthetic(tmp_path)
    proc = _lint(tmp_path, src, *CONTRACTS)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]


@pytest.mark.parametrize("contract", sorted(PLANTED))
def test_planted_violation_breaks_its_contract(tmp_path: Path, contract: str) -> None:
    src = _synthetic(tmp_path)
    module, text = PLANTED[contract]
    _write_module(src, module, text)
    proc = _lint(tmp_path, src, contract)
    assert proc.returncode != 0, proc.stdout[-3000:]
    assert "BROKEN" in proc.stdout, proc.stdout[-3000:]


@pytest.mark.parametrize(
    "contract",
    [
        pytest.param(c, marks=pytest.mark.xfail(reason="pending: issue 22 front door (j22b)"))
        if c in PENDING
        else c
        for c in sorted(CONTRACTS)
    ],
)
def test_real_package_keeps_contract(contract: str) -> None:
    proc = _lint(ROOT, ROOT / "src", contract)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_faces_contract_classifies_every_top_level_unit() -> None:
    """A new top-level module must be either allowed to the faces or forbidden to them (not forgotten)."""
    units = {
        p.stem for p in (ROOT / "src" / PKG).iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()
    }
    units.discard("__init__")
    forbidden = {m.split(".")[1] for m in CONTRACTS["faces-through-api"]["forbidden_modules"]}
    assert forbidden.isdisjoint(FACE_ALLOWED)
    unclassified = units - forbidden - FACE_ALLOWED - FACES
    assert unclassified == set(), (
        f"add these to faces-through-api's forbidden_modules or FACE_ALLOWED: {unclassified}"
    )
