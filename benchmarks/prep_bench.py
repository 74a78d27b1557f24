"""Data-preparation benchmarks: chipping, mosaicking and rasterizing on generated data.

    python benchmarks/prep_bench.py chip       # 16384x16384x4 uint16 scene -> 512 px chips
    python benchmarks/prep_bench.py mosaic     # 64 tiles -> one GeoTIFF, vs rasterio.merge.merge
    python benchmarks/prep_bench.py rasterize  # 100,000 polygons onto a 10000x10000 grid

Each measured case runs in a fresh process (so its peak RSS is its own) and prints one JSON line;
the summary compares terraseg with the plain-rasterio way of doing the same job. Generated inputs
go to --work (default /tmp/terraseg-bench) and are reused between runs.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _scene(work: Path, size: int) -> Path:
    """A tiled, uncompressed 4-band uint16 GeoTIFF with smooth content, written block by block."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    path = work / f"scene_{size}.tif"
    if path.exists():
        return path
    tmp = path.with_suffix(".part.tif")
    prof = dict(
        driver="GTiff",
        width=size,
        height=size,
        count=4,
        dtype="uint16",
        crs="EPSG:32618",
        nodata=0,
        tiled=True,
        blockxsize=512,
        blockysize=512,
        BIGTIFF="YES",
        transform=from_origin(500000, 5000000, 0.5, 0.5),
    )
    rng = np.random.default_rng(0)
    with rasterio.open(tmp, "w", **prof) as dst:
        for r in range(0, size, 2048):
            block = rng.integers(100, 4000, size=(4, 2048, size), dtype=np.uint16)
            dst.write(block, window=Window(0, r, size, 2048))
    tmp.rename(path)
    return path


def case_chip(args) -> dict:
    from terraseg.config.prep import ChipConfig
    from terraseg.prepare.chip import chip

    scene = _scene(Path(args.work), args.size)
    out = Path(args.out or args.work) / "chips"
    r = chip(
        ChipConfig(
            images=[str(scene)], out_dir=str(out), size=512, compress=args.compress, workers=args.workers or None, max_nodata=1.0
        )
    )
    return {
        "case": f"terraseg chip (compress={args.compress}, workers={args.workers})",
        "seconds": r.seconds,
        "mb_per_s": r.mb_per_second,
        "chips": r.written,
        "peak_rss_mb": _rss_mb(),
    }


def case_rasterio_read(args) -> dict:
    """Plain rasterio: read the same 512 px windows in a loop (boundless at the edges), nothing written."""
    import rasterio
    from rasterio.windows import Window

    scene = _scene(Path(args.work), args.size)
    t0 = time.perf_counter()
    n = 0
    with rasterio.open(scene) as ds:
        for r in range(0, ds.height, 512):
            for c in range(0, ds.width, 512):
                ds.read(window=Window(c, r, 512, 512), boundless=True, fill_value=0)
                n += 1
    dt = time.perf_counter() - t0
    return {
        "case": "rasterio read loop",
        "seconds": dt,
        "mb_per_s": args.size**2 * 8 / 1e6 / dt,
        "chips": n,
        "peak_rss_mb": _rss_mb(),
    }


def case_rasterio_read_write(args) -> dict:
    """Plain rasterio: read each window and write it as a GeoTIFF chip (the script terraseg replaces)."""
    import rasterio
    from rasterio.windows import Window

    scene = _scene(Path(args.work), args.size)
    out = Path(args.out or args.work) / "chips_plain"
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    n = 0
    with rasterio.open(scene) as ds:
        prof = dict(
            driver="GTiff",
            width=512,
            height=512,
            count=4,
            dtype="uint16",
            crs=ds.crs,
            nodata=0,
            tiled=True,
            blockxsize=256,
            blockysize=256,
        )
        for r in range(0, ds.height, 512):
            for c in range(0, ds.width, 512):
                w = Window(c, r, 512, 512)
                data = ds.read(window=w, boundless=True, fill_value=0)
                with rasterio.open(out / f"{r}_{c}.tif", "w", transform=ds.window_transform(w), **prof) as dst:
                    dst.write(data)
                n += 1
    dt = time.perf_counter() - t0
    return {
        "case": "rasterio read+write loop",
        "seconds": dt,
        "mb_per_s": args.size**2 * 8 / 1e6 / dt,
        "chips": n,
        "peak_rss_mb": _rss_mb(),
    }


def _tiles(work: Path, n_side: int = 8, tile: int = 1024) -> list[str]:
    import rasterio
    from rasterio.transform import from_origin

    folder = work / "tiles"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    paths = []
    step = tile - 64  # neighbouring tiles overlap by 64 px
    for i in range(n_side):
        for j in range(n_side):
            p = folder / f"t_{i}_{j}.tif"
            if not p.exists():
                data = rng.integers(1, 255, size=(3, tile, tile), dtype=np.uint8)
                with rasterio.open(
                    p,
                    "w",
                    driver="GTiff",
                    width=tile,
                    height=tile,
                    count=3,
                    dtype="uint8",
                    crs="EPSG:32618",
                    nodata=0,
                    tiled=True,
                    blockxsize=256,
                    blockysize=256,
                    transform=from_origin(500000 + j * step, 5000000 - i * step, 1, 1),
                ) as d:
                    d.write(data)
            paths.append(str(p))
    return paths


