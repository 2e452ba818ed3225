"""``napari-pathm3 score REFERENCES PREDICTIONS``: any captioner's captions scored the project's way."""

from __future__ import annotations

import csv
import json
import re

import pytest

from napari_pathm3.cli import main
from napari_pathm3.training import metrics as M

from .test_metrics import TABLE5

pytest.importorskip("nltk")


def _write_csv(path, header, rows):
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def _score(capsys, *args):
    rc = main(["score", *map(str, args)])
    out, err = capsys.readouterr()
    return rc, out, err


def test_csv_and_json_give_the_metrics_module_figures(tmp_path, capsys):
    ids = [f"s{i}" for i in range(len(TABLE5))]
    refs = _write_csv(
        tmp_path / "refs.csv", ["id", "text"], [(i, r) for i, (r, _, _) in zip(ids, TABLE5, strict=True)]
    )
    preds = tmp_path / "preds.json"  # coco-caption results layout
    preds.write_text(
        json.dumps([{"image_id": i, "caption": h} for i, (_, h, _) in zip(ids, TABLE5, strict=True)])
    )
    rc, out, _ = _score(capsys, refs, preds, "--per-example")
    assert rc == 0
    got = json.loads(out)
    want = M.caption_metrics([r for r, _, _ in TABLE5], [h for _, h, _ in TABLE5])
    assert {k: got[k] for k in want} == pytest.approx(want)
    assert got["n"] == 5 and got["tokenizer"] == "paper" and got["not_computed"] == ["spice"]
    assert [round(got["bleu_4_per_example"][i], 3) for i in ids] == [p for _, _, p in TABLE5]


def test_several_references_per_id_and_json_mapping(tmp_path, capsys):
    refs = _write_csv(
        tmp_path / "r.csv", ["slide_id", "caption"], [("a", "x y z"), ("a", "small ducts"), ("b", "q")]
    )
    preds = tmp_path / "p.json"
    preds.write_text(json.dumps({"a": "small ducts", "b": "q"}))
    out = tmp_path / "m.json"
    rc, _, _ = _score(capsys, refs, preds, "--out", out, "--tokenizer", "words")
    m = json.loads(out.read_text())
    assert rc == 0 and m["references_per_id"] == 1.5 and m["rouge_l"] == pytest.approx(1.0)
    assert m["tokenizer"] == "words"


@pytest.mark.parametrize(
    ("refs", "preds", "message"),
    [
        ({"a": "x", "b": "y"}, {"a": "x", "c": "y"}, "ids of .* differ: 1 prediction ids have no reference"),
        ({"a": "x", "b": "y"}, {"a": "x"}, "1 reference ids have no prediction \\(e.g. 'b'\\)"),
        ({"a": "x"}, {"a": ["x", "y"]}, "more than one prediction"),
        ({"a": "x"}, [{"name": "a", "caption": "x"}], "needs an id"),
        ({"a": "x"}, {"a": 3}, "expected a caption string"),
    ],
)
def test_bad_inputs_are_one_line_errors(tmp_path, capsys, refs, preds, message):
    (tmp_path / "r.json").write_text(json.dumps(refs))
    (tmp_path / "p.json").write_text(json.dumps(preds))
    rc, out, err = _score(capsys, tmp_path / "r.json", tmp_path / "p.json")
    assert rc == 1 and out == "" and len(err.strip().splitlines()) == 1
    assert err.startswith("napari-pathm3 score: error: ")

    assert re.search(message, err)


def test_unreadable_files_are_one_line_errors(tmp_path, capsys):
    (tmp_path / "bad.json").write_text("{not json")
    _write_csv(tmp_path / "nocol.csv", ["slide", "label"], [("a", "x")])
    _write_csv(tmp_path / "ok.csv", ["id", "caption"], [("a", "x")])
    for refs in (tmp_path / "missing.csv", tmp_path / "bad.json", tmp_path / "nocol.csv"):
        rc, _, err = _score(capsys, refs, tmp_path / "ok.csv")
        assert rc == 1 and len(err.strip().splitlines()) == 1 and str(refs.name) in err
