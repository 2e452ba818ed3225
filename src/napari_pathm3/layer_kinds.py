"""The kinds of napari layer napari-pathm3 adds for a result, and the one test of "is this ours".

A result layer records its kind as ``metadata["kind"]`` (the enum's string value, so napari can copy and
save the metadata as plain data). Stdlib only: the widgets, ``layers`` and ``word_layers`` share it.
"""

from __future__ import annotations

import enum

#: the metadata key holding a result layer's kind
KIND_KEY = "kind"


class ResultLayerKind(str, enum.Enum):
    """What a result layer shows."""

    TISSUE = "tissue"  # the tissue mask (labels)
    ATTENTION = "attention"  # the aggregate attention heatmap (image)
    QUERY_ATTENTION = "query_attention"  # one heatmap per learned query (image stack)
    TOP_PATCHES = "top_patches"  # the most attended patches (shapes)
    WORD_MAP = "word_map"  # where one caption word looks (image)
    PHRASE_MAP = "phrase_map"  # where a typed phrase matches (image)

    def __str__(self) -> str:
        return self.value


def result_layer_kind(layer: object) -> ResultLayerKind | None:
    """The kind of a layer napari-pathm3 added for a result, else ``None`` (slides, user drawings, other
    plugins' layers)."""
    meta = getattr(layer, "metadata", None)
    value = meta.get(KIND_KEY) if isinstance(meta, dict) else None
    try:
        return ResultLayerKind(value) if isinstance(value, str) else None
    except ValueError:
        return None


def is_result_layer(layer: object, *kinds: ResultLayerKind) -> bool:
    """True when ``layer`` is a result layer (of one of ``kinds``, when given)."""
    kind = result_layer_kind(layer)
    return kind is not None and (not kinds or kind in kinds)
