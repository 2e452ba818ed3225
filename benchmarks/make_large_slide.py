"""Write a large synthetic whole-slide image for the benchmarks, in bounded memory.

The slide is a pyramidal, JPEG-tiled BigTIFF (level 0 plus 2x-downsampled levels down to ~1k px, each
level a reduced-resolution page, as OpenSlide's generic-tiff driver and tiffslide expect) with real
resolution tags (default 0.5 µm/px, 20x). Content is procedural "tissue on white": a few large tissue
sections with ragged borders and holes, H&E-like pink stroma with purple nuclei and stain variation.

Nothing ever holds a level: every tile is rendered on its own from a small (1/32 scale) tissue map and a
bank of texture tiles made for that level, so memory stays at tens of MB for any slide size. Tiles are
rendered in worker threads and handed to ``tifffile.TiffWriter.write(data=iterator, shape=..., tile=...)``,
which JPEG-encodes them in threads.

    python benchmarks/make_large_slide.py [--width 60000 --height 40000 --mpp 0.5] [--out PATH] [--force]

Prints the path. The file is cached under ``tmp/benchmarks/`` (``NAPARI_PATHM3_BENCH_DIR``), never
committed; it is reused while the parameters are the same.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCH_DIR  # noqa: E402

#: level-0 pixels per cell of the tissue map: 16 µm at 0.5 µm/px, finer than any tissue outline we draw
MAP_SCALE = 32
BACKGROUND = 244  # glass is slightly off-white in real scans
NUCLEUS_RADIUS = 6.0  # level-0 px (~6 µm diameter at 0.5 µm/px)
NUCLEUS_DENSITY = 1 / 500  # nuclei per level-0 px²: ~30% of stroma area is nuclei
STAINS = 4  # stain-intensity classes; the low-frequency stain map picks one per tile
VARIANTS = 3  # texture variants per stain class, picked per tile by a hash


def default_path(width: int, height: int, mpp: float, tile: int, quality: int, seed: int) -> Path:
    return BENCH_DIR / f"large_{width}x{height}_mpp{mpp:g}_t{tile}_q{quality}_s{seed}.tif"


def level_sizes(width: int, height: int, tile: int) -> list[tuple[int, int]]:
    """(width, height) of every level: halve until the long side fits in ~4 tiles."""
    sizes = [(width, height)]
    while max(sizes[-1]) > 4 * tile and min(sizes[-1]) >= 2 * tile:
        w, h = sizes[-1]
        sizes.append((w // 2, h // 2))
    return sizes


def _smooth_noise(
    rng: np.random.Generator, shape: tuple[int, int], sigma: float | tuple[float, float]
) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    n = gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="wrap")
    return n / (n.std() + 1e-6)


def tissue_maps(width: int, height: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(tissue, stain)`` maps at 1/MAP_SCALE: tissue > 0.5 is tissue; stain in [0, 1) picks the stain class."""
    rng = np.random.default_rng(seed)
    mh, mw = height // MAP_SCALE + 3, width // MAP_SCALE + 3
    yy, xx = np.mgrid[0:mh, 0:mw].astype(np.float32)
    unit = min(mh, mw)
    field = np.zeros((mh, mw), np.float32)
    n_sections = 3 + int(rng.integers(0, 3))
    for _ in range(n_sections):  # tissue sections: rotated ellipses
        cx, cy = rng.uniform(0.2, 0.8) * mw, rng.uniform(0.2, 0.8) * mh
        rx, ry = rng.uniform(0.12, 0.3) * unit, rng.uniform(0.08, 0.22) * unit
        a = rng.uniform(0, np.pi)
        u = ((xx - cx) * np.cos(a) + (yy - cy) * np.sin(a)) / rx
        v = (-(xx - cx) * np.sin(a) + (yy - cy) * np.cos(a)) / ry
        field = np.maximum(field, 1.0 - (u * u + v * v))
    field += 0.25 * _smooth_noise(rng, (mh, mw), unit / 12)  # wobbly outlines
    field += 0.12 * _smooth_noise(rng, (mh, mw), 2.0)  # ragged borders, small holes and islands
    holes = _smooth_noise(rng, (mh, mw), 6.0) > 2.2  # lumens / tears
    field[holes] -= 0.6
    stain = _smooth_noise(rng, (mh, mw), unit / 8)
    stain = np.clip(0.5 + 0.3 * stain, 0.0, 0.999)
    return field.astype(np.float32), stain.astype(np.float32)


