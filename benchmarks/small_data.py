"""Tiny data as users have it: eo-learn's example patch converted to GeoTIFFs, planned and trained from the data alone.

eo-learn's ``TestEOPatch`` (sentinel-hub/eo-learn, MIT; Copernicus Sentinel-2 data) holds 13-band float32 L1C
reflectance of a 101 x 100 px area at 10 m (EPSG:32633, ``bbox.geojson``) on five dates and a land-cover mask
(``mask_timeless/LULC.npy``, 0 = no data, classes 1, 2, 3, 4 and 8). A user converts the first date and the mask to
GeoTIFFs and runs ``terraseg train --data patch.tif --labels lulc.tif --minutes M``; this script does the same in a
temporary folder and prints what the run prints about its classes, its hold-out and its candidates (the network and
the pixel forest, scored on the same validation blocks; ``terraseg.training.candidates``).

Example:
    .venv/bin/python benchmarks/small_data.py [--minutes 2] [--data ../shared/datasets/eo-learn-lulc]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def convert(src: Path, out: Path) -> tuple[Path, Path]:
    """``patch.tif`` (13 bands, float32, the first date) and ``lulc.tif`` (uint16, nodata 0) on the patch's grid."""
    import rasterio
    from rasterio.transform import from_bounds

    bbox = json.loads((src / "TestEOPatch" / "bbox.geojson").read_text())
    xs, ys = zip(*bbox["coordinates"][0])
    image = np.load(src / "REFERENCE_SCENES.npy")[0].transpose(2, 0, 1)  # (13, 101, 100)
    mask = np.load(src / "TestEOPatch" / "mask_timeless" / "LULC.npy")[..., 0]
    profile = dict(
        driver="GTiff",
        height=image.shape[1],
        width=image.shape[2],
        crs="EPSG:32633",
        transform=from_bounds(min(xs), min(ys), max(xs), max(ys), image.shape[2], image.shape[1]),
    )
    with rasterio.open(out / "patch.tif", "w", count=13, dtype="float32", **profile) as dst:
        dst.write(image.astype(np.float32))
    with rasterio.open(out / "lulc.tif", "w", count=1, dtype="uint16", nodata=0, **profile) as dst:
        dst.write(mask.astype(np.uint16)[None])
    return out / "patch.tif", out / "lulc.tif"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "datasets" / "eo-learn-lulc")
    p.add_argument("--minutes", type=float, default=2.0)
    a = p.parse_args()
    exe = str(Path(sys.executable).with_name("terraseg"))
    with tempfile.TemporaryDirectory() as tmp:
        image, mask = convert(a.data, Path(tmp))
        run = subprocess.run(
            [
                exe,
                "train",
                "--data",
                str(image),
                "--labels",
                str(mask),
                "--minutes",
                str(a.minutes),
                "--set",
                "tracking.enabled=false",
            ],
            cwd=tmp,
            capture_output=True,
            text=True,
        )
        keep = ("plan", "hold-out", "candidate", "kept", "wall time", "best validation", "validation", "error", "warning")
        for line in (run.stdout + run.stderr).splitlines():
            if line.startswith(keep) and not line.startswith("20"):
                print(line)
        plan = Path(tmp) / "runs" / "patch" / "plan.yaml"
        if plan.is_file():
            import yaml

            cfg = yaml.safe_load(plan.read_text())
            print("classes:", [c["name"] for c in cfg["classes"]], "mask_values:", cfg["data"]["train"][0].get("mask_values"))
        print(f"exit {run.returncode}")


if __name__ == "__main__":
    main()
