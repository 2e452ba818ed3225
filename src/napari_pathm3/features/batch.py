"""Many slides: one task per slide, in this process or on a dask.distributed cluster.

One bad slide never stops the batch: its :class:`ExtractResult` carries the error. Every slide goes to
``FeatureStore(store).path_for(slide_id)``, so re-running the same command skips finished slides and resumes
interrupted ones.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._types import CancelToken, PathLike, ProgressFn, check_cancel, report
from ..config import TilingConfig
from ..errors import Cancelled, PathM3Error
from ..io.feature_store import FeatureStore, slide_id_for

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SlideJob:
    """One manifest row: slide path, its key in the store, optional µm/px override."""

    slide: str
    slide_id: str
    mpp: float | None = None


@dataclass(frozen=True)
class ExtractResult:
    """Outcome of one slide. ``ok`` False: ``error`` says why (the batch went on)."""

    slide_id: str
    slide: str
    ok: bool
    n_patches: int = 0
    dim: int = 0
    store_path: str | None = None
    error: str | None = None
    seconds: float = 0.0


@dataclass(frozen=True)
class _Options:
    encoder: Any
    store: str
    tiling: TilingConfig = field(default_factory=TilingConfig)
    batch_size: int = 64
    num_workers: int | None = None
    device: str = "auto"
    dtype: str = "float32"
    overwrite: bool = False


def jobs_from_paths(paths: Sequence[PathLike]) -> list[SlideJob]:
    return _check_unique([SlideJob(str(p), slide_id_for(p)) for p in paths])


def read_manifest(path: PathLike) -> list[SlideJob]:
    """Read a CSV manifest: column ``slide`` (path, relative to the CSV's folder) plus optional ``slide_id``
    and ``mpp``.

    Raises:
        PathM3Error: no ``slide`` column, a bad ``mpp`` value or duplicate slide ids.
    """
    from ..errors import ManifestError
    from ..schemas import bounded

    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
    except csv.Error as err:  # e.g. "field larger than field limit": a broken quote swallowed the file
        raise ManifestError(f"{path}: not a readable CSV ({err}); check its quoting") from err
    except UnicodeDecodeError as err:
        raise ManifestError(f"{path}: not UTF-8 text ({err}); save the manifest as UTF-8 CSV") from err
    except OSError as err:
        raise ManifestError(f"cannot read manifest {path}: {err.strerror or err}") from err
    if not rows or "slide" not in rows[0]:
        raise PathM3Error(f"{path}: a manifest needs a 'slide' column (optional: slide_id, mpp)")
    jobs = []
    for i, row in enumerate(rows, start=2):
        raw = (row.get("slide") or "").strip()
        if not raw:
            raise PathM3Error(f"{path}:{i}: empty 'slide'")
        slide = Path(raw).expanduser()
        slide = slide if slide.is_absolute() else path.parent / slide
        mpp_text = (row.get("mpp") or "").strip()
        try:  # the same range as --mpp: a negative, NaN or absurd value fails here, not per slide later
            mpp = bounded(mpp_text, name="mpp", kind=float, gt=0, le=1000) if mpp_text else None
        except ValueError as err:
            raise ManifestError(f"{path}:{i}: {err}") from err
        jobs.append(SlideJob(str(slide), (row.get("slide_id") or "").strip() or slide_id_for(slide), mpp))
    return _check_unique(jobs)


def _check_unique(jobs: list[SlideJob]) -> list[SlideJob]:
    from collections import Counter

    dup = sorted(k for k, c in Counter(j.slide_id for j in jobs).items() if c > 1)
    if dup:
        raise PathM3Error(f"duplicate slide ids {dup}: give each slide a unique slide_id in the manifest")
    return jobs


def extract_one(
    job: SlideJob, opts: _Options, *, progress: ProgressFn | None = None, cancel: CancelToken | None = None
) -> ExtractResult:
    """Open, tile and encode one slide into the store; failures come back as ``ok=False`` (not raised)."""
    from ..io.slide import open_slide
    from ..tiling import make_grid
    from .encoders import cached_encoder
    from .extract import extract_features

    t0 = time.perf_counter()
    store_path = FeatureStore(opts.store).path_for(job.slide_id)
    try:
        encoder = cached_encoder(opts.encoder, opts.device) if isinstance(opts.encoder, str) else opts.encoder
        with open_slide(job.slide, mpp=job.mpp) as slide:
            grid = make_grid(slide, opts.tiling)
            bag = extract_features(
                slide,
                grid,
                encoder,
                store=store_path,
                slide_id=job.slide_id,
                batch_size=opts.batch_size,
                num_workers=opts.num_workers,
                device=opts.device,
                dtype=opts.dtype,
                overwrite=opts.overwrite,
                progress=progress,
                cancel=cancel,
            )
    except Cancelled:
        raise
    except Exception as err:  # one bad slide must not stop the batch: report it
        log.debug("%s failed:\n%s", job.slide, traceback.format_exc())
        msg = str(err) if isinstance(err, PathM3Error) else f"{type(err).__name__}: {err}"
        return ExtractResult(job.slide_id, job.slide, False, error=msg, seconds=time.perf_counter() - t0)
    return ExtractResult(
        job.slide_id,
        job.slide,
        True,
        n_patches=len(bag),
        dim=bag.dim,
        store_path=str(store_path),
        seconds=time.perf_counter() - t0,
    )


def extract_many(
    jobs: Sequence[SlideJob | PathLike],
    encoder: Any,
    store: PathLike,
    *,
    tiling: TilingConfig | None = None,
    batch_size: int = 64,
    num_workers: int | None = None,
    device: str = "auto",
    dtype: str = "float32",
    overwrite: bool = False,
    scheduler: str | None = None,
    workers: int | None = None,
    processes: bool = True,
    progress: ProgressFn | None = None,
    patch_progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> list[ExtractResult]:
    """Extract features of many slides into ``FeatureStore(store)``.

    Args:
        jobs: :class:`SlideJob` records (see :func:`read_manifest`) or slide paths.
        encoder: registry name (a :class:`FrozenEncoder` works only without a cluster).
        store: root folder of the :class:`~napari_pathm3.io.feature_store.FeatureStore`.
        tiling: patch grid settings (default :class:`TilingConfig`).
        scheduler: dask.distributed scheduler address: one task per slide on that cluster.
        workers: without ``scheduler``, start a local dask cluster with this many workers (``None``: run
            the slides one after another in this process).
        processes: local cluster workers as processes (``False``: threads in this process).
        progress: a ``Stage.SLIDES`` event (slides done of all) after each slide.
        patch_progress: progress within a slide, the slide id as the event's ``detail`` (in-process runs only).
        cancel: stop after the current slide (in-process) or cancel pending tasks (cluster).

    Returns:
        One :class:`ExtractResult` per job, in job order.
    """
    slide_jobs = [j if isinstance(j, SlideJob) else jobs_from_paths([j])[0] for j in jobs]
    _check_unique(list(slide_jobs))
    opts = _Options(
        encoder=encoder,
        store=str(Path(store).expanduser()),
        tiling=tiling or TilingConfig(),
        batch_size=batch_size,
        num_workers=num_workers,
        device=device,
        dtype=dtype,
        overwrite=overwrite,
    )
    Path(opts.store).mkdir(parents=True, exist_ok=True)
    total = len(slide_jobs)
    report(progress, 0, total, "slides")
    if scheduler is None and workers is None:
        from ..threads import apply_thread_policy

        apply_thread_policy()  # in this process: torch and reader threads from one budget
        if isinstance(encoder, str):  # a bad encoder name fails once, up front, not once per slide
            from .encoders import cached_encoder

            cached_encoder(encoder, device)
        results = []
        for job in slide_jobs:
            check_cancel(cancel)
            cb = None
            if patch_progress is not None:
                cb = lambda e, sid=job.slide_id: patch_progress(dataclasses.replace(e, detail=sid))  # noqa: E731
            results.append(extract_one(job, opts, progress=cb, cancel=cancel))
            report(progress, len(results), total, "slides")
        return results
    if not isinstance(encoder, str):
        raise PathM3Error(
            "a dask cluster needs the encoder as a registry name (e.g. 'hf:owkin/phikon'), not an object"
        )
    from .encoders import canonical_name

    canonical_name(encoder)  # syntax check here; the workers load the weights
    return _run_on_cluster(
        slide_jobs,
        opts,
        scheduler=scheduler,
        workers=workers,
        processes=processes,
        progress=progress,
        cancel=cancel,
    )


def _run_on_cluster(
    jobs: list[SlideJob],
    opts: _Options,
    *,
    scheduler: str | None,
    workers: int | None,
    processes: bool,
    progress: ProgressFn | None,
    cancel: CancelToken | None,
) -> list[ExtractResult]:
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError as err:
        raise PathM3Error(
            "--scheduler/--workers need dask.distributed: pip install 'napari-pathm3[distributed]'"
        ) from err
    if scheduler is not None:
        client, cluster = Client(scheduler), None
    else:
        from ..threads import ENV_VAR, current_policy

        # one thread per worker: each task already uses threads for reading and torch for encoding; worker
        # processes split this process's thread budget, so n workers never start n x cores threads
        n = max(1, workers or 1)
        extra = {"env": {ENV_VAR: str(max(1, current_policy().threads // n))}} if processes else {}
        cluster = LocalCluster(
            n_workers=n, threads_per_worker=1, processes=processes, dashboard_address=None, **extra
        )
        client = Client(cluster)
    by_key: dict[object, int] = {}  # dask future keys
    results: list[ExtractResult | None] = [None] * len(jobs)
    try:
        futures = []
        for i, job in enumerate(jobs):
            fut = client.submit(
                extract_one, job, opts, key=f"pathm3-extract-{i}-{time.time_ns()}", pure=False
            )
            by_key[fut.key] = i
            futures.append(fut)
        done = 0
        for fut in as_completed(futures):
            i = by_key[fut.key]
            try:
                results[i] = fut.result()
            except Exception as err:  # worker died, unpicklable error...: still one slide's failure
                job = jobs[i]
                results[i] = ExtractResult(
                    job.slide_id, job.slide, False, error=f"{type(err).__name__}: {err}"
                )
            done += 1
            report(progress, done, len(jobs), "slides")
            if cancel is not None and cancel.is_set():
                client.cancel(futures)
                raise Cancelled("cancelled by the user")
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return [
        r if r is not None else ExtractResult(j.slide_id, j.slide, False, error="not run")
        for r, j in zip(results, jobs, strict=True)
    ]


def summarize(results: Sequence[ExtractResult]) -> str:
    """One line per failure plus totals (for the CLI)."""
    ok = [r for r in results if r.ok]
    failed = [r for r in results if not r.ok]
    lines = [f"{len(ok)} of {len(results)} slides extracted ({sum(r.n_patches for r in ok)} patches)"]
    lines += [f"FAILED {r.slide_id} ({r.slide}): {r.error}" for r in failed]
    return "\n".join(lines)


__all__ = [
    "ExtractResult",
    "SlideJob",
    "extract_many",
    "extract_one",
    "jobs_from_paths",
    "read_manifest",
    "summarize",
]
