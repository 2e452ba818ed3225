"""The offline demo: a tiny PathM3 model trained on the spot on labelled regions of the sample slide.

Nothing is downloaded beyond the sample slide (CMU-1 small region, H&E skin, CC0): ten hand-drawn regions
of two classes (squamous epithelium / dermal stroma) with one templated caption per class are cut into
patches, encoded with the built-in colour/texture encoder (``builtin:colorstats``) and used to train a
tiny model (under a minute on a laptop CPU). The model is cached in the user cache folder.

**The demo model is not diagnostic.** It has seen one slide and two tissue types; it exists to show the
workflow (regions -> training -> captions and attention heatmaps), nothing more.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._types import CancelToken, PathLike, ProgressFn, as_demo
from .config import DEFAULT_ENCODER, TilingConfig
from .errors import PathM3Error
from .io._atomic import path_lock
from .io.samples import CMU1_NAME, DATA_ENV, sample_slide_path
from .jobs import CaptionRequest, RegionTrainingRequest, RunContext
from .jsonfile import write_json_atomic
from .paths import user_cache_dir
from .result import DEMO_MODEL_NAME, DISCLAIMER
from .threads import apply_thread_policy

if TYPE_CHECKING:
    from .training.regions import Region

log = logging.getLogger(__name__)

#: bump when regions, captions, tiling or training change: the cached model is then retrained
DEMO_VERSION = "v6"  # v6: its config.json says demo: true (issue 22); v5: the training-feature summary
__all__ = [
    "DEMO_MODEL_NAME",
    "DISCLAIMER",
    "demo_regions",
    "ensure_demo_model",
    "run_headless",
    "sample_path",
]
#: 20 epochs: every demo region gets its class and caption right (30 gave the same at 1.5x the time; 12 mixed
#: up the stroma captions); about 25 s of CPU on one thread
DEMO_EPOCHS = 20
DEMO_ENCODER = DEFAULT_ENCODER
#: 96 px at 0.5 µm/px: small patches give a few hundred instances on the small sample and a finer heatmap
DEMO_TILING = TilingConfig(patch_size=96, target_mpp=0.5, min_tissue_fraction=0.25)
DEMO_CLASSES = ("squamous epithelium", "dermal stroma")
DEMO_CAPTIONS = {
    "squamous epithelium": "stratified squamous epithelium with densely packed basophilic nuclei.",
    "dermal stroma": "fibrous stroma with pink collagen bundles and few scattered nuclei.",
}
#: (class, polygon of level-0 (x, y) pixels) on CMU-1-Small-Region.svs (2220 x 2967 px, 0.499 µm/px)
DEMO_REGIONS: tuple[tuple[str, tuple[tuple[int, int], ...]], ...] = (
    ("squamous epithelium", ((1144, 666), (1289, 681), (1333, 869), (1246, 1101), (1159, 1217), (1116, 956))),
    (
        "squamous epithelium",
        ((1144, 1304), (1231, 1289), (1275, 1623), (1231, 2028), (1173, 2130), (1144, 1738)),
    ),
    (
        "squamous epithelium",
        ((1565, 2318), (1738, 2289), (1767, 2608), (1710, 2897), (1579, 2897), (1550, 2608)),
    ),
    ("squamous epithelium", ((1623, 1333), (1767, 1318), (1796, 1420), (1681, 1507))),
    (
        "squamous epithelium",
        ((1362, 985), (1565, 927), (1608, 1000), (1391, 1130), (1318, 1217), (1304, 1101)),
    ),
    ("squamous epithelium", ((565, 2608), (695, 2521), (753, 2695), (681, 2897), (565, 2897))),
    ("dermal stroma", ((840, 1623), (956, 1565), (1000, 2028), (980, 2090), (869, 2090), (826, 2028))),
    ("dermal stroma", ((1304, 1883), (1507, 1854), (1623, 2028), (1565, 2289), (1362, 2318))),
    ("dermal stroma", ((811, 2550), (1043, 2521), (1217, 2608), (1188, 2868), (840, 2883))),
    ("dermal stroma", ((116, 1072), (435, 1029), (811, 1058), (811, 1101), (435, 1087), (116, 1130))),
)  # fmt: skip  (a table: one region per line)

_lock = threading.Lock()


def sample_path() -> Path:
    """The sample slide (downloaded once); a clear error when that is impossible (offline)."""
    try:
        return sample_slide_path()
    except Exception as err:  # noqa: BLE001 - pooch/requests raise many types; all mean "no sample"
        raise PathM3Error(
            f"the sample slide {CMU1_NAME} is not available ({type(err).__name__}); connect once to download "
            f"it, or set {DATA_ENV} to a folder that holds it"
        ) from err


def demo_regions() -> list[Region]:
    """The labelled demo regions as :class:`~napari_pathm3.training.regions.Region` s."""
    from .training.regions import Region

    return [
        Region(
            label=cls, polygon=np.asarray(poly, dtype=np.float64), caption=DEMO_CAPTIONS[cls], name=f"demo{i}"
        )
        for i, (cls, poly) in enumerate(DEMO_REGIONS)
    ]


def demo_regions_layer(slide_scale: tuple[float, float]) -> tuple[list[np.ndarray], dict[str, Any], str]:
    """The demo regions as a napari shapes layer-data tuple (``class`` and ``caption`` features): the same
    layout the training widget reads, so users see what the demo model was trained on."""
    data = [np.asarray(poly, dtype=np.float64)[:, ::-1] for _, poly in DEMO_REGIONS]  # (y, x)
    classes = [cls for cls, _ in DEMO_REGIONS]
    colors = ["#7b2cbf" if c == DEMO_CLASSES[0] else "#ff5d8f" for c in classes]
    kwargs = {
        "name": "demo training regions",
        "shape_type": "polygon",
        "scale": slide_scale,
        "features": {"class": classes, "caption": [DEMO_CAPTIONS[c] for c in classes]},
        "edge_color": colors,
        "face_color": "transparent",
        "edge_width": 12,
        "visible": False,
        "text": {"string": "{class}", "size": 8, "color": "black"},
    }
    if slide_scale != (1.0, 1.0):
        kwargs["units"] = ("um", "um")  # as the slide layer: napari drops units when layers disagree
    return data, kwargs, "shapes"


def demo_model_dir() -> Path:
    """Where the demo model is cached (``$NAPARI_PATHM3_CACHE`` or the user cache folder)."""
    return user_cache_dir("demo-model", DEMO_VERSION)


def ensure_demo_model(
    *,
    device: str = "auto",
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
    force: bool = False,
    cache_dir: PathLike | None = None,
    epochs: int = DEMO_EPOCHS,
    threads: int | str | None = None,
) -> Path:
    """The demo checkpoint folder, training it first when it is not cached (or ``force``).

    Training writes into a temporary folder that is moved into place only when complete, so a cancelled
    or crashed run never leaves a half-trained "demo model" behind. ``threads``: CPU thread budget (see
    :mod:`napari_pathm3.threads`; ``None`` = ``$NAPARI_PATHM3_THREADS`` or the free cores).
    """
    from .training.region_trainer import train_on_regions

    root = Path(cache_dir).expanduser() if cache_dir is not None else demo_model_dir()
    final = root / "model"
    # one training per process (thread lock) and across processes (file lock): other callers wait and reuse it
    with _lock, path_lock(final, what="demo model"):
        if (final / "config.json").is_file() and not force:
            return final
        root.mkdir(parents=True, exist_ok=True)
        tmp = root / f".train-{os.getpid()}-{threading.get_ident()}"
        shutil.rmtree(tmp, ignore_errors=True)
        # never more busy threads than free cores: on a shared 2-core machine torch's default threads
        # spinning beside two other busy processes made this training 5x slower (issue 15)
        apply_thread_policy(threads)
        log.info("training the demo model in %s (one-off, under a minute on an idle laptop)", root)
        try:
            request = RegionTrainingRequest(
                output_dir=tmp,
                class_names=DEMO_CLASSES,
                encoder=DEMO_ENCODER,
                device=device,
                tiling=DEMO_TILING,
                cache_dir=user_cache_dir("features") if cache_dir is None else root / "features",
                model_size="tiny",
                epochs=epochs,
                sub_bags=5,
                mixed_bags=40,
                max_patches=48,
                batch_size=8,
                lr=5e-3,
                alpha=0.2,  # classification converges in a few epochs; the captions need the extra weight
                mode="image",  # classify from the image: the templated captions would give the class away
                # trained on every region (as before): held-out regions would change the demo model and
                # cross-validation would triple its one-off training time; its results say "training accuracy"
                validation=False,
                demo=True,  # recorded in its config.json: its results say "not diagnostic" wherever shown
            )
            context = RunContext(progress=as_demo(progress), cancel=cancel)
            result = train_on_regions([(sample_path(), demo_regions())], request, context)
            if final.exists():
                shutil.rmtree(final)
            os.replace(result.best_dir, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def run_headless(
    out_dir: PathLike,
    *,
    device: str = "auto",
    progress: ProgressFn | None = None,
    threads: int | str | None = None,
) -> dict[str, Path]:
    """Caption the sample slide with the demo model and write ``result.json`` and ``heatmap.png``."""
    from .heatmap_png import save_heatmap_png
    from .inference import caption_slide

    apply_thread_policy(threads)
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    model = ensure_demo_model(device=device, progress=progress, threads=threads)
    request = CaptionRequest(model=model, device=device, cache_dir=user_cache_dir("features"))
    result = caption_slide(sample_path(), request, RunContext(progress=progress))
    data = result.to_dict(per_patch=False)  # the checkpoint says it is the demo: name and disclaimer
    return {
        "json": write_json_atomic(out / "result.json", data),
        "heatmap": save_heatmap_png(result, out / "heatmap.png", note=DISCLAIMER),
    }
