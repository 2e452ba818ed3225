"""Run by LazySlide's own interpreter (its venv: LazySlide replaces torch, so it never runs in ours).

    python lazyslide_roundtrip.py SLIDE OUR_EXPORT.zarr LAZYSLIDE_STORE.zarr OUT.json

Reads our export with LazySlide (feature aggregation, tile plot coloured by our attention), then tiles and
encodes the slide with LazySlide (a tiny CNN: 48-d features) into a store of its own for us to read back.
"""

from __future__ import annotations

import json
import sys

import matplotlib

matplotlib.use("Agg")

import lazyslide as zs  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import wsidata  # noqa: E402


def main(slide: str, ours: str, store: str, out: str) -> None:
    report: dict = {"lazyslide": zs.__version__, "wsidata": wsidata.__version__}
    # 1. LazySlide reads our export
    wsi = wsidata.open_wsi(slide, store=ours)
    feature_key = next(k for k in wsi.tables if k.endswith("_tiles")).removesuffix("_tiles")
    zs.tl.feature_aggregation(wsi, feature_key, tile_key="tiles", encoder="mean")
    table = wsi.tables[f"{feature_key}_tiles"]
    report["agg_shape"] = list(np.asarray(table.varm["agg_slide"]).shape)
    report["agg_matches_mean"] = bool(
        np.allclose(np.asarray(table.varm["agg_slide"])[:, 0], np.asarray(table.X).mean(0), atol=1e-5)
    )
    zs.pl.tiles(wsi, tile_key="tiles", color="attention_rel")
    plt.savefig(out.replace(".json", "-tiles.png"))
    report["n_tiles_read"] = int(len(wsi.shapes["tiles"]))
    # 2. LazySlide writes a store of its own
    wsi = wsidata.open_wsi(slide, store=store)
    zs.pp.find_tissues(wsi)
    zs.pp.tile_tissues(wsi, 224, mpp=0.5, background_fraction=0.75)
    model = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten())  # (b, 3, h, w) -> (b, 48)

    def to_tensor(tile: torch.Tensor) -> torch.Tensor:  # a callable model gets no default transform
        return torch.as_tensor(np.asarray(tile)).permute(2, 0, 1).float() / 255.0

    zs.tl.feature_extraction(wsi, model, model_name="tinycnn", transform=to_tensor, device="cpu", pbar=False)
    wsi.write()
    bounds = np.asarray(wsi.shapes["tiles"].geometry.bounds)
    report["written_tiles"] = bounds[:, :2].astype(int).tolist()
    report["written_dim"] = int(wsi.tables["tinycnn_tiles"].n_vars)
    with open(out, "w") as fh:
        json.dump(report, fh)


if __name__ == "__main__":
    main(*sys.argv[1:5])
