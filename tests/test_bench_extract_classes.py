"""``bench_extract --class-patches``: the encoder-alone throughput of a ViT-B and a ViT-L class encoder (issue 27,
item 11). The ViTs it builds are the sizes the cards give (no timing asserted here: timing lives in benchmarks/)."""

from __future__ import annotations

import pytest

from .conftest import benchmark_module


@pytest.fixture(scope="module")
def bench_extract():
    return benchmark_module("bench_extract")


def test_classes_are_the_card_sizes(bench_extract) -> None:
    from napari_pathm3.features.cards import card_for

    assert bench_extract.SIZES["vit-b"][0] == card_for("hf:owkin/phikon").dim
    assert bench_extract.SIZES["vit-l"][0] == card_for("timm:hf-hub:MahmoodLab/UNI").dim
    assert bench_extract.LAYERS["vit-l"] == 24 and set(bench_extract.CLASSES) == {"vit-b", "vit-l"}


def test_classes_section_states_cpu_figures_and_a_missing_gpu(bench_extract) -> None:
    row = {
        "per_s": {"min": 1.0, "median": 1.5, "max": 2.0},
        "seconds": {"min": 2.0, "median": 2.5, "max": 4.0},
    }
    cond = {
        "condition": "quiet",
        "busy_processes": 0,
        "load_start": 1.0,
        "load_end": 1.2,
        "parallel_headroom": 1.9,
    }
    ct = {
        "patches": 4,
        "batch_size": 4,
        "repeat": 3,
        "classes": bench_extract.CLASSES,
        "gpu": None,
        "devices": {"cpu": [{**cond, "variants": {"vit-b": row, "vit-l": row}}]},
    }
    text = bench_extract.to_markdown({"bench": "extract", "class_throughput": ct})
    assert "ViT-B/16" in text and "ViT-L/16" in text and "| cpu |" in text and "1.6 (1–2) | 0.625 |" in text
    assert "No GPU" in text
    ct["gpu"] = "NVIDIA H100"
    ct["devices"]["cuda"] = [{"condition": "quiet", "busy_processes": 0, "variants": {"vit-b": row}}]
    text = bench_extract.to_markdown({"bench": "extract", "class_throughput": ct})
    assert "| cuda | quiet |" in text and "No GPU" not in text
