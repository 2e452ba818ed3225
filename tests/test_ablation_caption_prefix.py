"""benchmarks/ablation_caption_prefix.py: variants pass their flags to the CLI; --summarise averages kept runs."""

from __future__ import annotations

import json
from pathlib import Path

from .conftest import benchmark_module


def _module():
    return benchmark_module("ablation_caption_prefix")


def test_variants_are_cli_flags() -> None:
    from napari_pathm3.cli import build_parser

    mod = _module()
    assert mod.VARIANTS["off"] == ()
    for flags in mod.VARIANTS.values():  # every variant parses as train options
        build_parser().parse_args(["train", "--manifest", "m", "--features", "f", "--out", "o", *flags])


def test_summarise_means_per_family_and_variant(tmp_path: Path, capsys) -> None:
    mod = _module()
    for seed, acc in ((0, 0.5), (1, 1.0)):
        run = tmp_path / f"presence_s{seed}_off"
        run.mkdir()
        scores = {"accuracy": acc, "bleu_4": 0.4, "count_word_accuracy": None}
        rec = {"family": "presence", "seed": seed, "variant": "off", "train_seconds": 10.0, "val": scores,
               "test": scores}  # fmt: skip
        (run / "ablation_record.json").write_text(json.dumps(rec))
    record = mod.main(["--summarise", "--keep", str(tmp_path)])
    got = record["summary"]["presence/off"]
    assert got["val"]["accuracy"] == 0.75 and got["seeds"] == [0, 1]
    assert got["test"]["count_word_accuracy"] is None
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["bench"] == "ablation_caption_prefix"
