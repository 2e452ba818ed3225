"""The one grid rule (issue 22 item 1): ``CaptionRequest.tiling_for`` starts from the model's tiling, applies the
explicit overrides, then the µm/px policy; the requests validate their fields; the run context times stages."""

from __future__ import annotations

import dataclasses

import pytest

from napari_pathm3._types import Stage
from napari_pathm3.config import TilingConfig
from napari_pathm3.errors import Cancelled
from napari_pathm3.jobs import CaptionRequest, RegionTrainingRequest, RunContext

MODEL = TilingConfig(patch_size=96, target_mpp=0.5, min_tissue_fraction=0.5)


def test_the_models_tiling_first() -> None:
    assert CaptionRequest().tiling_for(MODEL, 0.25) == MODEL  # 0.5 stays 0.5 (the widget's old 0.25 bug)
    assert CaptionRequest().tiling_for(None, 0.25) == TilingConfig()  # a model that records no grid


def test_overrides_then_the_mpp_policy() -> None:
    assert CaptionRequest(min_tissue_fraction=0.1).tiling_for(MODEL, 0.5).min_tissue_fraction == 0.1
    level = CaptionRequest(level=2).tiling_for(MODEL, 0.5)
    assert level.target_mpp is None and level.level == 2 and level.patch_size == 96
    whole = TilingConfig(patch_size=64, target_mpp=1.0)
    assert CaptionRequest(tiling=whole).tiling_for(MODEL, 0.5) == whole
    # no µm/px: the API refuses later (check_grid names mpp=), the widgets tile level 0 in pixels
    assert CaptionRequest().tiling_for(MODEL, None) == MODEL
    lv0 = CaptionRequest(missing_mpp="level0").tiling_for(MODEL, None)
    assert lv0 == dataclasses.replace(MODEL, target_mpp=None, level=0)
    assert CaptionRequest(missing_mpp="level0").tiling_for(MODEL, 0.25) == MODEL  # known µm/px: unchanged


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("top_k", 0, "top_k"),
        ("top_k", True, "top_k"),
        ("missing_mpp", "guess", "missing_mpp"),
        ("min_tissue_fraction", 1.5, "min_tissue_fraction"),
        ("mpp", 0.0, "mpp"),
    ],
)
def test_caption_request_rejects_bad_fields(field: str, value: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        CaptionRequest(**{field: value})


def test_requests_are_frozen_and_typed() -> None:
    req = CaptionRequest(queries=["solid nests", " "], text="  ")
    assert req.queries == ("solid nests",) and req.text is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        req.top_k = 3  # type: ignore[misc]
    with pytest.raises(TypeError, match="tiling"):
        CaptionRequest(tiling={"patch_size": 224})  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        CaptionRequest(unknown=1)  # type: ignore[call-arg]
    assert CaptionRequest(model="clip:vinid/plip").is_clip and CaptionRequest().is_demo
    assert RegionTrainingRequest(output_dir="x", class_names=["a", "b"]).class_names == ("a", "b")
    with pytest.raises(ValueError, match="model size"):
        RegionTrainingRequest(output_dir="x", model_size="huge")


def test_run_context_times_reports_and_cancels() -> None:
    seen = []
    flag = type("Flag", (), {"is_set": lambda self: bool(seen) and seen[-1].stage is Stage.DONE})()
    ctx = RunContext(progress=seen.append, cancel=flag)
    with ctx.timed(Stage.MODEL):
        pass
    with ctx.timed(Stage.MODEL):
        pass
    assert set(ctx.timings) == {"model"} and ctx.timings["model"] >= 0
    ctx.check()  # not cancelled yet
    ctx.report(5, 5, Stage.DONE)
    assert seen[-1].done == 5
    with pytest.raises(Cancelled):
        ctx.check()
