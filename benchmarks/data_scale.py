"""Training data at project scale: start-up, memory and loader speed for 10, 100 and 1,000 scenes and one labels file.

Generates a project: N tiled, DEFLATE-compressed 512^2 3-band uint8 GeoTIFFs (EPSG:32618, side by side)
and one GeoPackage with about 1,000 squares per scene (so 1 million polygons for 1,000 scenes). Then, in a
fresh process per case:

* terraseg: a ``kind: project`` source (header index + labels read once), the hold-out, and the training
  loader (``RandomWindowDataset`` + ``DataLoader``, raw windows of 128^2 with a quarter centred on a
  building) with ``data.cache_mb`` as the memory budget. Printed: start-up seconds (sources to first
  batch), peak RSS of the main process and of each loader worker, windows/s, and the index: the
  header GeoParquet plus the labels read once with their spatial index (the RSS they add, measured
  on loading them), and the peak RSS without it. Windows/s are timed over ``--windows`` windows (the median rate of five
  equal parts of them) after a first pass that warms the caches, as a first epoch does (``--warm`` windows, by default 4 per
  scene). When the scenes exceed ``--cache-mb``, start-up includes what training does before its first
  epoch: decoding each scene once into the run's spill store on local disk (``data.spill_mb``), from
  which windows are then read.
* TorchGeo 0.8.1 (installed with ``pip install --target --no-deps`` as ``peer_compare.py`` does):
  ``RasterDataset & VectorDataset`` sampled with ``RandomGeoSampler`` (128 px windows), the
  documented pattern. Same figures, over ``--peer-windows`` windows after a first pass of as many (it
  has no cache to warm beyond GDAL's, and 4 windows per scene would take it hours).

Run it with nothing else on the CPU.

Example:
    .venv/bin/python benchmarks/data_scale.py --scenes 10 100 1000 --windows 4096
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peer_compare import PEERS  # noqa: E402

from terraseg.devices import cpu_model  # noqa: E402

SIZE, RES = 512, 0.5


def make_project(folder: Path, n: int, polys_per_scene: int = 1000, seed: int = 0) -> tuple[Path, Path]:
    """N GeoTIFFs side by side and one GeoPackage of squares over them; returns (scene folder, labels file)."""
    import geopandas as gpd
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin
    from shapely import box

    rng = np.random.default_rng(seed)
    scenes = folder / "scenes"
    scenes.mkdir(parents=True, exist_ok=True)
    base = rng.integers(0, 200, (3, SIZE // 8, SIZE // 8), dtype=np.uint8).repeat(8, 1).repeat(8, 2)
    xs, ys, ss = [], [], []
    side = int(np.ceil(np.sqrt(n)))
    for i in range(n):
        x0, y0 = 500000.0 + (i % side) * SIZE * RES, 4500000.0 - (i // side) * SIZE * RES
        with rasterio.open(
            scenes / f"s{i:04d}.tif",
            "w",
            driver="GTiff",
            width=SIZE,
            height=SIZE,
            count=3,
            dtype="uint8",
            crs="EPSG:32618",
            transform=from_origin(x0, y0, RES, RES),
            tiled=True,
            compress="deflate",
        ) as d:
            d.write(np.roll(base, i, axis=2))
        xs.append(x0 + rng.uniform(0, SIZE * RES - 8, polys_per_scene))
        ys.append(y0 - rng.uniform(8, SIZE * RES, polys_per_scene))
        ss.append(rng.uniform(2, 8, polys_per_scene))
    x, y, s = np.concatenate(xs), np.concatenate(ys), np.concatenate(ss)
    gdf = gpd.GeoDataFrame({"cls": np.ones(len(x), np.int32)}, geometry=box(x, y, x + s, y + s), crs="EPSG:32618")
    labels = folder / "buildings.gpkg"
    gdf.to_file(labels, engine="pyogrio")
    return scenes, labels


# the first batch (start-up ends there), then the loader's windows/s and the workers' memory
TIMING = r"""
it = iter(dl)
next(it)
startup = time.perf_counter() - t0 - t_import
n, marks = 16, []
chunk = max(windows // 5, 16)
for b in it:
    n += b["image"].shape[0]
    if n >= 16 + warm and (not marks or n - marks[-1][0] >= chunk):  # the first pass warms the caches, as a first epoch does
        marks.append((n, time.perf_counter()))
marks.append((n, time.perf_counter()))
# windows/s: the median over five parts of the timed pass (a shared machine's bursts of other work move one part, not all)
rates = sorted((b[0] - a[0]) / max(b[1] - a[1], 1e-9) for a, b in zip(marks, marks[1:]) if b[0] > a[0])
rate = rates[len(rates) // 2] if rates else float("nan")
kids, kids_uss = [], []
if workers:
    import psutil
    procs = psutil.Process().children(recursive=True)
    kids = [p.memory_info().rss / 2**20 for p in procs]
    kids_uss = [p.memory_full_info().uss / 2**20 for p in procs]  # pages only this worker holds (not the shared ones)
"""

TERRASEG_CHILD = (
    r"""
import json, os, sys, time
t0 = time.perf_counter()
import numpy as np, torch
from torch.utils.data import DataLoader
from terraseg.config import DataConfig, ProjectSource
from terraseg.io.cache import configure, peak_rss_mb
from terraseg.data.datasets import EpochSampler, RandomWindowDataset, collate_samples
from terraseg.data.sources import split_scenes
scenes, labels, windows, workers, cache_mb, index = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), sys.argv[6]
warm, spill_mb = int(sys.argv[7]), float(sys.argv[8])
configure(cache_mb, spill_mb)
import psutil, geopandas, pyogrio, shapely
from terraseg.io.vector import SharedLabels
rss0 = psutil.Process().memory_info().rss
SharedLabels.get(labels)  # the labels index (read once, spatially indexed): its memory is reported apart
labels_mb = (psutil.Process().memory_info().rss - rss0) / 2**20
cfg = DataConfig(train=[ProjectSource(images=[scenes], vector={"path": labels}, index=index)], window=128)
t_import = time.perf_counter() - t0
split = split_scenes(cfg, 255, 2, 0, ["background", "building"])
ds = RandomWindowDataset(split.train, 128, warm + windows + 16, None, 0.25, 0)
t_stage = time.perf_counter()
staged = ds.stage()  # as training does before its first epoch
t_stage = time.perf_counter() - t_stage
dl = DataLoader(ds, batch_size=16, sampler=EpochSampler(len(ds)), num_workers=workers, collate_fn=collate_samples,
                persistent_workers=workers > 0)
"""
    + TIMING
    + r"""print(json.dumps({"startup_s": startup, "import_s": t_import, "windows_per_s": rate,
                  "main_peak_mb": peak_rss_mb(), "worker_rss_mb": kids, "worker_uss_mb": kids_uss,
                  "index_mb": os.path.getsize(index) / 2**20 + labels_mb, "labels_mb": labels_mb, "train_scenes": len(split.train), "val_scenes": len(split.val), "staged": staged, "stage_s": t_stage,
                  "spill": __import__("terraseg.io.cache", fromlist=["SPILL"]).SPILL.report()}))
"""
)

TORCHGEO_CHILD = (
    r"""
import json, sys, time
t0 = time.perf_counter()
import torch
from torch.utils.data import DataLoader
from terraseg.io.cache import peak_rss_mb
from torchgeo.datasets import RasterDataset, VectorDataset, stack_samples
from torchgeo.samplers import RandomGeoSampler
scenes, labels, windows, workers, warm = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
t_import = time.perf_counter() - t0
class Scenes(RasterDataset):
    filename_glob = "s*.tif"
class Buildings(VectorDataset):
    filename_glob = "buildings.gpkg"
ds = Scenes(paths=scenes) & Buildings(paths=str(__import__("pathlib").Path(labels).parent), res=0.5)
sampler = RandomGeoSampler(ds, size=128, length=warm + windows + 16)
dl = DataLoader(ds, sampler=sampler, batch_size=16, num_workers=workers, collate_fn=stack_samples, persistent_workers=workers > 0)
"""
    + TIMING
    + r"""print(json.dumps({"startup_s": startup, "import_s": t_import, "windows_per_s": rate,
                  "main_peak_mb": peak_rss_mb(), "worker_rss_mb": kids}))
"""
)


def run(code: str, args: list[str], env: dict | None = None, timeout: float = 1800) -> dict:
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=timeout)
    if r.returncode:
        raise RuntimeError(
            (r.stderr or r.stdout).strip().splitlines()[-1] if (r.stderr or r.stdout).strip() else str(r.returncode)
        )
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenes", type=int, nargs="*", default=[10, 100, 1000])
    p.add_argument("--windows", type=int, default=4096, help="training windows timed (after the first pass)")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="terraseg runs per project, in rounds alternating between the "
        "projects; the summary gives each project's median windows/s (one case's single runs moved 2x between runs on a shared CPU)",
    )
    p.add_argument("--cache-mb", type=float, default=256)
    p.add_argument(
        "--spill-mb", type=float, default=16384, help="data.spill_mb: local disk for decoded scenes past the cache (0: none)"
    )
    p.add_argument(
        "--warm",
        type=int,
        default=None,
        help="windows of the first (untimed) pass; default: the larger of "
        "--windows and 4 per scene, so the first pass reads nearly every scene once, as a first epoch does",
    )
    p.add_argument("--peers", default="torchgeo", help="'torchgeo' or '' (none)")
    p.add_argument("--packages", type=Path, default=Path("/tmp/terraseg-peers"))
    p.add_argument(
        "--peer-windows",
        type=int,
        default=256,
        help="windows the peer is timed over (and its first pass): at a few windows/s, a longer pass would take hours",
    )
    p.add_argument("--peer-timeout", type=float, default=600, help="seconds a peer's case may take before it is reported as over")
    a = p.parse_args()
    env = None
    if a.peers:
        where = a.packages / "torchgeo"
        if not (where / "torchgeo").exists():
            subprocess.run(
                [sys.executable, "-m", "pip", "install", "-q", "--target", str(where), "--no-deps", *PEERS["torchgeo"]],
                check=True,
            )
        env = os.environ | {"PYTHONPATH": str(where)}
    print(
        f"CPU: {cpu_model()}; {SIZE}^2 3-band scenes, ~1,000 polygons each, 128 px windows, {a.workers} loader workers, "
        f"cache {a.cache_mb:g} MiB"
    )
    print(
        f"{'scenes':>6} {'loader':>9} {'start s':>8} {'main MB':>8} {'workers MB':>11} {'windows/s':>10} {'index MB':>9} "
        f"{'main - index':>13}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        projects, gen = {}, {}
        for n in a.scenes:  # every project first: the rounds below alternate between them
            t = time.perf_counter()
            projects[n] = make_project(Path(tmp) / f"p{n}", n)
            gen[n] = time.perf_counter() - t
        rates: dict[int, list[float]] = {n: [] for n in a.scenes}
        for rnd in range(a.repeats):
            for n in a.scenes:
                scenes, labels = projects[n]
                warm = a.warm if a.warm is not None else max(a.windows, 4 * n)
                index = Path(tmp) / f"p{n}" / f"index{rnd}.parquet"  # a new index each run: start-up builds it
                rows = {
                    "terraseg": run(
                        TERRASEG_CHILD,
                        [
                            str(scenes),
                            str(labels),
                            str(a.windows),
                            str(a.workers),
                            str(a.cache_mb),
                            str(index),
                            str(warm),
                            str(a.spill_mb),
                        ],
                    )
                }
                rates[n].append(rows["terraseg"]["windows_per_s"])
                if a.peers and rnd == 0:
                    try:
                        rows["torchgeo"] = run(
                            TORCHGEO_CHILD,
                            [str(scenes), str(labels), str(a.peer_windows), str(a.workers), str(a.peer_windows)],
                            env,
                            timeout=a.peer_timeout,
                        )
                    except subprocess.TimeoutExpired:
                        print(f"{n:>6} {'torchgeo':>9} over {a.peer_timeout:.0f} s (start-up and {a.peer_windows} windows)")
                    except Exception as e:  # noqa: BLE001 - a peer failing must not hide terraseg's figures
                        print(f"{n:>6} {'torchgeo':>9} failed: {e}")
                for name, m in rows.items():
                    w = "/".join(f"{v:.0f}" for v in m["worker_rss_mb"]) or "-"
                    idx = m.get("index_mb")
                    idx_s = "-" if idx is None else f"{idx:.1f}"
                    rest = "-" if idx is None else f"{m['main_peak_mb'] - idx:.0f}"
                    print(
                        f"{n:>6} {name:>9} {m['startup_s']:8.1f} {m['main_peak_mb']:8.0f} {w:>11} {m['windows_per_s']:10.1f} "
                        f"{idx_s:>9} {rest:>13}",
                        flush=True,
                    )
                uss = rows["terraseg"].get("worker_uss_mb") or []
                if uss:
                    print(
                        f"{'':>6} (terraseg workers' unique memory, USS: {'/'.join(f'{v:.0f}' for v in uss)} MB: the rest of their RSS "
                        "is pages shared with the main process since the fork)"
                    )
                sp = rows["terraseg"].get("spill") or {}
                t = rows["terraseg"]
                print(
                    f"{'':>6} (round {rnd + 1} of {a.repeats}; generating the project took {gen[n]:.0f} s; first pass {warm:,} "
                    f"windows; {t['train_scenes']:,} training scenes; start-up includes decoding {t['staged']:,} into the spill "
                    f"store in {t['stage_s']:.1f} s: {sp.get('spill_mb', 0):,.0f} MiB in {sp.get('spill_regions', 0):,} regions)"
                )
        first = statistics.median(rates[a.scenes[0]])
        print(
            f"terraseg windows/s, median of {a.repeats} run(s) each (runs alternate between the projects, so a burst of "
            "other work on the machine slows one run of each, not every run of one):"
        )
        for n in a.scenes:
            med = statistics.median(rates[n])
            print(
                f"{n:>6} scenes: {med:,.0f} ({', '.join(f'{r:,.0f}' for r in rates[n])}); {med / first:.2f} x the {a.scenes[0]}-scene median"
            )


if __name__ == "__main__":
    main()