def case_mosaic(args) -> dict:
    from terraseg.config.prep import MosaicConfig
    from terraseg.prepare.mosaic import mosaic

    tiles = _tiles(Path(args.work))
    t0 = time.perf_counter()
    r = mosaic(MosaicConfig(inputs=tiles, out=str(Path(args.work) / "mosaic_terraseg.tif"), compress="none"))
    return {
        "case": "terraseg mosaic",
        "seconds": time.perf_counter() - t0,
        "size": f"{r.width}x{r.height}",
        "peak_rss_mb": _rss_mb(),
    }


def case_merge(args) -> dict:
    import rasterio
    from rasterio.merge import merge

    tiles = _tiles(Path(args.work))
    t0 = time.perf_counter()
    arr, tr = merge(tiles)
    with rasterio.open(
        Path(args.work) / "mosaic_rasterio.tif",
        "w",
        driver="GTiff",
        width=arr.shape[2],
        height=arr.shape[1],
        count=3,
        dtype="uint8",
        crs="EPSG:32618",
        transform=tr,
        nodata=0,
        tiled=True,
    ) as d:
        d.write(arr)
    return {
        "case": "rasterio.merge.merge + write",
        "seconds": time.perf_counter() - t0,
        "size": f"{arr.shape[2]}x{arr.shape[1]}",
        "peak_rss_mb": _rss_mb(),
    }


def case_rasterize(args) -> dict:
    import geopandas as gpd
    import rasterio
    from rasterio.transform import from_origin
    from shapely import box

    from terraseg.config.prep import LabelOptions, RasterizeConfig
    from terraseg.prepare.rasterize import rasterize_labels

    work = Path(args.work)
    ref, vec = work / "grid_10000.tif", work / "polys_100k.gpkg"
    if not ref.exists():  # an empty (sparse) 10000x10000 grid, 1 m pixels
        with rasterio.open(
            ref,
            "w",
            driver="GTiff",
            width=10000,
            height=10000,
            count=1,
            dtype="uint8",
            crs="EPSG:32618",
            tiled=True,
            sparse_ok=True,
            transform=from_origin(500000, 5010000, 1, 1),
        ):
            pass
    if not vec.exists():
        rng = np.random.default_rng(2)
        x = 500000 + rng.uniform(0, 9980, 100_000)
        y = 5000000 + rng.uniform(0, 9980, 100_000)
        s = rng.uniform(4, 20, 100_000)
        geoms = box(x, y, x + s, y + s * rng.uniform(0.5, 1.5, 100_000))
        gpd.GeoDataFrame({"cls": rng.integers(1, 4, 100_000)}, geometry=geoms, crs="EPSG:32618").to_file(vec)
    t0 = time.perf_counter()
    rasterize_labels(
        RasterizeConfig(vector=LabelOptions(path=str(vec), attribute="cls"), reference=str(ref), out=str(work / "mask_10000.tif"))
    )
    return {
        "case": "terraseg rasterize 100k polygons -> 10000x10000",
        "seconds": time.perf_counter() - t0,
        "peak_rss_mb": _rss_mb(),
    }


CASES = {
    "chip": ["chip", "rasterio_read", "rasterio_read_write"],
    "mosaic": ["mosaic", "merge"],
    "rasterize": ["rasterize"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bench", choices=sorted(CASES))
    ap.add_argument("--work", default="/tmp/terraseg-bench")
    ap.add_argument("--size", type=int, default=16384, help="chip: scene side in pixels")
    ap.add_argument("--compress", default="none")
    ap.add_argument("--workers", type=int, default=0, help="chip threads (0: terraseg's default, cores + 1)")
    ap.add_argument("--out", help="chip: folder for the chips (default --work), e.g. /dev/shm to leave the disk out")
    ap.add_argument("--case", help=argparse.SUPPRESS)
    args = ap.parse_args()
    Path(args.work).mkdir(parents=True, exist_ok=True)
    if args.case:
        print(json.dumps(globals()[f"case_{args.case}"](args)))
        return
    results = []
    for case in CASES[args.bench]:
        cmd = [
            sys.executable,
            __file__,
            args.bench,
            "--case",
            case,
            "--work",
            args.work,
            "--size",
            str(args.size),
            "--compress",
            args.compress,
            "--workers",
            str(args.workers),
        ] + (["--out", args.out] if args.out else [])
        line = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        results.append(json.loads(line))
        print(line, flush=True)
    if args.bench == "chip":
        ours, read, rw = results
        print(
            f"chip / read-only loop throughput ratio: {ours['mb_per_s'] / read['mb_per_s']:.2f}; "
            f"chip / read+write loop: {ours['mb_per_s'] / rw['mb_per_s']:.2f}; terraseg peak RSS {ours['peak_rss_mb']:.0f} MB"
        )
    elif args.bench == "mosaic":
        ours, ref = results
        print(
            f"mosaic: terraseg {ours['seconds']:.1f} s / {ours['peak_rss_mb']:.0f} MB, rasterio.merge {ref['seconds']:.1f} s / "
            f"{ref['peak_rss_mb']:.0f} MB"
        )


if __name__ == "__main__":
    main()