def texture_bank(level_downsample: float, tile: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(textures, edge_noise)`` for one level: ``(STAINS, VARIANTS, tile, tile, 3)`` uint8 H&E-like
    tissue and ``(VARIANTS, tile, tile)`` float32 fine noise that roughens tissue borders."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed + 1000 * int(np.log2(level_downsample)))
    d = level_downsample
    r = NUCLEUS_RADIUS / d  # nucleus radius in this level's pixels
    sigma = max(0.6 * r, 0.5)
    coverage_gain = 2.0 if r >= 2 else 1.0  # big nuclei: saturate their cores; sub-pixel: average colour
    eosin = np.array([236, 150, 196], np.float32)  # pink stroma
    eosin_pale = np.array([246, 206, 226], np.float32)
    hema = np.array([92, 58, 150], np.float32)  # purple nuclei
    tex = np.empty((STAINS, VARIANTS, tile, tile, 3), np.uint8)
    edge = np.empty((VARIANTS, tile, tile), np.float32)
    for v in range(VARIANTS):
        lam = NUCLEUS_DENSITY * d * d
        points = rng.poisson(lam, (tile, tile)).astype(np.float32)
        nuclei = gaussian_filter(points, sigma, mode="wrap") * (np.pi * max(r, 0.3) ** 2) * coverage_gain
        nuclei = np.clip(nuclei, 0, 1)
        fibres = _smooth_noise(rng, (tile, tile), (max(0.8, 1.5 / d), max(1.5, 10.0 / d)))  # stroma streaks
        fibres = np.clip(0.5 + 0.25 * fibres, 0, 1)
        grain = rng.normal(0, 5, (tile, tile, 1)).astype(np.float32)
        edge[v] = 0.05 * _smooth_noise(rng, (tile, tile), max(1.0, 4.0 / d))
        for s in range(STAINS):
            strength = 0.55 + 0.15 * s  # paler to stronger eosin
            stroma = eosin_pale + (eosin - eosin_pale) * (strength * fibres)[..., None]
            rgb = stroma + (hema - stroma) * nuclei[..., None] + grain
            tex[s, v] = np.clip(rgb, 0, 255).astype(np.uint8)
    return tex, edge


class TileRenderer:
    """Renders tile ``(tx, ty)`` of level ``level`` from the tissue maps and the level's texture bank."""

    def __init__(self, width: int, height: int, tile: int, seed: int) -> None:
        self.tile, self.seed = tile, seed
        self.tissue, self.stain = tissue_maps(width, height, seed)
        self._banks: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.white = np.full((tile, tile, 3), BACKGROUND, np.uint8)

    def bank(self, level: int) -> tuple[np.ndarray, np.ndarray]:
        if level not in self._banks:
            self._banks[level] = texture_bank(2.0**level, self.tile, self.seed)
        return self._banks[level]

    def _sample(self, m: np.ndarray, x0: float, y0: float, d: float) -> np.ndarray:
        """Bilinear sample of map ``m`` at the centres of a tile whose corner is level-0 ``(x0, y0)``."""
        t = self.tile
        pos = (np.arange(t, dtype=np.float32) + 0.5) * d
        fy = (y0 + pos) / MAP_SCALE - 0.5
        fx = (x0 + pos) / MAP_SCALE - 0.5
        r0 = np.clip(np.floor(fy).astype(np.int64), 0, m.shape[0] - 2)
        c0 = np.clip(np.floor(fx).astype(np.int64), 0, m.shape[1] - 2)
        wy = np.clip(fy - r0, 0, 1)[:, None]
        wx = np.clip(fx - c0, 0, 1)[None, :]
        ra, ca = int(r0[0]), int(c0[0])
        m = m[ra : int(r0[-1]) + 2, ca : int(c0[-1]) + 2]  # only the cells under the tile
        r0, c0 = r0 - ra, c0 - ca
        rows = m[r0] * (1 - wy) + m[r0 + 1] * wy  # (t, cells)
        return rows[:, c0] * (1 - wx) + rows[:, c0 + 1] * wx

    def render(self, level: int, tx: int, ty: int) -> np.ndarray:
        t, d = self.tile, 2.0**level
        x0, y0 = tx * t * d, ty * t * d
        # cheap rejection from the map cells under the tile (edge noise is at most ~0.4)
        c0, c1 = int(x0 // MAP_SCALE), int((x0 + t * d) // MAP_SCALE) + 2
        r0, r1 = int(y0 // MAP_SCALE), int((y0 + t * d) // MAP_SCALE) + 2
        cells = self.tissue[r0:r1, c0:c1]
        if cells.size == 0 or cells.max() < 0.5 - 0.45:
            return self.white
        tex, edge = self.bank(level)
        h = (tx * 73856093) ^ (ty * 19349663) ^ (level * 83492791)
        variant = h % VARIANTS
        cy, cx = min((r0 + r1) // 2, self.stain.shape[0] - 1), min((c0 + c1) // 2, self.stain.shape[1] - 1)
        stain = int(self.stain[cy, cx] * STAINS)
        texture = tex[stain, variant]
        if (h >> 4) & 1:  # flips make 3 variants look like 12
            texture = texture[::-1]
        if (h >> 5) & 1:
            texture = texture[:, ::-1]
        if cells.min() > 0.5 + 0.45:
            return np.ascontiguousarray(texture)
        outside = self._sample(self.tissue, x0, y0, d) + edge[(h >> 6) % VARIANTS] <= 0.5
        out = texture.copy()  # C-contiguous, never a view of the bank
        out[outside] = BACKGROUND
        return out


def _tiles(renderer: TileRenderer, level: int, size: tuple[int, int], workers: int) -> Iterator[np.ndarray]:
    """Tiles of one level in row-major order, rendered ``workers`` at a time with bounded look-ahead."""
    t = renderer.tile
    nx, ny = -(-size[0] // t), -(-size[1] // t)
    renderer.bank(level)  # build the bank once, before threads race for it
    coords = ((tx, ty) for ty in range(ny) for tx in range(nx))
    with ThreadPoolExecutor(workers, thread_name_prefix="render") as pool:
        pending: deque[Future[np.ndarray]] = deque()
        for tx, ty in coords:
            pending.append(pool.submit(renderer.render, level, tx, ty))
            if len(pending) >= 8 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def write_slide(
    path: Path,
    *,
    width: int = 60_000,
    height: int = 40_000,
    mpp: float = 0.5,
    tile: int = 256,
    quality: int = 80,
    seed: int = 0,
    workers: int | None = None,
    progress: bool = False,
) -> Path:
    """Write the synthetic slide to ``path`` (atomically: a temporary file, then ``os.replace``)."""
    import tifffile

    workers = workers or max(1, os.cpu_count() or 1)
    renderer = TileRenderer(width, height, tile, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.part")
    sizes = level_sizes(width, height, tile)
    try:
        with tifffile.TiffWriter(tmp, bigtiff=True) as tif:
            for level, (w, h) in enumerate(sizes):
                t0 = time.perf_counter()
                level_mpp = mpp * 2.0**level
                tif.write(
                    data=_tiles(renderer, level, (w, h), workers),
                    shape=(h, w, 3),
                    dtype=np.uint8,
                    tile=(tile, tile),
                    photometric="rgb",
                    compression="jpeg",
                    compressionargs={"level": quality},
                    resolution=(1e4 / level_mpp, 1e4 / level_mpp),
                    resolutionunit="CENTIMETER",
                    subfiletype=1 if level else 0,
                    description=f"napari-pathm3 synthetic benchmark slide, level {level}"
                    if level
                    else f"napari-pathm3 synthetic benchmark slide {width}x{height} mpp={mpp}",
                    metadata=None,
                    maxworkers=workers,
                    buffersize=64 << 20,  # tiles are encoded in groups of at most 64 MB
                )
                if progress:
                    print(f"level {level}: {w}x{h} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def large_slide(
    *,
    width: int = 60_000,
    height: int = 40_000,
    mpp: float = 0.5,
    tile: int = 256,
    quality: int = 80,
    seed: int = 0,
    out: Path | None = None,
    force: bool = False,
    progress: bool = False,
) -> Path:
    """Path of the cached synthetic slide with these parameters, writing it first when missing."""
    path = out or default_path(width, height, mpp, tile, quality, seed)
    if force or not path.exists():
        write_slide(
            path,
            width=width,
            height=height,
            mpp=mpp,
            tile=tile,
            quality=quality,
            seed=seed,
            progress=progress,
        )
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--width", type=int, default=60_000)
    ap.add_argument("--height", type=int, default=40_000)
    ap.add_argument("--mpp", type=float, default=0.5)
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--quality", type=int, default=80)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--force", action="store_true", help="rewrite even when the cached file exists")
    args = ap.parse_args()
    t = time.perf_counter()
    path = large_slide(
        width=args.width,
        height=args.height,
        mpp=args.mpp,
        tile=args.tile,
        quality=args.quality,
        seed=args.seed,
        out=args.out,
        force=args.force,
        progress=True,
    )
    print(f"{path} ({path.stat().st_size / 2**20:.0f} MiB, {time.perf_counter() - t:.1f} s)", file=sys.stderr)
    print(path)


if __name__ == "__main__":
    main()
