"""Counted progress for the stages that only showed elapsed time (issue 27, item 6): tissue detection counts
the blocks of its low-resolution read, model loading the bytes of ``model.safetensors``, the caption its
decoding steps; so the CLI's bars and the widget's stage line can tell the time left. Core only, no Qt."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from napari_pathm3._types import Progress, Stage

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from napari_pathm3.config import PathM3Config
    from napari_pathm3.model import build_model

    torch.manual_seed(0)
    cfg = PathM3Config.tiny(
        feature_dim=94, encoder_name="builtin:colorstats", class_names=("tumour", "normal")
    )
    return build_model(cfg).eval().save_pretrained(tmp_path_factory.mktemp("ckpt") / "tiny")


def _counts(events: list[Progress], stage: Stage) -> list[tuple[int, int]]:
    return [(e.done, e.total) for e in events if e.stage is stage]


def _assert_counted(counts: list[tuple[int, int]], *, at_least: int = 2) -> None:
    """Several events, one total, done never going back, moving from 0 up."""
    assert len(counts) >= at_least, counts
    totals = {t for _, t in counts}
    assert len(totals) == 1 and totals.pop() > 0, counts
    done = [d for d, _ in counts]
    assert done == sorted(done) and done[-1] > done[0] == 0, counts


def test_model_load_counts_the_bytes_of_the_weights(tiny_ckpt: Path) -> None:
    from napari_pathm3 import api
    from napari_pathm3.model.checkpoint import WEIGHTS_NAME, tensor_bytes

    events: list[Progress] = []
    api.load_model(tiny_ckpt, device="cpu", progress=events.append)
    counts = _counts(events, Stage.LOAD_MODEL)
    _assert_counted(counts, at_least=10)  # one event per tensor
    sizes = tensor_bytes(tiny_ckpt / WEIGHTS_NAME)
    assert counts[-1] == (sum(sizes.values()), sum(sizes.values()))
    # the image-only load reads fewer tensors, and counts only those
    image_only: list[Progress] = []
    api.load_model(tiny_ckpt, device="cpu", text_side=False, progress=image_only.append)
    last = _counts(image_only, Stage.LOAD_MODEL)[-1]
    assert last[0] == last[1] < sum(sizes.values())


def test_damaged_weights_still_fail_with_a_checkpoint_error(tiny_ckpt: Path, tmp_path: Path) -> None:
    import shutil

    from napari_pathm3 import api
    from napari_pathm3.errors import CheckpointError
    from napari_pathm3.model.checkpoint import WEIGHTS_NAME

    bad = tmp_path / "bad"
    shutil.copytree(tiny_ckpt, bad)
    (bad / WEIGHTS_NAME).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(CheckpointError, match="unreadable weights"):
        api.load_model(bad, device="cpu", progress=lambda e: None)


@pytest.mark.parametrize("beams", [1, 2])
def test_caption_counts_decoding_steps_of_max_new_tokens(tiny_ckpt: Path, beams: int) -> None:
    from napari_pathm3 import api

    model = api.load_model(tiny_ckpt, device="cpu")
    events: list[Progress] = []
    x = torch.randn(1, 12, 94)
    model.generate_captions(x, max_new_tokens=6, num_beams=beams, progress=events.append)
    counts = _counts(events, Stage.CAPTION)
    _assert_counted(counts)
    assert counts[0] == (0, 6) and all(d <= 6 for d, _ in counts)
    assert len(counts) <= 7  # one per step (all beams together), not per beam


@pytest.mark.parametrize("beams", [1, 2])
def test_transformers_generate_counts_steps_too(beams: int) -> None:
    """The pretrained-LM path (transformers' ``generate``) counts steps with a criterion that never stops."""
    transformers = pytest.importorskip("transformers")
    from napari_pathm3.model.language import _counting_criteria

    torch.manual_seed(0)
    cfg = transformers.GPT2Config(
        vocab_size=24, n_embd=32, n_layer=1, n_head=2, n_positions=32, eos_token_id=3
    )
    lm = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    events: list[Progress] = []
    ids = torch.tensor([[1, 2]])
    out = lm.generate(
        ids,
        max_new_tokens=5,
        min_new_tokens=5,  # no early end: five steps
        num_beams=beams,
        do_sample=False,
        pad_token_id=0,
        stopping_criteria=_counting_criteria(events.append, 5),
    )
    assert out.shape[1] == 7
    assert _counts(events, Stage.CAPTION) == [(i, 5) for i in range(1, 6)]


class _Level:
    """A LevelSource of one 300 x 200 level-0 image."""

    dimensions = (300, 200)
    level_dimensions = [(300, 200)]
    level_downsamples = [1.0]

    def best_level_for_downsample(self, downsample: float) -> int:
        return 0

    def read_level_region(self, x: int, y: int, level: int, w: int, h: int) -> np.ndarray:
        return np.full((h, w, 3), 200, np.uint8)


def test_downsampled_read_counts_its_blocks() -> None:
    from napari_pathm3.io.downsample import read_downsampled

    seen: list[tuple[int, int]] = []
    out = read_downsampled(_Level(), 2.0, block=64, on_block=lambda d, t: seen.append((d, t)))
    assert out.shape == (100, 150, 3)
    # 32 output px per block: ceil(100/32) * ceil(150/32) = 4 * 5 blocks
    assert seen == [(i, 20) for i in range(1, 21)]


def test_tissue_detection_counts_read_blocks_then_the_mask(synthetic_slide: Path) -> None:
    from napari_pathm3 import api
    from napari_pathm3.tiling.tissue import detect_tissue

    events: list[Progress] = []
    with api.open_slide(synthetic_slide) as slide:
        mask = detect_tissue(slide, use_cache=False, progress=events.append)
    assert not mask.empty
    counts = _counts(events, Stage.TISSUE)
    assert len(counts) >= 2 and counts[-1][0] == counts[-1][1] >= 2  # block(s) read, then the mask
    assert [d for d, _ in counts] == sorted(d for d, _ in counts)


def test_caption_slide_marks_each_stages_own_counts(
    synthetic_slide: Path, tiny_ckpt: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In the pipeline the counts come as events *within* their stage (the stage counter's own events have
    ``within=None``), model loading before the first stage; labels do not repeat the stage name."""
    from collections import OrderedDict

    from napari_pathm3 import api
    from napari_pathm3.tiling import tissue

    monkeypatch.setattr(
        tissue, "_CACHE", OrderedDict()
    )  # a mask cached by another test: no detection to count

    events: list[Progress] = []
    api.caption_slide(synthetic_slide, model=tiny_ckpt, device="cpu", word_maps=False, progress=events.append)
    first_stage = next(i for i, e in enumerate(events) if e.stage is Stage.TISSUE and e.within is None)
    assert {e.stage for e in events[:first_stage]} == {Stage.LOAD_MODEL}
    for stage in (Stage.TISSUE, Stage.CAPTION):
        own = [e for e in events if e.within is stage and e.stage is stage]
        assert len(own) >= 2 and own[-1].done > own[0].done, stage
        assert own[0].label() == str(stage)


def test_cli_shows_time_left_for_tissue_model_load_and_caption(
    synthetic_slide: Path, tiny_ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """tqdm's clock made to advance 2 s per reading, so every stage "takes" seconds: the bars of model
    loading, tissue and caption show ``[elapsed<remaining]`` with a remaining time, not only elapsed."""
    from collections import OrderedDict

    import tqdm.std

    from napari_pathm3.cli import main
    from napari_pathm3.tiling import tissue

    monkeypatch.setattr(
        tissue, "_CACHE", OrderedDict()
    )  # a mask cached by another test: no detection to show
    clock = iter(range(0, 10**6, 2))
    monkeypatch.setattr(tqdm.std, "time", lambda: float(next(clock)))
    out = tmp_path / "r.json"
    assert main(["caption", str(synthetic_slide), "--model", str(tiny_ckpt), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    for name, unit in (("loading model", r"[kMG]?B"), ("tissue", " steps"), ("caption", " tokens")):
        left = re.findall(rf"{name}: +\d+%\|[^|]*\| [\d.]+[kMG]?/[\d.]+{unit} \[\d\d:\d\d<(\d\d:\d\d)\]", err)
        assert left, (name, err[-3000:])
