"""Run every ``bench_*.py`` (each in its own process) and regenerate ``docs/benchmarks.md`` from the results.

    python benchmarks/run_all.py [--quick] [--only read,view] [--from-json tmp/benchmarks/results.json]
                                 [--provisional "why"]

Each benchmark prints one JSON line; the lines are collected into ``tmp/benchmarks/results.json`` (reused with
``--from-json`` to rewrite the page without re-running, and merged into by ``--only``). The page is a template
filled from measured figures only: a header (machine, date, load), a table of the issue's targets with the
verdict each module computes from its numbers (its ``checks(record)``), then one section per benchmark written
by that script's ``to_markdown(record)`` (and images from its optional ``plots(record, folder)``). A script that
is absent on this branch is skipped with a note. Progress goes to stderr. ``--quick`` is a smoke run (tiny
sizes; figures not meaningful, and the page says so).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import string
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import BENCH_DIR, REPO, load_average, machine  # noqa: E402

DOC = REPO / "docs" / "benchmarks.md"
IMAGES = REPO / "docs" / "images"

#: name -> (full-run args, quick args); sized so the full run takes ~15 min on 2 cores. Any other
#: ``bench_*.py`` found next to this file runs with no arguments (``--quick`` for a quick run).
BENCHES: dict[str, tuple[list[str], list[str]]] = {
    "read": (["--repeat", "3"], ["--quick"]),
    "extract": (
        ["--repeat", "3", "--heavy-patches", "64", "--class-patches", "8"],
        ["--quick", "--heavy-patches", "4"],
    ),
    "caption": (["--repeat", "3"], ["--quick", "--no-cli"]),
    "view": (["--repeat", "5", "--steps", "40", "--screenshots", str(IMAGES)], ["--quick"]),
    "model": ([], ["--quick"]),
    "mil": ([], ["--quick"]),
    "mil_ablation": ([], ["--quick"]),
    "demo": ([], ["--quick"]),
    "export": (["--repeat", "3"], ["--quick"]),
    "tissue": (["--rounds", "3", "--repeats", "3"], ["--quick"]),
    "grounding": ([], ["--quick"]),
    "families": (["--jobs", "2"], ["--quick", "--seeds", "0", "--bags", "60"]),
}
#: benchmarks that need more than ``--timeout`` on 2 cores (seconds): the task families train 25 models
LONG = {"families": 6 * 3600}
TITLES = {
    "read": "Patch reading",
    "extract": "Feature extraction",
    "caption": "End-to-end “Caption slide”",
    "view": "Viewing a large slide in napari",
    "model": "Model: correlation module and memory",
    "mil": "Learning (MIL baselines)",
    "mil_ablation": "Learning: ablation of the caption recipe",
    "demo": "Demo",
    "export": "Exporting 100k tiles to SpatialData, QuPath GeoJSON and OME-Zarr",
    "tissue": "Tissue detection against LazySlide",
    "grounding": "Grounding: word and phrase maps",
    "families": "Learning: task families against ABMIL and stock captions (issue 21)",
}


def bench_names() -> list[str]:
    found = sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))
    return [n for n in BENCHES if n in found] + [n for n in found if n not in BENCHES]


def run_bench(name: str, quick: bool, timeout: float) -> dict[str, Any]:
    path = HERE / f"bench_{name}.py"
    if not path.exists():
        return {"skipped": f"bench_{name}.py is not on this branch"}
    full, small = BENCHES.get(name, ([], ["--quick"]))
    cmd = [sys.executable, str(path), *(small if quick else full)]
    t = time.perf_counter()
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=None, text=True, timeout=timeout, cwd=REPO)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s", "cmd": relative_cmd(" ".join(cmd[1:]))}
    wall = round(time.perf_counter() - t, 1)
    for line in reversed(proc.stdout.strip().splitlines()):
        if line.startswith("{"):
            try:
                return {**json.loads(line), "wall_s": wall, "cmd": relative_cmd(" ".join(cmd[1:]))}
            except json.JSONDecodeError:
                break
    return {
        "error": f"exit {proc.returncode}, no JSON line (its stderr is above)",
        "cmd": relative_cmd(" ".join(cmd[1:])),
    }


def relative_cmd(cmd: str) -> str:
    """``cmd`` with this checkout's absolute path removed: the page must not print the paths of the machine
    that made it (records saved before this rule still hold them)."""
    return cmd.replace(f"{REPO}{os.sep}", "").replace(str(REPO), ".")


def _module(name: str) -> Any | None:
    try:
        return importlib.import_module(f"bench_{name}")
    except Exception as err:  # noqa: BLE001 - a broken or absent script must not stop the page
        print(f"[run_all] cannot import bench_{name}: {err}", file=sys.stderr)
        return None


# ------------------------------------------------------------------------------------------------ the page
def section(name: str, record: dict[str, Any], images: Path) -> str:
    title = f"## {TITLES.get(name, name)} (`bench_{name}.py`)"
    if "skipped" in record or "error" in record:
        return f"{title}\n\n_{record.get('skipped') or record.get('error')}_\n"
    mod = _module(name)
    body = None
    if mod is not None and hasattr(mod, "to_markdown"):
        try:
            if hasattr(mod, "plots"):
                mod.plots(record, images)
            body = mod.to_markdown(record)
        except Exception as err:  # noqa: BLE001 - a record from an older script version
            body = f"_to_markdown failed on this record ({type(err).__name__}: {err}); raw figures in results.json_"
    if body is None:
        body = f"_bench_{name}.py has no to_markdown(record); raw figures in results.json_"
    cmd = relative_cmd(record.get("cmd", ""))
    if body.lstrip().startswith("## "):  # the script titles its own section
        title = ""
    head = f"{title}\n\n" if title else ""
    return f"{head}{body.strip()}\n\n<sub>`{cmd}` · {record.get('wall_s', '?')} s</sub>\n"


def targets(res: dict[str, Any]) -> list[str]:
    rows = []
    for name, record in res.items():
        mod = _module(name) if "skipped" not in record and "error" not in record else None
        if mod is None or not hasattr(mod, "checks"):
            continue
        try:
            rows += [f"| {name} | {a} | {b} | {c} |" for a, b, c in mod.checks(record)]
        except Exception as err:  # noqa: BLE001
            rows.append(f"| {name} | checks failed: {type(err).__name__} | | |")
    return rows


#: The page. Everything in ``$`` placeholders comes from the run's results (``results.json``); the fixed text
#: only says how the figures were taken and how to reproduce them. Optional blocks are empty when absent.
PAGE = string.Template(
    """# Benchmarks

