"""Scoring captions someone else generated: references and predictions (CSV or JSON files, by id) -> the
caption metrics PathM3 reports (``napari-pathm3 score``)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

ID_KEYS = ("id", "slide", "slide_id", "image_id")
TEXT_KEYS = ("caption", "text", "reference", "prediction")


def _pick(keys: Any, names: tuple[str, ...]) -> str | None:
    lower = {str(k).strip().lower(): k for k in keys}
    return next((lower[n] for n in names if n in lower), None)


def _from_records(rows: list[Any]) -> list[tuple[str, str]]:
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ValueError(f"entry {i} is not an object")
        id_k, text_k = _pick(row, ID_KEYS), _pick(row, TEXT_KEYS)
        if id_k is None or text_k is None or not isinstance(row[text_k], str):
            raise ValueError(
                f"entry {i} needs an id ({'/'.join(ID_KEYS)}) and a caption ({'/'.join(TEXT_KEYS)})"
            )
        out.append((str(row[id_k]).strip(), row[text_k]))
    return out


def _read_json(path: Path) -> list[tuple[str, str]]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(data, dict) and isinstance(data.get("annotations"), list):
        data = data["annotations"]
    if isinstance(data, list):
        return _from_records(data)
    if isinstance(data, dict):
        out = []
        for k, v in data.items():
            texts = [v] if isinstance(v, str) else v
            if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
                raise ValueError(f"id {k!r}: expected a caption string or a list of them")
            out += [(str(k).strip(), t) for t in texts]
        return out
    raise ValueError("expected an object {id: caption} or a list of {id, caption} records")


def _read_csv(path: Path) -> list[tuple[str, str]]:
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        cols = reader.fieldnames or []
        id_c, text_c = _pick(cols, ID_KEYS), _pick(cols, TEXT_KEYS)
        if id_c is None or text_c is None:
            raise ValueError(
                f"header {cols} needs an id column ({', '.join(ID_KEYS)}) and a caption column ({', '.join(TEXT_KEYS)})"
            )
        return [(str(r[id_c] or "").strip(), r[text_c] or "") for r in reader if (r.get(id_c) or "").strip()]


def read_captions(path: str | Path) -> dict[str, list[str]]:
    """``id -> captions`` from a CSV or JSON file (see the module docstring)."""
    from ..errors import PathM3Error

    p = Path(path)
    try:
        pairs = _read_json(p) if p.suffix.lower() == ".json" else _read_csv(p)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise PathM3Error(f"cannot read {p}: {err}") from err
    except (ValueError, KeyError) as err:  # json.JSONDecodeError is a ValueError
        raise PathM3Error(f"{p}: not a captions file: {err}") from err
    out: dict[str, list[str]] = {}
    for k, text in pairs:
        out.setdefault(k, []).append(text)
    if not out:
        raise PathM3Error(f"{p}: no captions")
    return out


def score(
    references: str | Path, predictions: str | Path, *, tokenizer: str = "paper", per_example: bool = False
) -> dict[str, Any]:
    """Caption metrics of ``predictions`` against ``references`` (files), as a JSON-serialisable dict."""
    from ..errors import PathM3Error
    from ..training.metrics import caption_metrics, sentence_bleu4

    refs, preds = read_captions(references), read_captions(predictions)
    several = [k for k, v in preds.items() if len(v) > 1]
    if several:
        raise PathM3Error(
            f"{predictions}: {len(several)} ids have more than one prediction (e.g. {several[0]!r})"
        )
    no_ref, no_pred = sorted(set(preds) - set(refs)), sorted(set(refs) - set(preds))
    if no_ref or no_pred:
        parts = [f"{len(no_ref)} prediction ids have no reference (e.g. {no_ref[0]!r})"] if no_ref else []
        parts += [f"{len(no_pred)} reference ids have no prediction (e.g. {no_pred[0]!r})"] if no_pred else []
        raise PathM3Error(f"ids of {references} and {predictions} differ: " + "; ".join(parts))
    ids = sorted(refs)
    out: dict[str, Any] = caption_metrics(
        [refs[k] for k in ids], [preds[k][0] for k in ids], tokenizer=tokenizer
    )
    out.update(
        n=len(ids),
        references_per_id=round(sum(len(refs[k]) for k in ids) / len(ids), 3),
        tokenizer=tokenizer,
        not_computed=["spice"],
    )
    if per_example:
        out["bleu_4_per_example"] = {
            k: sentence_bleu4(refs[k], preds[k][0], tokenizer=tokenizer) for k in ids
        }
    return out
