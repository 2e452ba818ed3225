"""Property-based fuzz (hypothesis) of every CLI command's numeric options, the environment variables and a
checkpoint's config.json (issue 23): **exit 0 with a correct result, or exit != 0 with one line naming the
option / field** — and never a bare built-in exception from the API.

Each property runs twice: ``quick`` in the default suite (derandomized, a few examples each: about 30 s in all
on a 2-core machine) and ``slow`` (``pytest -m slow``: random seeds, ten times the examples).

* Options are found by walking the parser, so an option added later is fuzzed without touching this file; the
  bounds checked are the ones its type declares.
* End-to-end runs draw in-range values of bounded cost (a 1-epoch training, patches of at least 64 px): the
  property is about correctness there, while the parse-level property sends every kind of value to every option.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_pathm3 import cli
from napari_pathm3.errors import CheckpointError, GridError, OptionError, PathM3Error

ENCODER = "builtin:colorstats"
DIM = 94

MODES = [pytest.param(1, id="quick"), pytest.param(10, marks=pytest.mark.slow, id="slow")]

#: positional / required arguments that let each command's parser accept the option under test
REQUIRED = {
    "info": ["S"],
    "extract": ["S", "--out", "O"],
    "train": ["--manifest", "M", "--features", "F", "--out", "O"],
    "evaluate": ["C", "--manifest", "M", "--features", "F"],
    "score": ["R", "P"],
    "caption": ["S", "--model", "demo"],
    "demo": [],
}


def _run(scale: int, examples: int, test: Any, **kw: Any) -> None:
    """Run the hypothesis test ``test`` with ``examples x scale`` examples (derandomized when quick)."""
    settings(
        max_examples=examples * scale,
        deadline=None,
        derandomize=scale == 1,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        **kw,
    )(test)()


def _main(argv: list[str]) -> tuple[int, str, str]:
    """``cli.main`` in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    # cli.main exports --threads to the environment for the process it runs in: keep it out of later tests
    with mock.patch.dict(os.environ), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = cli.main(argv)
        except SystemExit as exc:
            rc = int(exc.code or 0)
    return rc, out.getvalue(), err.getvalue()


def _assert_one_line(err: str, *names: str) -> None:
    text = err.strip()
    assert text and "\n" not in text and "Traceback" not in text, err
    assert any(n in text for n in names), f"{names} not named in: {text}"


# ------------------------------------------------------------------------------- numeric options: parse level


def numeric_options() -> list[tuple[str, str, tuple]]:
    """``(command, option, (kind, ge, gt, le, lt))`` of every option whose type declares bounds."""
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, type(parser._subparsers._group_actions[0])))
    out = []
    for name, command in sub.choices.items():
        for action in command._actions:
            bounds = getattr(action.type, "bounds", None)
            if bounds is not None and action.option_strings:
                out.append((name, action.option_strings[-1], bounds))
    return out


OPTIONS = numeric_options()


def test_every_numeric_option_is_bounded() -> None:
    """The options the issue names are among the bounded ones (the walk above finds them)."""
    found = {(c, o) for c, o, _ in OPTIONS}
    for c, o in [
        ("info", "--mpp"),
        ("extract", "--workers"),
        ("extract", "--num-workers"),
        ("extract", "--batch-size"),
        ("train", "--val-fraction"),
        ("evaluate", "--num-beams"),
        ("caption", "--top-k"),
        ("demo", "--epochs"),
    ] + [(c, "--threads") for c in REQUIRED]:
        assert (c, o) in found, (c, o)
    assert {c for c, _ in found} >= set(REQUIRED) - {"score"}  # score has no numeric option


def _in_bounds(value: Any, bounds: tuple) -> bool:
    kind, ge, gt, le, lt = bounds
    if not isinstance(value, kind) or isinstance(value, bool) or not math.isfinite(value):
        return False
    return (
        (ge is None or value >= ge)
        and (gt is None or value > gt)
        and (le is None or value <= le)
        and (lt is None or value < lt)
    )


