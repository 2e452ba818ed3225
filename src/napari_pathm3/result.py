"""``SlideResult``: everything one captioning run produced, immutable, with its JSON / CSV / GeoJSON exports."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ._types import PathLike
from .grounding import PhraseMap, WordMaps, caption_class_agreement
from .heatmaps import patch_boxes
from .io.geojson import polygons_to_geojson
from .jsonfile import write_json_atomic
from .tiling import PatchGrid, TissueMask

#: the model name of every demo-model result (the checkpoint says it is the demo: ``PathM3Config.demo``)
DEMO_MODEL_NAME = "demo model (not diagnostic)"
#: the one disclaimer demo results carry (JSON, heatmap PNG, CLI, viewer)
DISCLAIMER = "Demo model: trained in under a minute on one sample slide; NOT diagnostic."


@dataclass(frozen=True, eq=False)
class SlideResult:
    """Everything one captioning run produced.

    Attributes:
        label: predicted class name; ``probabilities`` maps every class name to its probability.
        caption: generated caption ("" when the model has no language head).
        attention: ``(n,)`` attention per patch: mean over queries of ``query_attention``.
        query_attention: ``(q, n)`` cross-attention of each learned query over the patches, averaged over
            heads and over all cross-attention layers (6 of 12 at the paper's sizes).
        grid: the patches (level-0 coords; ``grid.coords[i]`` is patch ``i``).
        tissue: the tissue mask the grid was cut from.
        top_indices, top_scores: the ``top_k`` patches by attention, highest first.
        timings: seconds per stage.
    """

    slide_path: str
    slide_dimensions: tuple[int, int]
    mpp_xy: tuple[float, float] | None
    label: str
    probabilities: dict[str, float]
    caption: str
    attention: np.ndarray
    query_attention: np.ndarray
    grid: PatchGrid
    tissue: TissueMask
    top_indices: np.ndarray
    top_scores: np.ndarray
    model_name: str = ""
    encoder_name: str = ""
    device: str = ""
    text: str | None = None
    region: list[np.ndarray] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    #: human-readable problems with this result (e.g. "this model has not learned to caption"): show them
    warnings: tuple[str, ...] = ()
    #: the model's training verdict says it has not learned to caption: ``caption`` says so instead of text
    #: the model would write for any slide (widgets, overlay and exports decide by this flag, not by warnings)
    caption_withheld: bool = False
    #: made by the offline demo model (its checkpoint says so): shown with :data:`DISCLAIMER` everywhere
    demo: bool = False
    #: distance of this slide's features to the model's training features (``OodCheck.to_dict()``), or None
    #: when the model has no training-feature summary
    out_of_distribution: dict[str, Any] | None = None
    #: how well the model did where it was judged (``accuracy``, ``majority_rate``, ``evaluated_on``
    #: "validation" / "cross-validation" / "training", ``n``), from its training verdict; None if unrecorded
    model_accuracy: dict[str, Any] | None = None
    #: one patch map per caption word (None: not computed); see napari_pathm3.grounding
    word_maps: WordMaps | None = None
    #: patch maps of the phrases asked for (``queries``)
    phrase_maps: tuple[PhraseMap, ...] = ()
    #: file the word and phrase maps were written to (set by the CLI beside its JSON)
    maps_file: str | None = None

    def in_units(self, mpp_xy: tuple[float, float] | None) -> SlideResult:
        """This result drawn in other units: ``mpp_xy`` of the slide layer it is shown over (``None``:
        pixels), e.g. a slide opened without µm/px that was captioned with an entered value."""
        return replace(self, mpp_xy=None if mpp_xy is None else (float(mpp_xy[0]), float(mpp_xy[1])))

    def with_maps_file(self, path: PathLike) -> SlideResult:
        """This result saying its word and phrase maps were written to ``path`` (see :meth:`save_maps`)."""
        return replace(self, maps_file=str(path))

    def spread_text(self) -> str:
        """How peaked the attention is, in words (:func:`napari_pathm3.heatmaps.spread_text`)."""
        from .heatmaps import attention_spread, spread_text

        return spread_text(attention_spread(self.attention))

    def accuracy_text(self) -> str:
        """E.g. "model's validation accuracy 83% (majority class 50%, 12 bags)", or "" when unknown."""
        acc = self.model_accuracy or {}
        if acc.get("accuracy") is None:
            return ""
        where = acc.get("evaluated_on", "validation")
        text = f"model's {where} accuracy {float(acc['accuracy']):.0%}"
        extra = []
        if acc.get("majority_rate") is not None:
            extra.append(f"majority class {float(acc['majority_rate']):.0%}")
        if acc.get("n"):
            extra.append(f"{int(acc['n'])} bags")
        return text + (f" ({', '.join(extra)})" if extra else "")

    #: what run made the model's weights (preset, α, objective switches, Q-Former init, seed, code version)
    provenance: dict[str, Any] | None = None

    @property
    def caption_class_agreement(self) -> dict[str, Any]:
        """Whether the caption names a class and whether it is the classifier's (see
        :func:`napari_pathm3.grounding.caption_class_agreement`)."""
        return caption_class_agreement(self.caption, self.label, tuple(self.probabilities))

    @property
    def coords(self) -> np.ndarray:
        """``(n, 2)`` level-0 ``(x, y)`` top-left corners of the patches."""
        return self.grid.coords

    @property
    def num_patches(self) -> int:
        return len(self.grid)

    @property
    def slide_name(self) -> str:
        return Path(self.slide_path).stem

    @property
    def slide_scale(self) -> tuple[float, float]:
        """napari ``scale`` of the slide layer: (µm/px y, µm/px x), or (1, 1) in pixel units."""
        return (1.0, 1.0) if self.mpp_xy is None else (float(self.mpp_xy[1]), float(self.mpp_xy[0]))

    def top_patches(self) -> list[dict[str, Any]]:
        """The top-k patches: rank, index, attention, level-0 ``x``/``y`` and side ``size``."""
        size = float(self.grid.size_level0)
        return [
            {
                "rank": r + 1,
                "index": int(i),
                "attention": float(s),
                "x": int(self.coords[i, 0]),
                "y": int(self.coords[i, 1]),
                "size": size,
            }
            for r, (i, s) in enumerate(zip(self.top_indices, self.top_scores, strict=True))
        ]

    def summary(self) -> dict[str, Any]:
        """JSON-friendly summary (no per-patch arrays): what the CLI writes and layer metadata holds."""
        return {
            "slide": self.slide_path,
            "slide_dimensions": list(self.slide_dimensions),
            "mpp": None if self.mpp_xy is None else list(self.mpp_xy),
            "label": self.label,
            "probabilities": {k: float(v) for k, v in self.probabilities.items()},
            "caption": self.caption,
            "text": self.text,
            # say which classifier produced `label`: text-conditioned results are never silently the headline
            "classified_from": "image" if not self.text else "image and the given text (text-conditioned)",
            "num_patches": self.num_patches,
            "patch_size_level0": float(self.grid.size_level0),
            "patch_mpp": self.grid.mpp,
            "top_patches": self.top_patches(),
            "model": self.model_name,
            "encoder": self.encoder_name,
            "device": self.device,
            "region": None if self.region is None else [np.asarray(p).tolist() for p in self.region],
            "timings_s": {k: round(v, 4) for k, v in self.timings.items()},
            "warnings": list(self.warnings),
            "caption_withheld": self.caption_withheld,
            "out_of_distribution": self.out_of_distribution,
            "model_accuracy": self.model_accuracy,
            "caption_class_agreement": self.caption_class_agreement,
            "word_maps": None
            if self.word_maps is None
            else {
                "method": self.word_maps.method,
                "seconds": round(self.word_maps.seconds, 4),
                "words": self.word_maps.summary(),
                "file": self.maps_file,
            },
            "phrase_maps": [p.summary() for p in self.phrase_maps],
            "provenance": self.provenance,
            **({"disclaimer": DISCLAIMER} if self.demo else {}),
        }

    def to_dict(self, *, per_patch: bool = True) -> dict[str, Any]:
        """:meth:`summary` plus, with ``per_patch``, every patch's coordinates and attention."""
        out = self.summary()
        if per_patch:
            out["patches"] = {
                "x": self.coords[:, 0].tolist(),
                "y": self.coords[:, 1].tolist(),
                "attention": [float(a) for a in self.attention],
                "query_attention": np.asarray(self.query_attention, dtype=float).round(7).tolist(),
            }
            if self.word_maps is not None:
                out["patches"]["word_maps"] = np.asarray(self.word_maps.maps, dtype=float).round(7).tolist()
            if self.phrase_maps:
                out["patches"]["phrase_maps"] = {
                    p.phrase: np.asarray(p.values, dtype=float).round(7).tolist() for p in self.phrase_maps
                }
        return out

    def save_json(self, path: PathLike, *, per_patch: bool = True) -> Path:
        return write_json_atomic(path, self.to_dict(per_patch=per_patch))

    def save_maps(self, path: PathLike) -> Path:
        """Word and phrase maps as ``.npz`` (see :func:`napari_pathm3.grounding.save_maps_npz`)."""
        from .grounding import save_maps_npz

        return save_maps_npz(path, words=self.word_maps, phrases=self.phrase_maps, coords=self.coords)

    def save_csv(self, path: PathLike) -> Path:
        """One row per patch: index, x, y, size (level 0), tissue fraction, attention, top-k rank, then one
        column per caption word map (``word 3: threes``) and per phrase map (``phrase: solid nests``)."""
        path = Path(path)
        rank = {int(i): r + 1 for r, i in enumerate(self.top_indices)}
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh)
            extra = self._map_columns()
            w.writerow(["index", "x", "y", "size_level0", "tissue_fraction", "attention", "top_rank", *extra])
            maps = [m for _, m in extra.items()]
            for i in range(self.num_patches):
                w.writerow(
                    [
                        i,
                        int(self.coords[i, 0]),
                        int(self.coords[i, 1]),
                        self.grid.size_level0,
                        float(self.grid.tissue_fraction[i]),
                        float(self.attention[i]),
                        rank.get(i, ""),
                        *(float(m[i]) for m in maps),
                    ]
                )
        return path

    def _map_columns(self) -> dict[str, np.ndarray]:
        cols: dict[str, np.ndarray] = {}
        if self.word_maps is not None:
            for label, row in zip(self.word_maps.labels(), self.word_maps.maps, strict=True):
                cols[f"word {label}"] = row
        for p in self.phrase_maps:
            cols[f"phrase: {p.phrase}"] = p.values
        return cols

    def top_patches_geojson(self) -> dict[str, Any]:
        """Top-k patches as GeoJSON polygons in level-0 pixels (QuPath: File > Import objects)."""
        boxes = patch_boxes(self.grid, self.top_indices)[:, :, ::-1] + 0.5  # (y, x) centres -> (x, y) edges
        props = [
            {
                "name": f"top {p['rank']}",
                "class": "PathM3 attention",
                "rank": p["rank"],
                "attention": p["attention"],
                "index": p["index"],
            }
            for p in self.top_patches()
        ]
        return polygons_to_geojson(list(boxes), props)

    def save_geojson(self, path: PathLike) -> Path:
        return write_json_atomic(path, self.top_patches_geojson())
