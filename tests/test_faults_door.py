"""Validation at the door (issue 23): one case per failure of the fault and bad-input probe, numbered as in
the issue. Each failed on main before the schemas (checked with ``PYTHONPATH=/work/main/src``) and must pass.

Also the CLI hygiene of issue 27 (what to build, item 9): one-line warnings, ``--device`` checked the same way
on every command, examples in every ``--help``, ``--list-encoders`` on caption and train.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from napari_pathm3 import api, cli
from napari_pathm3.errors import (
    CheckpointError,
    DeviceError,
    FeatureStoreError,
    GridError,
    ManifestError,
    OptionError,
    PathM3Error,
)

ENCODER = "builtin:colorstats"
DIM = 94  # builtin:colorstats


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from napari_pathm3.config import PathM3Config
    from napari_pathm3.model import build_model

    cfg = PathM3Config.tiny(feature_dim=DIM, encoder_name=ENCODER, class_names=("tumour", "normal"))
    return build_model(cfg).eval().save_pretrained(tmp_path_factory.mktemp("ckpt") / "tiny")


def _one_line(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip()
    assert err and err.count("\n") == 0 and "Traceback" not in err, err
    return err


def _exit(argv: list[str]) -> int:
    """``cli.main`` in this process: argparse's exit status (2) or the command's."""
    try:
        return cli.main(argv)
    except SystemExit as err:
        return int(err.code or 0)


# ------------------------------------------------------------------------------- 1. training on nothing


@pytest.fixture
def bags(tmp_path: Path) -> Path:
    feats = tmp_path / "feats"
    feats.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        np.save(feats / f"s{i}.npy", rng.normal(size=(5, 8)).astype(np.float32))
    return feats


def _train(tmp_path: Path, feats: Path, rows: list[str], *extra: str) -> list[str]:
    (tmp_path / "m.csv").write_text("slide,label,split\n" + "\n".join(rows) + "\n")
    return [
        "train",
        "--manifest",
        str(tmp_path / "m.csv"),
        "--features",
        str(feats),
        "--out",
        str(tmp_path / "run"),
        "--tiny",
        "--epochs",
        "1",
        "--device",
        "cpu",
        *extra,
    ]


def test_1_training_on_no_training_bags_fails_and_writes_nothing(tmp_path, bags, capsys) -> None:
    rows = [f"s{i},{'ab'[i % 2]},test" for i in range(6)]
    assert cli.main(_train(tmp_path, bags, rows)) == 1
    assert "no training bags" in _one_line(capsys)
    assert not (tmp_path / "run" / "best").exists()


def test_1_training_api_on_an_empty_set_fails(tmp_path) -> None:
    from napari_pathm3.config import PathM3Config, TrainConfig
    from napari_pathm3.training.loop import train

    with pytest.raises(ManifestError, match="no training bags"):
        train(PathM3Config.tiny(feature_dim=8), [], None, TrainConfig(epochs=1), out_dir=tmp_path / "r")
    assert not (tmp_path / "r" / "best").exists()


def test_1_a_class_without_training_bags_fails(tmp_path, bags, capsys) -> None:
    rows = ["s0,a,train", "s1,a,train", "s2,b,val", "s3,b,test"]
    assert cli.main(_train(tmp_path, bags, rows)) == 1
    assert "no training bag of class(es) ['b']" in _one_line(capsys)


def test_1_unknown_split_is_named(tmp_path, bags, capsys) -> None:
    rows = ["s0,a,train", "s1,b,banana", "s2,a,train", "s3,b,train"]
    assert cli.main(_train(tmp_path, bags, rows)) == 1
    err = _one_line(capsys)
    assert "m.csv: row 3: split = 'banana'" in err and "train, val, test" in err


def test_1_duplicate_ids_are_refused(tmp_path, bags, capsys) -> None:
    rows = ["s0,a,train", "s1,b,train", "s0,a,val", "s3,b,train"]
    assert cli.main(_train(tmp_path, bags, rows)) == 1
    assert "id 's0' again (first on row 2)" in _one_line(capsys)


@pytest.mark.parametrize("key", ["ABSOLUTE", "../outside", "../../etc/passwd", "sub/s0"])
def test_1_ids_are_names_resolved_inside_features_only(tmp_path, bags, capsys, key) -> None:
    outside = tmp_path / "outside.npy"
    np.save(outside, np.ones((5, 8), np.float32))
    key = str(tmp_path / "outside.npy") if key == "ABSOLUTE" else key
    rows = [f"{key},a,train", "s1,b,train", "s2,a,train", "s3,b,train"]
    assert cli.main(_train(tmp_path, bags, rows)) == 1
    assert "is a path, not a name" in _one_line(capsys)

    from napari_pathm3.training.data import resolve_features

    with pytest.raises(ManifestError, match="not a name"):
        resolve_features(key, bags)


# ------------------------------------------------------------------------------- 2. hand-edited configs


def _edited(src: Path, dst: Path, edit) -> Path:
    shutil.copytree(src, dst)
    data = json.loads((dst / "config.json").read_text())
    edit(data)
    (dst / "config.json").write_text(json.dumps(data))
    return dst


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("qformer.num_attention_heads", 0, r"qformer\.num_attention_heads = 0: must be >= 1"),
        ("feature_dim", 94.5, r"feature_dim = 94\.5: Input should be a valid integer"),
        ("qformer", [1, 2], r"qformer = \[1, 2\]: Input should be an object"),
        ("class_names", "ab", r"class_names = 'ab': Input should be a valid array"),
        ("class_names", [1, None], r"class_names\.0 = 1: Input should be a valid string"),
        ("class_names", ["a", "a"], r"class_names = \['a', 'a'\]: must be unique"),
        ("class_names", ["a", " "], r"class_names.*non-empty strings"),
        ("correlation.num_heads", 5, r"correlation\.num_heads = 5: must be >= 1 and divide hidden_size"),
        ("alpha", "NaN", r"alpha = 'NaN'"),
        ("surprise", 1, r"surprise = 1: unknown key"),
    ],
)
def test_2_config_json_errors_name_file_key_and_value(tiny_ckpt, tmp_path, key, value, match) -> None:
    from napari_pathm3.model import PathM3Model

    def edit(data: dict) -> None:
        *parents, leaf = key.split(".")
        for p in parents:
            data = data[p]
        data[leaf] = value

    ckpt = _edited(tiny_ckpt, tmp_path / "edited", edit)
    with pytest.raises(CheckpointError, match=match) as exc:
        PathM3Model.from_pretrained(ckpt)
    text = str(exc.value)
    assert str(ckpt / "config.json") in text and "\n" not in text and "re-save" in text


def test_2_config_sizes_that_do_not_fit_the_weights_fail_before_allocating(tiny_ckpt, tmp_path) -> None:
    from napari_pathm3.model import PathM3Model

    ckpt = _edited(tiny_ckpt, tmp_path / "huge", lambda d: d["qformer"].update(hidden_size=16384))
    with pytest.raises(CheckpointError, match=r"weights do not match.*query_tokens: checkpoint \(1, 4, 32\)"):
        PathM3Model.from_pretrained(ckpt)  # built on the meta device: no 16384-wide model is allocated


@pytest.mark.parametrize("content", ["garbage", '{"model": {}}', "[]"])
def test_2_garbage_tokenizer_is_a_checkpoint_error(tiny_ckpt, tmp_path, content) -> None:
    from napari_pathm3.model import PathM3Model

    ckpt = tmp_path / "tok"
    shutil.copytree(tiny_ckpt, ckpt)
    (ckpt / "qformer_tokenizer" / "tokenizer.json").write_text(content)
    with pytest.raises(CheckpointError, match="tokenizer"):
        PathM3Model.from_pretrained(ckpt)


def test_2_tokenizer_config_with_wrong_types_is_named(tiny_ckpt, tmp_path) -> None:
    from napari_pathm3.model import PathM3Model

    ckpt = tmp_path / "tokcfg"
    shutil.copytree(tiny_ckpt, ckpt)
    cfg_file = ckpt / "lm_tokenizer" / "tokenizer_config.json"
    data = json.loads(cfg_file.read_text())
    data["pad_token"] = 5
    cfg_file.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=r"tokenizer_config\.json: pad_token"):
        PathM3Model.from_pretrained(ckpt)


def test_2_wrong_class_names_never_caption(tiny_ckpt, tmp_path, capsys) -> None:
    """Reported: ``class_names: "ab"`` captioned with classes a/b, ``[1, null]`` returned label None, exit 0."""
    bag = tmp_path / "bag.npy"
    np.save(bag, np.random.default_rng(0).normal(size=(6, DIM)).astype(np.float32))
    for i, value in enumerate(("ab", [1, None])):
        ckpt = _edited(tiny_ckpt, tmp_path / f"c{i}", lambda d, v=value: d.update(class_names=v))
        assert cli.main(["caption", str(bag), "--model", str(ckpt), "--device", "cpu", "--quiet"]) == 1
        assert "class_names" in _one_line(capsys)


# ------------------------------------------------------------------------------- 3. odd inputs


def _h5(path: Path, features: np.ndarray, coords: np.ndarray | None = None) -> Path:
    import h5py

    with h5py.File(path, "w") as fh:
        fh["features"] = features
        if coords is not None:
            fh["coords"] = coords
    return path


def test_3_complex_features_are_refused(tiny_ckpt, tmp_path, capsys) -> None:
    feats = np.random.default_rng(0).normal(size=(6, DIM)) * (1 + 1j)
    bag = _h5(tmp_path / "complex.h5", feats)
    assert cli.main(["caption", str(bag), "--model", str(tiny_ckpt), "--device", "cpu", "--quiet"]) == 1
    assert "real floating-point" in _one_line(capsys)
    for dtype in (np.int64, np.bool_):
        with pytest.raises(FeatureStoreError, match="real floating-point"):
            api_read(_h5(tmp_path / f"{np.dtype(dtype).name}.h5", np.ones((3, DIM), dtype)))


def api_read(path: Path):
    from napari_pathm3.io.interop import read_feature_file

    return read_feature_file(path)


@pytest.mark.parametrize("bad", [np.nan, np.inf, 1e300])
def test_3_non_finite_or_absurd_coords_are_refused(tiny_ckpt, tmp_path, capsys, bad) -> None:
    coords = np.arange(12, dtype=np.float64).reshape(6, 2) * 224
    coords[2, 1] = bad
    bag = _h5(tmp_path / "coords.h5", np.ones((6, DIM), np.float32), coords)
    assert cli.main(["caption", str(bag), "--model", str(tiny_ckpt), "--device", "cpu", "--quiet"]) == 1
    err = _one_line(capsys)
    assert "coords.h5" in err and ("NaN/Inf" in err or "beyond any slide" in err)


@pytest.mark.parametrize(
    ("polygon", "match"),
    [
        ([[100, 100], [np.nan, 300], [300, 300]], r"vertex 1 is \[nan, 300.0\]"),
        ([[100, 100], [np.inf, 300], [300, 300]], r"vertex 1 is \[inf, 300.0\]"),
        ([[0, 0], [1e300, 0], [1e300, 1e300]], "not on the slide"),
        (np.arange(12.0).reshape(4, 3), r"polygons must be \(k, 2\).*\(4, 3\)"),
        ([[1, 1], [2, 2]], r"polygons must be \(k, 2\).*k >= 3"),
        ([[-5000, -5000], [-4000, -5000], [-4000, -4000]], "not on the slide"),
    ],
)
def test_3_regions_must_be_finite_k2_polygons_on_the_slide(
    synthetic_slide, tiny_ckpt, polygon, match
) -> None:
    from napari_pathm3.errors import RegionError

    with api.open_slide(synthetic_slide) as slide, pytest.raises(RegionError, match=match):
        api.caption_slide(slide, model=tiny_ckpt, device="cpu", region=[np.asarray(polygon, np.float64)])


def test_3_training_regions_refuse_nan_vertices() -> None:
    from napari_pathm3.training.regions import Region

    with pytest.raises(ValueError, match="NaN/Inf"):  # RegionError is a ValueError too
        Region(label="a", polygon=[[0, 0], [np.nan, 1], [1, 1]])
    with pytest.raises(PathM3Error, match=r"\(k, 2\)"):
        Region(label="a", polygon=np.zeros((4, 3)))


# ------------------------------------------------------------------------------- 4. stores that heal


def _extract(slide: Path, store: Path) -> None:
    api.extract_features(slide, encoder=ENCODER, store=store)


def _group_json(store: Path) -> dict:
    return json.loads((store / "zarr.json").read_text())


def test_4_hand_edited_attributes_are_not_served_and_heal_on_reextract(synthetic_slide, tmp_path) -> None:
    from napari_pathm3.io.feature_store import read_bag

    store = tmp_path / "s.zarr"
    _extract(synthetic_slide, store)
    good = read_bag(store).features.copy()
    meta = _group_json(store)
    meta["attributes"]["chunk_rows"] = "many"
    meta["attributes"]["done"] = "all"
    (store / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(FeatureStoreError, match="damaged feature store metadata.*run extraction again"):
        read_bag(store)
    _extract(synthetic_slide, store)  # no deleting by hand
    assert np.array_equal(read_bag(store).features, good)


def test_4_truncated_group_json_heals_on_reextract(synthetic_slide, tmp_path) -> None:
    from napari_pathm3.io.feature_store import read_bag

    store = tmp_path / "s.zarr"
    _extract(synthetic_slide, store)
    good = read_bag(store).features.copy()
    raw = (store / "zarr.json").read_bytes()
    (store / "zarr.json").write_bytes(raw[: len(raw) // 3])
    with pytest.raises(FeatureStoreError, match="zarr.json is unreadable"):
        read_bag(store)
    _extract(synthetic_slide, store)
    assert np.array_equal(read_bag(store).features, good)


def test_4_a_foreign_folder_with_a_truncated_json_is_still_never_touched(synthetic_slide, tmp_path) -> None:
    """Healing needs proof of ownership: a folder without our marker stays untouched, whatever its state."""
    store = tmp_path / "theirs.zarr"
    (store / "features").mkdir(parents=True)
    (store / "coords").mkdir()
    (store / "zarr.json").write_text('{"node_type": "gro')
    before = sorted(p.name for p in store.rglob("*"))
    with pytest.raises(FeatureStoreError, match="not a napari-pathm3 feature store"):
        _extract(synthetic_slide, store)
    assert sorted(p.name for p in store.rglob("*")) == before


def test_4_complete_store_in_a_read_only_folder_is_reused_without_a_lock(
    synthetic_slide, tmp_path, monkeypatch, capsys
) -> None:
    """CI runs as root, which ignores file permissions: chmod alone would not make the folder read-only for
    the test. So the folder is chmod'ed (effective for ordinary users) *and* every attempt to take the write
    lock fails, as it does on a read-only share; the re-run must succeed and create no lock file."""
    import napari_pathm3.io.feature_store.writer as fs  # the module that takes the store's lock

    root = tmp_path / "shared"
    _extract(synthetic_slide, root / "blobs.zarr")
    for lock in root.glob("*.lock"):
        lock.unlink()

    def no_lock(path, **kw):
        raise PermissionError(13, "Read-only file system", str(path) + ".lock")

    monkeypatch.setattr(fs, "path_lock", no_lock)
    root.chmod(0o555)
    try:
        bag = api.extract_features(synthetic_slide, encoder=ENCODER, store=root / "blobs.zarr")
        assert len(bag) > 0
        rc = cli.main(
            ["extract", str(synthetic_slide), "--out", str(root), "--device", "cpu", "--no-progress"]
        )
        assert rc == 0, capsys.readouterr().err
        assert not list(root.glob("*.lock"))
    finally:
        root.chmod(0o755)


# ------------------------------------------------------------------------------- 5. options checked at parse


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["info", "S", "--mpp", "1e308"], "--mpp"),
        (["info", "S", "--mpp", "-1"], "--mpp"),
        (["info", "S", "--mpp", "0"], "--mpp"),
        (["info", "S", "--mpp", "nan"], "--mpp"),
        (["caption", "S", "--model", "demo", "--mpp", "inf"], "--mpp"),
        (["extract", "S", "--out", "O", "--mpp", "1e308"], "--mpp"),
        (["info", "S", "--threads", "99999999999999999999"], "--threads"),
        (["extract", "S", "--out", "O", "--workers", "100000"], "--workers"),
        (["extract", "S", "--out", "O", "--batch-size", "0"], "--batch-size"),
        (["extract", "S", "--out", "O", "--batch-size", "-1"], "--batch-size"),
        (["extract", "S", "--out", "O", "--batch-size", "10000000000"], "--batch-size"),
        (["extract", "S", "--out", "O", "--num-workers", "-1"], "--num-workers"),
        (
            ["train", "--manifest", "M", "--features", "F", "--out", "O", "--val-fraction", "-1"],
            "--val-fraction",
        ),
        (
            ["train", "--manifest", "M", "--features", "F", "--out", "O", "--val-fraction", "nan"],
            "--val-fraction",
        ),
        (["evaluate", "C", "--manifest", "M", "--features", "F", "--num-beams", "-1"], "--num-beams"),
        (["evaluate", "C", "--manifest", "M", "--features", "F", "--num-beams", "1000000"], "--num-beams"),
        (["evaluate", "C", "--manifest", "M", "--features", "F", "--batch-size", "1000000"], "--batch-size"),
        (["caption", "S", "--model", "demo", "--top-k", "0"], "--top-k"),
        (["demo", "--epochs", "-3"], "--epochs"),
    ],
)
def test_5_bad_numbers_are_argument_errors_naming_the_option(argv, option, capsys) -> None:
    assert _exit(argv) == 2
    err = _one_line(capsys)
    assert f"argument {option}" in err and "must be" in err and "--help" in err


@pytest.mark.parametrize("value", ["-5", "0", "1e3", "abc", "99999999999999999999"])
def test_5_max_patches_env_var_is_range_checked(synthetic_slide, monkeypatch, value) -> None:
    from napari_pathm3.config import TilingConfig
    from napari_pathm3.tiling import make_grid

    monkeypatch.setenv("NAPARI_PATHM3_MAX_PATCHES", value)
    with (
        api.open_slide(synthetic_slide) as slide,
        pytest.raises(GridError, match="NAPARI_PATHM3_MAX_PATCHES must be"),
    ):
        make_grid(slide, TilingConfig())


@pytest.mark.parametrize("value", ["-2", "99999999999999999999", "1e9", "two"])
def test_5_threads_env_var_is_range_checked(monkeypatch, value) -> None:
    from napari_pathm3.threads import resolve_threads

    monkeypatch.setenv("NAPARI_PATHM3_THREADS", value)
    with pytest.raises(
        OptionError, match=r"NAPARI_PATHM3_THREADS: threads must be an integer in \[1, 1024\]"
    ):
        resolve_threads()


# ------------------------------------------------------------------------------- 6. smaller


def test_6_caption_out_that_is_a_folder_names_the_option(
    synthetic_slide, tiny_ckpt, tmp_path, capsys
) -> None:
    argv = ["caption", str(synthetic_slide), "--model", str(tiny_ckpt), "--out", str(tmp_path), "--quiet"]
    assert cli.main(argv) == 1
    err = _one_line(capsys)
    assert f"--out {tmp_path}: is a folder" in err and ".tmp" not in err


def test_6_huge_caption_cell_names_the_manifest(tmp_path, bags, capsys) -> None:
    words = " ".join(["word"] * 300_000)
    (tmp_path / "m.csv").write_text(f'slide,label,caption\ns0,a,"{words}"\ns1,b,short.\n')
    argv = [
        "train",
        "--manifest",
        str(tmp_path / "m.csv"),
        "--features",
        str(bags),
        "--out",
        str(tmp_path / "r"),
    ]
    assert cli.main(argv) == 1
    assert str(tmp_path / "m.csv") in _one_line(capsys)


def test_6_warnings_are_one_line_without_source_location(tmp_path, capsys) -> None:
    from .conftest import write_pyramid_tiff

    slide = write_pyramid_tiff(
        tmp_path / "nompp.tif", np.full((256, 256, 3), 230, np.uint8), mpp=None, levels=1
    )
    assert cli.main(["info", str(slide)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err and all(line.startswith("napari-pathm3: warning: ") for line in err), err
    assert not any(".py:" in line or "UserWarning" in line for line in err)


def test_6_checkpoint_files_are_byte_identical(tmp_path) -> None:
    """safetensors writes ``__metadata__`` from a hash map: its order changed between saves (and processes)."""
    import torch

    from napari_pathm3.config import PathM3Config
    from napari_pathm3.model import build_model

    torch.manual_seed(0)
    model = build_model(PathM3Config.tiny(feature_dim=8)).eval()
    digests = set()
    for i in range(6):
        out = model.save_pretrained(tmp_path / f"c{i}")
        digests.add(
            tuple(
                hashlib.sha256((out / n).read_bytes()).hexdigest()
                for n in ("model.safetensors", "config.json")
            )
        )
    assert len(digests) == 1
    from napari_pathm3.model import PathM3Model

    PathM3Model.from_pretrained(tmp_path / "c0")  # the rewritten header still loads


# ------------------------------------------------------------------------------- issue 27, item 9: CLI hygiene

DEVICE_COMMANDS = {
    "extract": ["extract", "S", "--out", "O"],
    "train": ["train", "--manifest", "M", "--features", "F", "--out", "O"],
    "evaluate": ["evaluate", "C", "--manifest", "M", "--features", "F"],
    "caption": ["caption", "S", "--model", "demo"],
    "demo": ["demo"],
}


@pytest.mark.parametrize("command", sorted(DEVICE_COMMANDS))
@pytest.mark.parametrize("device", ["cuda", "cuda:1", "mps", "gpu"])
def test_27_device_checked_the_same_way_on_every_command(command, device, capsys, monkeypatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert _exit([*DEVICE_COMMANDS[command], "--device", device]) == 2
    err = _one_line(capsys)
    assert f"argument --device: device '{device}'" in err and "AssertionError" not in err
    assert ("not available" in err) if device != "gpu" else ("not a device" in err)


@pytest.mark.parametrize("command", sorted(DEVICE_COMMANDS))
def test_27_cuda_index_accepted_by_every_command_when_present(command, monkeypatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    args = cli.build_parser().parse_args([*DEVICE_COMMANDS[command], "--device", "CUDA:1"])
    assert args.device == "cuda:1"


def test_27_api_device_error_instead_of_assertion(monkeypatch) -> None:
    import torch

    from napari_pathm3.device import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="CUDA is not available"):
        resolve_device("cuda")


@pytest.mark.parametrize("command", cli.COMMANDS)
def test_27_every_help_has_examples(command, capsys) -> None:
    assert _exit([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "examples:" in out and f"napari-pathm3 {command} " in out.split("examples:")[1]


@pytest.mark.parametrize("command", ["extract", "caption", "train"])
def test_27_list_encoders_on_every_encoder_command(command, capsys) -> None:
    assert _exit([command, "--list-encoders"]) == 0
    assert ENCODER in capsys.readouterr().out.split()


def test_2_model_config_option_is_validated_like_a_checkpoint(tiny_ckpt, tmp_path, bags, capsys) -> None:
    data = json.loads((tiny_ckpt / "config.json").read_text())
    data["qformer"]["num_attention_heads"] = 0
    (tmp_path / "cfg.json").write_text(json.dumps(data))
    rows = [f"s{i},{'ab'[i % 2]},train" for i in range(4)]
    argv = _train(tmp_path, bags, rows, "--model-config", str(tmp_path / "cfg.json"))
    assert cli.main(argv) == 1
    err = _one_line(capsys)
    assert f"--model-config {tmp_path / 'cfg.json'}: qformer.num_attention_heads = 0" in err


def test_3_training_regions_off_the_slide_are_refused_before_any_work(synthetic_slide, tmp_path) -> None:
    from napari_pathm3.errors import RegionError
    from napari_pathm3.training.regions import Region

    far = Region(label="a", polygon=[[0, 0], [1e300, 0], [1e300, 1e300]], name="huge")
    near = Region(label="b", polygon=[[100, 100], [400, 100], [400, 400]])
    with pytest.raises(RegionError, match="region huge: spans.*not on the slide"):
        api.train([(synthetic_slide, [far, near])], output_dir=tmp_path / "m", encoder=ENCODER, device="cpu")
    assert not (tmp_path / "m").exists()
