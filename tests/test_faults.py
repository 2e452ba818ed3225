"""Fault injection (issue 13): nothing lost, nothing silent.

Each test reproduces one reported failure: a store path that holds someone else's files, an absurd mpp,
concurrent use of one cache, damaged chunks, NaN/Inf in features, losses and weights, non-RGB slides, the
napari reader's refusal reason, and CLI failures that must be one line and a non-zero exit.
"""

from __future__ import annotations

import errno
import json
import logging
import multiprocessing
import threading
from pathlib import Path

import numpy as np
import pytest

from napari_pathm3 import api, cli
from napari_pathm3.errors import (
    CheckpointError,
    FeatureStoreError,
    GridError,
    MissingMppError,
    NonFiniteError,
    NotBrightfieldError,
)
from napari_pathm3.io.feature_store import BagWriter, FeatureStore, bag_meta, inspect_bag, read_bag

ENCODER = "builtin:colorstats"


def _tree(root: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))
    }


def _write_tiff(path: Path, levels: list[np.ndarray], *, mpp: float | None, photometric: str, **kw) -> Path:
    """A tiled pyramid (SubIFDs): ``levels[0]`` full resolution, the rest reduced."""
    import tifffile

    opts = dict(tile=(16, 16), photometric=photometric, compression="zlib", metadata=None, **kw)
    if mpp is not None:
        opts |= {"resolution": (1e4 / mpp, 1e4 / mpp), "resolutionunit": "CENTIMETER"}
    with tifffile.TiffWriter(path) as tif:
        tif.write(levels[0], subifds=len(levels) - 1, **opts)
        for lv in levels[1:]:
            tif.write(lv, subfiletype=1, **opts)
    return path


def _pyramid(img: np.ndarray, n: int, *, channels_first: bool = False) -> list[np.ndarray]:
    return [img[:, :: 2**k, :: 2**k] if channels_first else img[:: 2**k, :: 2**k] for k in range(n)]


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from napari_pathm3.config import PathM3Config
    from napari_pathm3.model import build_model

    cfg = PathM3Config.tiny(feature_dim=94, encoder_name=ENCODER, class_names=("tumour", "normal"))
    return build_model(cfg).eval().save_pretrained(tmp_path_factory.mktemp("ckpt") / "tiny")


# ------------------------------------------------------------------------------------------ store ownership


def test_extract_into_existing_folder_removes_nothing(synthetic_slide: Path, tmp_path: Path) -> None:
    """Reported: ``api.extract_features(slide, store=<feature-store root>)`` deleted the whole folder."""
    root = tmp_path / "features"
    store = FeatureStore(root)
    api.extract_features(synthetic_slide, encoder=ENCODER, store=store.path_for("first"))
    (root / "notes.txt").write_text("mine")
    before = _tree(root)
    with pytest.raises(FeatureStoreError, match="nothing was changed or removed.*path_for"):
        api.extract_features(synthetic_slide, encoder=ENCODER, store=root)
    assert _tree(root) == before
    assert store.keys() == ["first"]