RAW = st.one_of(
    st.integers(-(10**30), 10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["0", "-1", "1", "1e308", "-0", "nan", "inf", "-inf", "1e-320", "0x10", " 3", "1_000"]),
    st.text(max_size=6),
)


@pytest.mark.parametrize("scale", MODES)
def test_fuzz_numeric_options_parse(scale: int) -> None:
    """Any value for any numeric option: parsed to a finite value in its bounds, or exit 2 with one line
    naming the option."""
    parser = cli.build_parser()

    @given(st.sampled_from(OPTIONS), RAW)
    def prop(option: tuple, raw: str) -> None:
        command, flag, bounds = option
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                args = parser.parse_args([command, *REQUIRED[command], f"{flag}={raw}"])
            except SystemExit as exc:
                assert exc.code == 2
                _assert_one_line(err.getvalue(), f"argument {flag}")
                return
        value = getattr(
            args, parser._subparsers._group_actions[0].choices[command]._option_string_actions[flag].dest
        )
        if isinstance(value, list):  # nargs="+"
            assert all(_in_bounds(v, bounds) for v in value)
        elif flag == "--threads" and value is None:  # 'auto'
            assert raw.strip().lower() in ("", "auto")
        else:
            assert _in_bounds(value, bounds), (flag, raw, value)

    _run(scale, 300, prop)


# ------------------------------------------------------------------------------- environment variables


@pytest.mark.parametrize("scale", MODES)
def test_fuzz_environment_variables(scale: int, monkeypatch: pytest.MonkeyPatch) -> None:
    from napari_pathm3.threads import resolve_threads
    from napari_pathm3.tiling.grid import _max_patches

    env_value = RAW.filter(lambda s: "\x00" not in s)  # the OS refuses NUL in environment variables

    @given(env_value, env_value)
    def prop(threads: str, max_patches: str) -> None:
        monkeypatch.setenv("NAPARI_PATHM3_THREADS", threads)
        monkeypatch.setenv("NAPARI_PATHM3_MAX_PATCHES", max_patches)
        try:
            assert 1 <= resolve_threads().threads <= 1024
        except OptionError as err:
            assert "NAPARI_PATHM3_THREADS" in str(err) and "\n" not in str(err)
        try:
            assert 1 <= _max_patches(None) <= 100_000_000
        except GridError as err:
            assert "NAPARI_PATHM3_MAX_PATCHES" in str(err) and "\n" not in str(err)

    _run(scale, 100, prop)


# ------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from napari_pathm3.config import PathM3Config
    from napari_pathm3.model import build_model

    cfg = PathM3Config.tiny(feature_dim=DIM, encoder_name=ENCODER, class_names=("a", "b"))
    return build_model(cfg).eval().save_pretrained(tmp_path_factory.mktemp("ckpt") / "tiny")


