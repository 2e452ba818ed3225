"""benchmarks/choose_on_validation.py picks recipe constants by validation figures, never by test figures."""

from __future__ import annotations

import pytest

from .conftest import benchmark_module


@pytest.fixture
def choose_mod():
    return benchmark_module("choose_on_validation")


def _run(variant, seed, val, acc, bleu):
    return {"variant": variant, "seed": seed, "val": {"combined": val}, "accuracy": acc, "bleu_4": bleu}


def test_choice_follows_validation_not_test(choose_mod):
    runs = [
        _run("no_itc", 0, 0.80, 1.0, 1.0),  # best on test, worse on validation
        _run("no_itc", 1, 0.82, 1.0, 1.0),
        _run("itc_0.5", 0, 0.85, 0.5, 0.5),
        _run("itc_0.5", 1, 0.84, 0.5, 0.5),
        _run("itc_1", 0, 0.10, 0.9, 0.9),
    ]
    out = choose_mod.choose(runs)
    itc = out["SCRATCH_ITC"]
    assert itc["chosen_on_validation"] == 0.5
    assert itc["values"][0.0]["val_combined"] == pytest.approx(0.81)
    assert itc["values"][0.0]["test_combined"] == pytest.approx(1.0) and 0.1 not in itc["values"]
    assert out["SCRATCH_ALPHA"]["chosen_on_validation"] == 0.1  # only the default ran
    md = choose_mod.to_markdown({"choice": out, "runs": runs, "load_average_min_max": [1, 2]})
    assert "0.5 **(chosen)**" in md and "test combined (not used)" in md