def test_stale_store_of_our_own_is_recomputed_and_logged(
    synthetic_slide: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from napari_pathm3.config import TilingConfig

    path = tmp_path / "s.zarr"
    api.extract_features(synthetic_slide, encoder=ENCODER, store=path)
    with caplog.at_level(logging.WARNING, logger="napari_pathm3.io.feature_store"):
        bag = api.extract_features(
            synthetic_slide, encoder=ENCODER, store=path, tiling=TilingConfig(patch_size=448)
        )
    assert "recomputing features in this napari-pathm3 store" in caplog.text
    assert read_bag(path).meta.patch_size == 448 == bag.patch_size


# ------------------------------------------------------------------------------------------ grid sanity


@pytest.fixture(scope="module")
def bogus_mpp_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Reported: 300×250 px, 4 levels, 352.9 µm/px -> 367,097 patches of 1 px, hours of extraction."""
    img = np.full((250, 300, 3), 230, np.uint8)
    img[60:180, 80:220] = (200, 110, 170)
    return _write_tiff(
        tmp_path_factory.mktemp("bogus") / "bogus.tif", _pyramid(img, 4), mpp=352.9, photometric="rgb"
    )


def _no_tissue_detection(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*a, **k):
        raise AssertionError("tissue detection ran before the grid checks")

    # import inference first: imported while tiling.detect_tissue is patched, it would bind `fail` for good
    # (its `from .tiling import detect_tissue`), and the undo would "restore" fail
    import napari_pathm3.inference.stages  # noqa: F401

    for mod in ("napari_pathm3.tiling", "napari_pathm3.inference.stages"):
        monkeypatch.setattr(f"{mod}.detect_tissue", fail)


def test_absurd_mpp_stops_at_once(
    bogus_mpp_slide: Path, tiny_ckpt: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_tissue_detection(monkeypatch)
    with api.open_slide(bogus_mpp_slide) as slide:
        assert slide.mpp == pytest.approx(352.9) and slide.dimensions == (300, 250)
        with pytest.raises(GridError, match=r"352\.9 µm/px.*--mpp"):
            api.extract_features(slide, encoder=ENCODER)
        with pytest.raises(GridError, match=r"352\.9 µm/px"):
            api.caption_slide(slide, model=tiny_ckpt, device="cpu")


def test_patch_count_limit_names_the_override(synthetic_slide: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from napari_pathm3.config import TilingConfig
    from napari_pathm3.tiling import make_grid

    _no_tissue_detection(monkeypatch)
    with api.open_slide(synthetic_slide) as slide:
        with pytest.raises(GridError, match="max_patches=N.*NAPARI_PATHM3_MAX_PATCHES"):
            make_grid(slide, TilingConfig(), max_patches=10)
        monkeypatch.setenv("NAPARI_PATHM3_MAX_PATCHES", "5")
        with pytest.raises(GridError, match="limit of 5"):
            api.extract_features(slide, encoder=ENCODER)


def test_missing_mpp_is_instant(tmp_path: Path, tiny_ckpt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    img = np.full((256, 256, 3), 230, np.uint8)
    path = _write_tiff(tmp_path / "nompp.tif", _pyramid(img, 2), mpp=None, photometric="rgb")
    _no_tissue_detection(monkeypatch)
    with pytest.warns(UserWarning, match="microns-per-pixel"), api.open_slide(path) as slide:
        with pytest.raises(MissingMppError, match="--mpp"):
            api.caption_slide(slide, model=tiny_ckpt, device="cpu")
        with pytest.raises(MissingMppError):
            api.extract_features(slide, encoder=ENCODER)


# ------------------------------------------------------------------------------------------ concurrency


def _extract_job(args: tuple[str, str]) -> tuple[int, str]:
    slide, store = args
    try:
        bag = api.extract_features(slide, encoder=ENCODER, store=store, device="cpu")
        return len(bag), ""
    except Exception as err:  # reported to the parent, which fails the test with the message
        return -1, f"{type(err).__name__}: {err}"


def test_one_cache_shared_by_8_threads_and_4_processes(synthetic_slide: Path, tmp_path: Path) -> None:
    """Reported: 4 processes sharing --cache-dir: 4 of 20 died; 8 threads: 68 of 80 failed, a store damaged."""
    from napari_pathm3.features.cache import cached_features
    from napari_pathm3.features.encoders import cached_encoder
    from napari_pathm3.tiling import detect_tissue, make_grid

    cache = tmp_path / "cache"
    enc = cached_encoder(ENCODER, "cpu")
    errors: list[str] = []
    results: list[np.ndarray] = []
    with api.open_slide(synthetic_slide) as slide:
        grid = make_grid(slide, tissue=detect_tissue(slide))
        grids = [grid, grid.subset(np.arange(len(grid)) % 2 == 0)]  # two keys, four threads each

        def work(k: int) -> None:
            try:
                results.append(cached_features(slide, grids[k % 2], enc, cache_dir=cache, device="cpu"))
            except Exception as err:
                errors.append(f"{type(err).__name__}: {err}")

        threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == [] and len(results) == 8
        again = cached_features(slide, grid, enc, cache_dir=cache, device="cpu")
    np.testing.assert_array_equal(again, next(r for r in results if len(r) == len(grid)))
    assert len(list(cache.glob("*.zarr"))) == 2

    store = tmp_path / "shared.zarr"
    # forkserver: children fork from a clean, single-threaded server (no inherited locks or OpenMP teams)
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["napari_pathm3.api", "napari_pathm3.features.extract", "torch", "zarr"])
    with ctx.Pool(4) as pool:
        out = pool.map(_extract_job, [(str(synthetic_slide), str(store))] * 4)
    assert [msg for _, msg in out] == [""] * 4 and {n for n, _ in out} == {len(grid)}
    np.testing.assert_array_equal(read_bag(store).features, again)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary leftovers


# ------------------------------------------------------------------------------------------ integrity

N, D, ROWS = 10, 6, 4
COORDS = np.stack([np.arange(N) * 224, np.zeros(N)], axis=1).astype(np.int64)
FEATS = np.random.default_rng(0).normal(size=(N, D)).astype(np.float32)
META = bag_meta(
    slide_id="s", fingerprint="fp", encoder={"name": "e", "dim": D}, grid={"patch_size": 224}, coords=COORDS
)


def _fill(path: Path) -> BagWriter:
    w = BagWriter.open(path, meta=META, coords=COORDS, dim=D, chunk_rows=ROWS)
    while w.done < N:
        w.write(w.done, FEATS[w.done : min(w.done + ROWS, N)])
    w.finish()
    return w


def _garbage(p: Path) -> None:
    p.write_bytes(np.random.default_rng(1).bytes(p.stat().st_size))


def _flip(p: Path) -> None:
    b = bytearray(p.read_bytes())
    b[len(b) // 2] ^= 0x01
    p.write_bytes(bytes(b))


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


@pytest.mark.parametrize(
    "damage", [_garbage, _flip, Path.unlink, _truncate], ids=["garbage", "flip", "deleted", "truncated"]
)
def test_damaged_chunk_is_reported_and_recomputed(
    tmp_path: Path, damage, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "d.zarr"
    _fill(path)
    damage(path / "features" / "c" / "1" / "0")  # the second chunk: patches 4-7
    with pytest.raises(FeatureStoreError, match="damaged feature store.*chunk 1"):
        read_bag(path)
    assert inspect_bag(path, META)[0] == "damaged"
    with caplog.at_level(logging.WARNING):
        w = BagWriter.open(path, meta=META, coords=COORDS, dim=D, chunk_rows=ROWS)
    assert "damaged" in caplog.text and w.done == ROWS and not w.complete  # resumes from the bad chunk
    while w.done < N:
        w.write(w.done, FEATS[w.done : min(w.done + ROWS, N)])
    w.finish()
    np.testing.assert_array_equal(read_bag(path).features, FEATS)


def test_rerun_of_extraction_repairs_a_damaged_store(synthetic_slide: Path, tmp_path: Path) -> None:
    path = tmp_path / "e.zarr"
    good = api.extract_features(synthetic_slide, encoder=ENCODER, store=path).features
    _flip(path / "features" / "c" / "0" / "0")
    with pytest.raises(FeatureStoreError, match="damaged"):
        read_bag(path)
    np.testing.assert_array_equal(
        api.extract_features(synthetic_slide, encoder=ENCODER, store=path).features, good
    )
    np.testing.assert_array_equal(read_bag(path).features, good)


# ------------------------------------------------------------------------------------------ finite numbers


def test_non_finite_features_are_rejected_with_the_bag_named(tmp_path: Path) -> None:
    from napari_pathm3.training.data import load_features

    bad = FEATS.copy()
    bad[3, 2] = np.nan
    np.save(tmp_path / "nan_bag.npy", bad)
    with pytest.raises(FeatureStoreError, match=r"nan_bag\.npy.*non-finite.*patch 3"):
        load_features(tmp_path / "nan_bag.npy")
    w = BagWriter.open(tmp_path / "w.zarr", meta=META, coords=COORDS, dim=D, chunk_rows=ROWS)
    with pytest.raises(FeatureStoreError, match="non-finite"):
        w.write(0, np.full((ROWS, D), np.inf, np.float32))
    assert BagWriter.open(tmp_path / "w.zarr", meta=META, coords=COORDS, dim=D, chunk_rows=ROWS).done == 0


def test_training_stops_at_first_non_finite_loss_and_saves_nothing(tmp_path: Path) -> None:
    from napari_pathm3.config import PathM3Config, TrainConfig
    from napari_pathm3.training.data import SlideBag
    from napari_pathm3.training.loop import train

    rng = np.random.default_rng(0)
    bags = [SlideBag(rng.normal(size=(5, 8)).astype(np.float32), i % 2, None, f"b{i}") for i in range(4)]
    bags[1] = SlideBag(np.full((5, 8), np.nan, np.float32), 1, None, "nan-bag")
    cfg = PathM3Config.tiny(feature_dim=8, class_names=("a", "b"))
    with pytest.raises(NonFiniteError, match="loss is nan.*nan-bag"):
        train(
            cfg,
            bags,
            None,
            TrainConfig(epochs=2, batch_size=1, device="cpu", mode="image", alpha=1.0),
            out_dir=tmp_path / "run",
        )
    assert not (tmp_path / "run" / "best").exists() and not (tmp_path / "run" / "last").exists()


def test_non_finite_checkpoint_is_refused_on_save_and_load(tiny_ckpt: Path, tmp_path: Path) -> None:
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    from napari_pathm3.model import PathM3Model

    model = PathM3Model.from_pretrained(tiny_ckpt)
    name, param = next(iter(model.named_parameters()))
    with torch.no_grad():
        param.view(-1)[0] = float("nan")
    with pytest.raises(CheckpointError, match="NaN/Inf"):
        model.save_pretrained(tmp_path / "nan")
    assert not (tmp_path / "nan").exists()

    damaged = tmp_path / "damaged"
    shutil.copytree(tiny_ckpt, damaged)
    from safetensors import safe_open

    with safe_open(str(damaged / "model.safetensors"), "pt") as f:
        meta = f.metadata()
    tensors = load_file(damaged / "model.safetensors")
    key = next(k for k, t in tensors.items() if t.is_floating_point())
    tensors[key].view(-1)[0] = float("inf")
    save_file(tensors, damaged / "model.safetensors", metadata=meta)
    with pytest.raises(CheckpointError, match=f"NaN/Inf.*{key}"):
        api.load_model(damaged, device="cpu")


def test_result_json_is_always_valid_json(tmp_path: Path) -> None:
    from napari_pathm3.jsonfile import json_text, write_json_atomic

    with pytest.raises(NonFiniteError, match=r"'probabilities'\['b'\] = nan"):
        write_json_atomic(tmp_path / "r.json", {"label": "a", "probabilities": {"a": 0.5, "b": float("nan")}})
    assert not (tmp_path / "r.json").exists()
    assert json.loads(json_text({"p": [0.5, 1.0]})) == {"p": [0.5, 1.0]}


# ------------------------------------------------------------------------------------------ non-RGB slides

RNG = np.random.default_rng(3)
IMAGES = {
    "rgb": (RNG.integers(0, 255, (96, 128, 3), dtype=np.uint8), "rgb", {}, (96, 128, 3), np.uint8),
    "rgba": (
        RNG.integers(0, 255, (96, 128, 4), dtype=np.uint8),
        "rgb",
        {"extrasamples": ["unassalpha"]},
        (96, 128, 3),
        np.uint8,
    ),
    "grey16": (RNG.integers(100, 4000, (96, 128), dtype=np.uint16), "minisblack", {}, (96, 128), np.uint16),
    "fluorescence": (
        RNG.integers(0, 3000, (5, 96, 128), dtype=np.uint16),
        "minisblack",
        {"planarconfig": "separate"},
        (96, 128, 5),
        np.uint16,
    ),
}


@pytest.fixture(scope="module", params=list(IMAGES))
def odd_slide(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    img, photometric, kw, _, _ = IMAGES[request.param]
    levels = _pyramid(img, 3, channels_first=request.param == "fluorescence")
    path = tmp_path_factory.mktemp("odd") / f"{request.param}.tif"
    return request.param, _write_tiff(path, levels, mpp=0.5, photometric=photometric, **kw)


def test_every_level_declares_what_it_reads(odd_slide: tuple[str, Path]) -> None:
    from napari_pathm3.io.pyramid import multiscale

    kind, path = odd_slide
    img, _, _, shape0, dtype = IMAGES[kind]
    with api.open_slide(path) as slide:
        assert slide.is_rgb == (kind in ("rgb", "rgba"))
        levels = multiscale(slide)
        assert levels[0].shape == shape0 and levels[0].dtype == dtype
        for lv in levels:
            got = lv.compute()
            assert (got.shape, got.dtype) == (lv.shape, lv.dtype)
            for block in (lv.blocks[(0,) * lv.ndim].compute(), lv[3:20, 5:40].compute()):
                assert block.dtype == lv.dtype and block.ndim == lv.ndim
        if kind == "grey16":
            np.testing.assert_array_equal(levels[0].compute(), img)
        if kind == "fluorescence":
            np.testing.assert_array_equal(levels[0].compute(), np.moveaxis(img, 0, -1))


def test_napari_opens_them_as_what_they_are(odd_slide: tuple[str, Path]) -> None:
    """Through napari's own open path (the npe2 reader contribution, ``channel_axis`` splitting), headless."""
    from napari.components import ViewerModel
    from npe2 import PluginManager

    PluginManager.instance().discover()
    kind, path = odd_slide
    _, _, _, shape0, dtype = IMAGES[kind]
    layers = ViewerModel().open(str(path), plugin="napari-pathm3")
    assert len(layers) == (5 if kind == "fluorescence" else 1)
    for layer in layers:
        level0 = layer.data[0] if layer.multiscale else layer.data
        assert layer.rgb == (kind in ("rgb", "rgba")) and level0.dtype == dtype
        assert level0.shape == (shape0 if layer.rgb else shape0[:2])
        lo, hi = layer.contrast_limits
        if kind in ("grey16", "fluorescence"):  # from the data, not the dtype's 0-65535 (which looks black)
            assert 0 <= lo < hi <= 4000


def test_captioning_a_non_rgb_slide_says_so_in_one_line(
    odd_slide: tuple[str, Path], tiny_ckpt: Path, capsys: pytest.CaptureFixture
) -> None:
    kind, path = odd_slide
    if kind in ("rgb", "rgba"):
        pytest.skip("brightfield slides are captioned")
    with pytest.raises(NotBrightfieldError, match="PathM3 needs brightfield RGB"):
        api.caption_slide(path, model=tiny_ckpt, device="cpu")
    assert cli.main(["caption", str(path), "--model", str(tiny_ckpt), "--no-cache", "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert "PathM3 needs brightfield RGB" in err and "\n" not in err


# ------------------------------------------------------------------------------------------ napari reader


def test_napari_reader_says_why_it_refuses(tmp_path: Path) -> None:
    """napari itself says only "refused the file"; the reader's warning (a notification in napari) says why."""
    from napari.components import ViewerModel
    from npe2 import PluginManager

    from napari_pathm3._napari.reader import napari_get_reader

    broken = tmp_path / "broken.svs"
    broken.write_bytes(b"II*\x00" + b"\x00" * 64)
    with pytest.warns(UserWarning, match="napari-pathm3 cannot open broken.svs: .*cannot open"):
        assert napari_get_reader(str(broken)) is None
    PluginManager.instance().discover()
    with pytest.warns(UserWarning, match="cannot open broken.svs: .*unsupported format"):
        with pytest.raises(ValueError, match="refused the file"):
            ViewerModel().open(str(broken), plugin="napari-pathm3")


# ------------------------------------------------------------------------------------------ CLI


def _one_line(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    return err


def test_cli_disk_full_on_out(
    synthetic_slide: Path, tiny_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch
) -> None:
    import napari_pathm3.jsonfile as gj

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out.json"))

    monkeypatch.setattr(gj.tempfile, "mkstemp", full)
    argv = [
        "caption",
        str(synthetic_slide),
        "--model",
        str(tiny_ckpt),
        "--out",
        str(tmp_path / "out.json"),
        "--no-cache",
        "--quiet",
        "--device",
        "cpu",
    ]
    assert cli.main(argv) == 1
    assert "No space left on device (the disk is full" in _one_line(capsys)
    assert cli.main(["-v", *argv]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_cli_bad_config_one_class_and_unreadable_input(
    synthetic_slide: Path, tiny_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import shutil

    bad = tmp_path / "bad_ckpt"
    shutil.copytree(tiny_ckpt, bad)
    (bad / "config.json").write_text("[1, 2, 3]")
    assert cli.main(["caption", str(synthetic_slide), "--model", str(bad), "--no-cache", "--quiet"]) == 1
    assert "JSON list" in _one_line(capsys)

    feats = tmp_path / "feats"
    feats.mkdir()
    for i in range(4):
        np.save(feats / f"s{i}.npy", np.ones((3, 8), np.float32))
    manifest = tmp_path / "one.csv"
    manifest.write_text("slide,label\n" + "".join(f"s{i},A\n" for i in range(4)))
    argv = [
        "train",
        "--manifest",
        str(manifest),
        "--features",
        str(feats),
        "--out",
        str(tmp_path / "run"),
        "--tiny",
    ]
    assert cli.main(argv) == 1
    assert "at least two" in _one_line(capsys)

    assert cli.main(["info", str(tmp_path / "missing.svs")]) == 1
    assert "no such file" in _one_line(capsys)


def test_concurrent_checkpoint_writers_never_fail(tiny_ckpt: Path, tmp_path: Path) -> None:
    """Reported: concurrent demo-model writers died with "[Errno 39] Directory not empty"."""
    from napari_pathm3.model import PathM3Model

    model = PathM3Model.from_pretrained(tiny_ckpt)
    errors: list[str] = []

    def save() -> None:
        try:
            model.save_pretrained(tmp_path / "ckpt")
        except Exception as err:
            errors.append(f"{type(err).__name__}: {err}")

    threads = [threading.Thread(target=save) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    api.load_model(tmp_path / "ckpt", device="cpu")
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_saving_a_checkpoint_over_a_foreign_folder_removes_nothing(tiny_ckpt: Path, tmp_path: Path) -> None:
    from napari_pathm3.model import PathM3Model

    mine = tmp_path / "documents"
    mine.mkdir()
    (mine / "thesis.txt").write_text("years of work")
    model = PathM3Model.from_pretrained(tiny_ckpt)
    with pytest.raises(
        CheckpointError, match="not a napari-pathm3 checkpoint; nothing was changed or removed"
    ):
        model.save_pretrained(mine)
    assert [p.name for p in mine.iterdir()] == ["thesis.txt"]
    model.save_pretrained(tiny_ckpt.parent / "again")  # a new folder, then over our own checkpoint: fine
    model.save_pretrained(tiny_ckpt.parent / "again")