@pytest.fixture(scope="module")
def bags(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A features folder of 8 bags (two classes) and its manifest."""
    root = tmp_path_factory.mktemp("bags")
    feats = root / "feats"
    feats.mkdir()
    rng = np.random.default_rng(0)
    rows = ["slide,label,caption"]
    for i in range(8):
        f = rng.normal(size=(6 + i, DIM)).astype(np.float32)
        f[:, 0] += 2 * (i % 2)
        np.save(feats / f"b{i}.npy", f)
        rows.append(f"b{i},{'ab'[i % 2]},{'round cells' if i % 2 else 'long glands'} .")
    (root / "m.csv").write_text("\n".join(rows) + "\n")
    return feats, root / "m.csv"


def _int(option: str, lo: int, hi: int) -> st.SearchStrategy:
    return st.tuples(st.just(option), st.integers(lo, hi).map(str))


def _float(option: str, lo: float, hi: float) -> st.SearchStrategy:
    return st.tuples(st.just(option), st.floats(lo, hi, allow_nan=False).map(repr))


def _opts(*strategies: st.SearchStrategy) -> st.SearchStrategy:
    """A few of the options, each with a value; any value (in or out of range) via RAW with some chance."""
    anything = (
        st.sampled_from(strategies)
        .flatmap(lambda s: s.map(lambda t: t[0]))
        .flatmap(lambda flag: st.tuples(st.just(flag), RAW))
    )
    return st.lists(st.one_of(*strategies, anything), min_size=1, max_size=3, unique_by=lambda t: t[0])


def _argv(opts: list[tuple[str, str]]) -> list[str]:
    return [f"{k}={v}" for k, v in opts]


@pytest.mark.parametrize("scale", MODES)
def test_fuzz_caption_options_end_to_end(scale, tiny_ckpt, bags, tmp_path) -> None:
    bag = bags[0] / "b3.npy"
    n = len(np.load(bag))

    @given(_opts(_int("--top-k", 1, 40), _int("--threads", 1, 4)))
    def prop(opts: list[tuple[str, str]]) -> None:
        out = tmp_path / "r.json"
        out.unlink(missing_ok=True)
        rc, _, err = _main(["caption", str(bag), "--model", str(tiny_ckpt), "--device", "cpu", "--quiet",
                            "--out", str(out), *_argv(opts)])  # fmt: skip
        if rc != 0:
            _assert_one_line(err, *(k for k, _ in opts))
            return
        data = json.loads(out.read_text())
        probs = data["probabilities"]
        assert set(probs) == {"a", "b"} and abs(sum(probs.values()) - 1) < 1e-4
        top_k = int(dict(opts).get("--top-k", 8))
        assert len(data["top_patches"]) == min(top_k, n)

    _run(scale, 6, prop)


@pytest.mark.parametrize("scale", MODES)
def test_fuzz_info_options_end_to_end(scale, synthetic_slide) -> None:
    @given(
        _opts(
            _float("--mpp", 0.3, 8.0),
            _int("--patch-size", 64, 1024),
            _float("--target-mpp", 0.25, 4.0),
            _float("--min-tissue", 0.0, 1.0),
            _float("--tissue-threshold", 0.0, 1.0),
            _float("--tissue-mpp", 2.0, 64.0),
        )
    )
    def prop(opts: list[tuple[str, str]]) -> None:
        rc, out, err = _main(["info", str(synthetic_slide), *_argv(opts)])
        if rc != 0:  # an out-of-range value, or a grid/tissue refusal naming the option to change
            _assert_one_line(err, *(k for k, _ in opts), "--mpp", "--tissue-threshold", "--min-tissue")
            return
        meta = json.loads(out)
        assert meta["level_dimensions"][0][0] > 0 and 0.0 <= meta["tissue_fraction"] <= 1.0
        assert isinstance(meta["patches"], int) and meta["patches"] >= 0
        grid = meta["grid"]
        for k, field in (("--patch-size", "patch_size"), ("--target-mpp", "target_mpp")):
            if k in dict(opts):
                assert grid[field] == pytest.approx(float(dict(opts)[k]))

    _run(scale, 6, prop)


@pytest.mark.parametrize("scale", MODES)
def test_fuzz_extract_options_end_to_end(scale, synthetic_slide, tmp_path) -> None:
    from napari_pathm3.io.feature_store import FeatureStore

    @given(
        _opts(
            _int("--patch-size", 112, 512),
            _float("--min-tissue", 0.0, 1.0),
            _int("--batch-size", 1, 128),
            _int("--num-workers", 1, 4),
            _float("--target-mpp", 0.5, 4.0),
        )
    )
    def prop(opts: list[tuple[str, str]]) -> None:
        store = tmp_path / "store"
        shutil.rmtree(store, ignore_errors=True)
        rc, out, err = _main(["extract", str(synthetic_slide), "--out", str(store), "--device", "cpu",
                              "--no-progress", *_argv(opts)])  # fmt: skip
        if rc == 1 and not err.strip():  # the slide failed (e.g. no patch with enough tissue): one line each
            failed = [line for line in out.splitlines() if line.startswith("FAILED blobs")]
            assert len(failed) == 1 and ("tissue" in failed[0] or "--" in failed[0]), out
            return
        if rc != 0:
            _assert_one_line(err, *(k for k, _ in opts))
            return
        bag = FeatureStore(store).open_bag("blobs")
        assert bag.features.shape[1] == DIM and np.isfinite(bag.features).all()
        assert bag.meta.grid.tiling["patch_size"] == int(dict(opts).get("--patch-size", 224))

    _run(scale, 4, prop)


@pytest.mark.parametrize("scale", MODES)
def test_fuzz_evaluate_options_end_to_end(scale, tiny_ckpt, bags, tmp_path) -> None:
    feats, manifest = bags

    @given(_opts(_int("--batch-size", 1, 16), _int("--num-beams", 1, 4)))
    def prop(opts: list[tuple[str, str]]) -> None:
        out = tmp_path / "m.json"
        out.unlink(missing_ok=True)
        rc, _, err = _main(["evaluate", str(tiny_ckpt), "--manifest", str(manifest), "--features", str(feats),
                            "--device", "cpu", "--out", str(out), *_argv(opts)])  # fmt: skip
        if rc != 0:
            _assert_one_line(err, *(k for k, _ in opts))
            return
        m = json.loads(out.read_text())
        assert m["n"] == 8 and 0.0 <= m["accuracy"] <= 1.0

    _run(scale, 3, prop)


@pytest.mark.parametrize("scale", MODES)
def test_fuzz_train_options_end_to_end(scale, bags, tmp_path) -> None:
    feats, manifest = bags

    @given(
        _opts(
            _float("--val-fraction", 0.0, 0.6),
            _float("--alpha", 0.0, 1.0),
            _float("--lr", 1e-5, 1e-1),
            _int("--batch-size", 1, 8),
            _int("--max-patches", 1, 20),
            _int("--seed", 0, 2**32 - 1),
        )
    )
    def prop(opts: list[tuple[str, str]]) -> None:
        run = tmp_path / "run"
        shutil.rmtree(run, ignore_errors=True)
        rc, out, err = _main(["train", "--manifest", str(manifest), "--features", str(feats), "--out", str(run),
                              "--size", "tiny", "--epochs", "1", "--device", "cpu", "--no-generate",
                              *_argv(opts)])  # fmt: skip
        if rc != 0:  # out of range, or a split that leaves a class without training bags (named)
            _assert_one_line(err, *(k for k, _ in opts), "no training bag")
            assert not (run / "best").exists()
            return
        summary = json.loads(out)
        assert summary["epochs_run"] == 1 and (run / "best" / "config.json").is_file()

    _run(scale, 3, prop)


# ------------------------------------------------------------------------------- config.json


def _leaves(data: dict, prefix: tuple = ()) -> list[tuple]:
    out = []
    for k, v in data.items():
        out += _leaves(v, (*prefix, k)) if isinstance(v, dict) else [(*prefix, k)]
    return out


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**20), 10**20)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=5,
)


@pytest.mark.parametrize("scale", MODES)
def test_fuzz_config_json(scale, tiny_ckpt, tmp_path) -> None:
    """A config.json with one key changed, removed or added: the model loads and classifies (probabilities
    over its classes), or a CheckpointError of one line names config.json and the key (or the tensors whose
    shapes the edit changed). Never a bare ZeroDivisionError / TypeError / AttributeError / KeyError."""
    import torch

    from napari_pathm3.model import PathM3Model

    base = json.loads((tiny_ckpt / "config.json").read_text())
    leaves = _leaves({k: v for k, v in base.items() if k != "pathm3_format"})
    near = st.sampled_from(leaves).flatmap(lambda p: st.tuples(st.just(p), _near(_get(base, p))))
    edit = st.one_of(
        st.tuples(st.sampled_from(leaves), JSON),  # any JSON value
        near,  # a value of the right kind, often out of range
        st.tuples(st.sampled_from(leaves), st.just(KeyError)),  # key removed
        st.tuples(st.sampled_from(leaves).map(lambda p: (*p[:-1], "unexpected_key")), JSON),
    )
    bag = torch.randn(1, 7, DIM)

    @given(edit)
    def prop(change: tuple) -> None:
        path, value = change
        ckpt = tmp_path / "edited"
        shutil.rmtree(ckpt, ignore_errors=True)
        shutil.copytree(tiny_ckpt, ckpt)
        data = json.loads(json.dumps(base))
        target = data
        for p in path[:-1]:
            target = target[p]
        if value is KeyError:
            target.pop(path[-1], None)
        else:
            target[path[-1]] = value
        (ckpt / "config.json").write_text(json.dumps(data))
        try:
            model = PathM3Model.from_pretrained(ckpt, device="cpu")
        except CheckpointError as err:
            text = str(err)
            assert "\n" not in text and ("config.json" in text or "weights do not match" in text), text
            assert str(path[-1]) in text or "weights do not match" in text or "model built" in text, text
            return
        except PathM3Error:
            raise
        text = ["x"] if model.config.mode == "text" else None
        cls = model.classify(bag, text=text)
        probs = cls.probabilities[0]
        assert probs.shape == (len(model.class_names),) and torch.isfinite(probs).all()
        assert abs(float(probs.sum()) - 1) < 1e-4
        assert len(model.generate_captions(bag, max_new_tokens=3)) == 1

    _run(scale, 30, prop)


def _get(data: dict, path: tuple) -> Any:
    for p in path:
        data = data[p]
    return data


def _near(value: Any) -> st.SearchStrategy:
    """Values of the same JSON kind as ``value`` (ints stay ints, strings strings), across their range."""
    if isinstance(value, bool):
        return st.booleans()
    if isinstance(value, int):
        return st.integers(-3, 70_000) | st.sampled_from([0, -1, 2**31, 10**12])
    if isinstance(value, float):
        return st.floats(-2.0, 2.0) | st.sampled_from([0.0, -1e-9, 1.0, 1e300])
    if isinstance(value, str):
        return st.text(max_size=6)
    if isinstance(value, list):
        return st.lists(st.text(max_size=3) | st.integers(0, 3) | st.floats(0, 1), max_size=4)
    return st.none()


# ------------------------------------------------------------------------------- feature files


@pytest.mark.parametrize("scale", MODES)
def test_fuzz_feature_files(scale, tmp_path) -> None:
    """Any array as a bag's features and coords (.h5): a bag of finite float32 features with (n, 2) int64
    coords, or a FeatureStoreError of one line naming the file."""
    import h5py
    from hypothesis.extra import numpy as hnp

    from napari_pathm3.errors import FeatureStoreError
    from napari_pathm3.io.interop import read_feature_file

    dtypes = st.sampled_from(
        ["float16", "float32", "float64", "complex64", "int32", "int64", "bool", "uint8"]
    )
    arrays = dtypes.flatmap(
        lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=5))
    )

    @given(arrays, st.one_of(st.none(), arrays))
    def prop(features: np.ndarray, coords: np.ndarray | None) -> None:
        path = tmp_path / "bag.h5"
        with h5py.File(path, "w") as fh:
            fh["features"] = features
            if coords is not None:
                fh["coords"] = coords
        try:
            bag = read_feature_file(path)
        except FeatureStoreError as err:
            assert str(path) in str(err) and "\n" not in str(err)
            return
        assert bag.features.dtype == np.float32 and bag.features.ndim == 2 and len(bag) >= 1
        assert np.isfinite(bag.features).all()
        assert bag.coords is None or (bag.coords.shape == (len(bag), 2) and bag.coords.dtype == np.int64)

    _run(scale, 40, prop)
