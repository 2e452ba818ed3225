"""The README's commands: command 2 is what CI runs, every CLI flag it shows exists, and (slow) its command-line
examples run offline as written, against the shared data folder."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")
TEST_COMMAND = (
    "pip install torch==2.13.0 --extra-index-url https://download.pytorch.org/whl/cpu && "
    'pip install -e ".[testing]" && xvfb-run -a python -m pytest -ra -n 2 --dist worksteal'
)
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def cli_block() -> str:
    section = README.split("### From the command line", 1)[1]
    return section.split("```bash\n", 1)[1].split("```", 1)[0]


def cli_lines() -> list[str]:
    return [ln.split("  #")[0].strip() for ln in cli_block().splitlines() if ln.startswith("napari-pathm3 ")]


def test_command_2_is_what_ci_runs() -> None:
    assert TEST_COMMAND in README
    assert TEST_COMMAND in (REPO / ".ci" / "run").read_text()
    workflow = (REPO / ".github" / "workflows" / "test.yml").read_text()
    assert TEST_COMMAND in workflow  # Linux, under Xvfb
    assert TEST_COMMAND.replace("xvfb-run -a ", "") in workflow  # macOS / Windows


def bash_blocks() -> list[str]:
    return [b.split("```", 1)[0] for b in README.split("```bash\n")[1:]]


def test_install_lines_pin_torch_and_name_the_wheel() -> None:
    """Command 1 takes the CPU wheel from PyTorch's CPU index (a bare ``pip install torch`` pulls the CUDA build
    on Linux), command 2 may fall back to PyPI (CI reaches only PyPI), and a GPU line exists; every torch pin
    in the README is the one CI installs."""
    from napari_pathm3.cli import build_parser

    install = [ln for b in bash_blocks() for ln in b.splitlines() if ln.startswith("pip install torch")]
    assert len(install) == 3, install  # GPU line, command 1, command 2
    pins = {re.search(r"torch==([\w.]+)", ln)[1] for ln in install}
    assert pins == {re.search(r"torch==([\w.]+)", TEST_COMMAND)[1]}
    command_1 = next(ln for ln in install if "demo" in ln)
    assert f"--index-url {CPU_INDEX} " in command_1 and '".[napari]"' in command_1
    assert any("--index-url" not in ln and "[napari,timm]" in ln for ln in install)  # the GPU line
    assert sum(TEST_COMMAND in ln for ln in install) == 1
    demo = shlex.split(command_1.split("&& napari-pathm3 ", 1)[1])
    build_parser().parse_args(demo)  # the demo part of command 1 parses
    run = (REPO / ".ci" / "run").read_text()
    assert 'PIP_RETRIES="${PIP_RETRIES:-1}"' in run  # an unreachable CPU index costs seconds in CI
    guide = (REPO / "docs" / "user-guide.md").read_text(encoding="utf-8")
    guide_cpu = [ln for ln in guide.splitlines() if ln.startswith("pip install torch")]
    assert guide_cpu and all(f"--index-url {CPU_INDEX}" in ln for ln in guide_cpu)  # the guide's CPU line


def test_readme_cli_lines_parse() -> None:
    """Every ``napari-pathm3`` line of the README parses: no flag the CLI does not have."""
    from napari_pathm3.cli import build_parser

    lines = cli_lines()
    assert len(lines) >= 5
    parser = build_parser()
    for line in lines:
        argv = shlex.split(line.replace("$SLIDES", "/data/slides"))[1:]
        try:
            parser.parse_args(argv)
        except SystemExit as err:  # argparse exits on unknown flags
            pytest.fail(f"README line does not parse ({err}): {line}")


def test_foundation_model_section_parses() -> None:
    """The commands from ``huggingface-cli login`` to captioning with a UNI-feature model exist as written."""
    from napari_pathm3.cli import build_parser

    block = README.split("### Using a foundation model", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    lines = [ln.split("  #")[0].strip() for ln in block.splitlines()]
    assert any(ln.startswith("huggingface-cli login") for ln in lines)
    cli = [ln for ln in lines if ln.startswith("napari-pathm3 ")]
    assert [ln.split()[1] for ln in cli] == ["extract", "train", "caption"]
    assert "--encoder timm:hf-hub:MahmoodLab/UNI" in cli[0]
    for line in cli:
        build_parser().parse_args(shlex.split(line)[1:])


@pytest.mark.slow  # trains the demo model and a tiny model: about a minute of CPU
def test_readme_cli_examples_run_offline(shared_data: Path, tmp_path: Path) -> None:
    script = re.sub(
        r"^export NAPARI_PATHM3_DATA=.*$",
        f"export NAPARI_PATHM3_DATA={shlex.quote(str(shared_data))}",
        cli_block(),
        flags=re.M,
    )
    prelude = (
        f'set -euo pipefail\nnapari-pathm3() {{ {shlex.quote(sys.executable)} -m napari_pathm3.cli "$@"; }}\n'
    )
    env = {
        **os.environ,
        "NAPARI_PATHM3_CACHE": str(tmp_path / "cache"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "NAPARI_PATHM3_THREADS": os.environ.get("NAPARI_PATHM3_THREADS", "2"),
    }
    proc = subprocess.run(
        ["bash", "-c", prelude + script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for out in ("cmu.json", "cmu.png", "top.geojson", "features", "runs/mine/best", "mine.json", "mine.png"):
        assert (tmp_path / out).exists(), out
