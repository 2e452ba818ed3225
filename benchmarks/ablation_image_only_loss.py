"""Does the extra image-only cross-entropy (``PathM3Config.train_image_only_path``) help image-only inference?

A tiny PathM3 in ``mode="image_text"`` is trained on synthetic bags (tests/model/test_learnability.py's
task: distractor patches plus a few class-prototype patches, at a weaker signal) whose captions name the
class, as 97.5 % of PatchGastric's raw captions do. Classification only (α = 1: no LM, so the runs are
short); the switch is the only difference between paired runs (same seed, same data). Reported: accuracy
image-only (``text=None``, the inference users get) and with the reference caption as text, on validation bags
(what the default is chosen on) and on separate test bags (reported only).

    python benchmarks/ablation_image_only_loss.py [--quick] [--seeds 3] [--steps 150]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))
from _common import emit, load_average, machine  # noqa: E402

CLASSES = ("well", "moderately", "poorly")
PHRASES = (
    "well differentiated tubular adenocarcinoma",
    "moderately differentiated tubular adenocarcinoma",
    "poorly differentiated adenocarcinoma",
)
DIM = 16


def make_bags(num: int, seed: int, signal: float) -> tuple[list[Any], Any, list[str]]:
    import torch

    g = torch.Generator().manual_seed(seed)
    protos = torch.eye(DIM)[:3] * signal
    feats, labels, caps = [], [], []
    for _ in range(num):
        label = int(torch.randint(3, (1,), generator=g))
        n = int(torch.randint(40, 121, (1,), generator=g))
        x = torch.randn(n, DIM, generator=g)
        pos = torch.randperm(n, generator=g)[:4]
        x[pos] = protos[label] + 0.3 * torch.randn(4, DIM, generator=g)
        feats.append(x)
        labels.append(label)
        caps.append(f"atypical glands in the mucosa. {PHRASES[label]}.")
    return feats, torch.tensor(labels), caps


def _collate(feats: list[Any]) -> tuple[Any, Any]:
    import torch

    n = max(len(f) for f in feats)
    x = torch.zeros(len(feats), n, DIM)
    mask = torch.zeros(len(feats), n, dtype=torch.bool)
    for i, f in enumerate(feats):
        x[i, : len(f)], mask[i, : len(f)] = f, True
    return x, mask


def run(seed: int, image_only_path: bool, steps: int, signal: float) -> dict[str, Any]:
    import torch

    from napari_pathm3.config import PathM3Config
    from napari_pathm3.model import build_model

    torch.manual_seed(seed)
    cfg = PathM3Config.tiny(feature_dim=DIM, class_names=CLASSES, mode="image_text", alpha=1.0)
    model = build_model(dataclasses.replace(cfg, train_image_only_path=image_only_path))
    tx, ty, tc = make_bags(160, 1000 + seed, signal)
    vx, vy, vc = make_bags(90, 2000 + seed, signal)  # validation: chooses the default
    sx, sy, sc = make_bags(90, 3000 + seed, signal)  # test: reported, never used to choose
    opt = torch.optim.AdamW(model.optimizer_param_groups(), lr=3e-3)
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    model.train()
    for _ in range(steps):
        idx = torch.randperm(len(tx), generator=g)[:8].tolist()
        x, mask = _collate([tx[i] for i in idx])
        out = model(x, mask, labels=ty[idx], text=[tc[i] for i in idx])
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    model.eval()
    out: dict[str, Any] = {"seed": seed, "train_image_only_path": image_only_path}
    for prefix, (bx, by, bc) in (("", (vx, vy, vc)), ("test_", (sx, sy, sc))):
        x, mask = _collate(bx)
        with torch.no_grad():
            img = model.classify(x, mask).logits.argmax(-1)
            txt = model.classify(x, mask, text=bc).logits.argmax(-1)
        out[f"{prefix}acc_image_only"] = round(float((img == by).float().mean()), 4)
        out[f"{prefix}acc_image_text"] = round(float((txt == by).float().mean()), 4)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--signal", type=float, default=2.0, help="class-prototype strength of the key patches")
    a = p.parse_args()
    seeds, steps = (1, 3) if a.quick else (a.seeds, a.steps)
    from napari_pathm3.threads import apply_thread_policy

    apply_thread_policy()
    load = load_average()
    runs = [run(s, flag, steps, a.signal) for s in range(seeds) for flag in (True, False)]
    summary = {}
    for flag in (True, False):
        rs = [r for r in runs if r["train_image_only_path"] is flag]
        summary[str(flag)] = {
            k: round(statistics.mean(r[k] for r in rs), 4)
            for k in ("acc_image_only", "acc_image_text", "test_acc_image_only", "test_acc_image_text")
        }
    emit(
        {
            "benchmark": "ablation_image_only_loss",
            "machine": machine(),
            "load_average": load,
            "steps": steps,
            "signal": a.signal,
            "runs": runs,
            "mean": summary,
        }
    )


def to_markdown(record: dict[str, Any]) -> str:
    """Results table from the measured runs."""
    lines = [
        "## Extra image-only cross-entropy (`ablation_image_only_loss.py`)",
        "",
        f"Tiny model, synthetic bags, {record.get('steps')} steps, signal {record.get('signal')}, "
        f"load average {record.get('load_average')}.",
        "",
        "| train_image_only_path | seed | val accuracy image-only | val accuracy image & text | test image-only "
        "| test image & text |",
        "|---|---|---|---|---|---|",
    ]

    def cells(r: dict[str, Any]) -> str:
        keys = ("acc_image_only", "acc_image_text", "test_acc_image_only", "test_acc_image_text")
        return " | ".join(f"{r[k]:.3f}" if k in r else "-" for k in keys)

    for r in record.get("runs", []):
        lines.append(f"| {r['train_image_only_path']} | {r['seed']} | {cells(r)} |")
    for flag, m in record.get("mean", {}).items():
        lines.append(f"| {flag} | mean | {cells(m)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