${provisional}Generated by `benchmarks/run_all.py` on ${date} (${kind}); every figure below comes from
`tmp/benchmarks/results.json` of that run. Figures are medians with (min–max) over interleaved repeats;
each benchmark runs quiet and beside busy processes (one per core); each condition shows the load average
at its start and end and `parallel`: how much faster GIL-free work ran in all cores than in one (about
the core count when cores were free).
Ratios compare variants measured in the same round.

| CPU | cores | RAM | torch | load avg (1 min) at start | GPU |
|---|---|---|---|---|---|
| ${cpu} | ${cores} | ${ram_gb} GB | ${torch} | ${load_avg} | ${gpu} |

${total}${targets}${sections}${notes}## Reproduce

```sh
python benchmarks/make_large_slide.py        # once: the 60k x 40k slide under tmp/benchmarks/ (not committed)
python benchmarks/run_all.py                 # every benchmark, then this page (~15 min on 2 cores)
python benchmarks/run_all.py --only read     # one benchmark, merged into the saved results
python benchmarks/run_all.py --from-json tmp/benchmarks/results.json   # only rewrite this page
```
"""
)
TARGETS = """## Targets

Verdicts computed from the figures below.

| benchmark | check | measured | verdict |
|---|---|---|---|
"""


def _block(text: str) -> str:
    """An optional block of the page: ``text`` and a blank line, or nothing."""
    return f"{text}\n\n" if text else ""


def write_doc(
    res: dict[str, Any], meta: dict[str, Any], doc: Path | None = None, images: Path | None = None
) -> Path:
    """Fill :data:`PAGE` from the results ``res`` and the run's ``meta`` and write it to ``doc``."""
    doc, images = doc or DOC, images or IMAGES
    images.mkdir(parents=True, exist_ok=True)
    mach = meta.get("machine", {})
    rows = targets(res)
    order = [n for n in BENCHES if n in res] + [n for n in res if n not in BENCHES]
    notes = meta.get("notes") or []
    page = PAGE.substitute(
        provisional=_block(f"> **Provisional** — {meta['provisional']}" if meta.get("provisional") else ""),
        date=meta.get("date"),
        kind="quick smoke run: figures not meaningful" if meta.get("quick") else "full run",
        cpu=mach.get("cpu"),
        cores=mach.get("cores"),
        ram_gb=mach.get("ram_gb"),
        torch=mach.get("torch"),
        load_avg=meta.get("load_avg"),
        gpu=mach.get("gpu") or "none",
        total=_block(f"The whole run took {meta['total_s']} s." if meta.get("total_s") else ""),
        targets=_block(TARGETS + "\n".join(rows) if rows else ""),
        sections="".join(_block(section(name, res[name], images)) for name in order),
        notes=_block("## Notes\n\n" + "\n".join(f"- {n}" for n in notes) if notes else ""),
    )
    doc.write_text(page)
    return doc


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run, not a measurement")
    ap.add_argument("--only", default=None, help="comma-separated benchmark names (e.g. read,view)")
    ap.add_argument("--from-json", type=Path, default=None, help="rewrite the page from saved results")
    ap.add_argument("--timeout", type=float, default=1200, help="seconds per benchmark")
    ap.add_argument("--no-doc", action="store_true")
    ap.add_argument("--doc", type=Path, default=DOC)
    ap.add_argument("--provisional", default=None, help="mark the page provisional, saying why")
    ap.add_argument("--out", type=Path, default=BENCH_DIR / "results.json")
    args = ap.parse_args(argv)

    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        res, meta = saved["results"], saved["meta"]
    else:
        available = bench_names()
        names = [n.strip() for n in args.only.split(",")] if args.only else available
        meta = {
            "machine": machine(),
            "date": time.strftime("%Y-%m-%d %H:%M %Z"),
            "quick": args.quick,
            "load_avg": load_average(),
            "notes": [],
        }
        saved = json.loads(args.out.read_text()) if args.only and args.out.exists() else None
        res = dict(saved["results"]) if saved else {}
        if saved:  # a partial re-run keeps the full run's header and says what was re-run
            meta = {
                **saved["meta"],
                "notes": [
                    *saved["meta"].get("notes", []),
                    f"re-run on {meta['date']} (load {meta['load_avg']}): {', '.join(names)}",
                ],
            }
        t0 = time.perf_counter()
        for i, name in enumerate(names, 1):
            print(
                f"[run_all] ({i}/{len(names)}) {name} ... ({time.perf_counter() - t0:.0f} s so far)",
                file=sys.stderr,
                flush=True,
            )
            limit = args.timeout if args.quick else max(args.timeout, LONG.get(name, 0))
            res[name] = run_bench(name, args.quick, limit)
            r = res[name]
            status = r.get("skipped") or r.get("error") or f"done in {r.get('wall_s')} s"
            print(f"[run_all] {name}: {status}", file=sys.stderr, flush=True)
            if "skipped" in r:
                meta["notes"].append(f"{name}: skipped ({r['skipped']})")
            args.out.parent.mkdir(parents=True, exist_ok=True)  # saved after each one: a crash keeps the rest
            args.out.write_text(json.dumps({"meta": meta, "results": res}, indent=1))
        if saved:  # the header's time stays the full run's; the note says how long the re-run took
            meta["notes"][-1] += f" ({round(time.perf_counter() - t0)} s)"
        else:
            meta["total_s"] = round(time.perf_counter() - t0)
        args.out.write_text(json.dumps({"meta": meta, "results": res}, indent=1))
    if args.provisional:
        meta = {**meta, "provisional": args.provisional}
    if not args.no_doc:
        doc = write_doc(res, meta, args.doc, args.doc.parent / "images" if args.doc != DOC else IMAGES)
        print(f"[run_all] wrote {doc}", file=sys.stderr)
    print(json.dumps({"bench": "run_all", "results": {k: sorted(v) for k, v in res.items()}}))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
