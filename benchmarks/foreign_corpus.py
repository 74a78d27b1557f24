"""Files no one here wrote: run `terraseg stats` and `terraseg predict` over a folder of third-party rasters and count outcomes.

It fetches nothing: point it at a folder of real test rasters. Every file gets `stats` and `predict`
(with a bundle you give, or a small random 3-band one made here), each in its own process with a
time limit. Outcomes per command:

* ok: exit 0 and, for predict, an output that keeps the input's georeferencing (a GeoTIFF with the
  same CRS and transform, or the same GCPs, or RPCs; a TIFF for a non-georeferenced TIFF/JP2 input);
* refusal: exit 1 with one line on standard error and no traceback;
* noisy refusal: exit 1 with more than that one line (GDAL's own ``ERROR 1:`` lines before it, say);
* traceback: a Python traceback anywhere in the output;
* timeout: still running after ``--timeout`` seconds;
* wrong output: exit 0 but the prediction lost the georeferencing, or changed format.

Assembling a corpus (the files are test data of their projects, under their licences; the PyPI sdists
do not ship them, so take them from the projects' repositories):

    git clone --depth 1 https://github.com/rasterio/rasterio /tmp/src/rasterio
    git clone --depth 1 https://github.com/cogeotiff/rio-tiler /tmp/src/rio-tiler
    git clone --depth 1 https://github.com/cogeotiff/rio-cogeo /tmp/src/rio-cogeo
    mkdir -p corpus && cp -r /tmp/src/rasterio/tests/data corpus/rasterio \
        && cp -r /tmp/src/rio-tiler/tests/fixtures corpus/rio-tiler && cp -r /tmp/src/rio-cogeo/tests/fixtures corpus/rio-cogeo
    # also: rioxarray's test/test_data/input, TorchGeo's tests/data, GDAL's autotest/gcore/data and
    # autotest/gdrivers/data (their 235 .tif/.tiff files at GDAL commit ba4e7c4)

The folder is searched recursively for the suffixes in ``SUFFIXES``.

Example:
    .venv/bin/python benchmarks/foreign_corpus.py corpus/ [--bundle model.terraseg] [--timeout 60]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from terraseg.io.raster import horizontal_crs

SUFFIXES = {".tif", ".tiff", ".vrt", ".jp2", ".img", ".png", ".jpg", ".jpeg", ".nc", ".hdf", ".h5"}


def small_bundle(path: Path) -> Path:
    """A random plain U-Net bundle for 3-band uint8 input (the outcome, not the accuracy, is measured)."""
    import torch

    from terraseg.bundle import Bundle, BundleManifest, InputSpec
    from terraseg.config import ClassSpec, ModelConfig
    from terraseg.data.normalize import NormStats
    from terraseg.models.factory import build_model

    torch.manual_seed(0)
    mc = ModelConfig(arch="plain_unet", base_filters=8, encoder_depth=3)
    m = BundleManifest(
        name="corpus",
        model=mc,
        classes=[ClassSpec(name="a"), ClassSpec(name="b")],
        input=InputSpec(
            bands=3,
            dtype="uint8",
            normalization=NormStats("meanstd", [100.0] * 3, [50.0] * 3, [5.0] * 3, [250.0] * 3),
            train_window=64,
            predict_window=256,
        ),
    )
    return Bundle(m, build_model(mc, 3, 2)).save(path)


def georef(path: Path) -> tuple:
    """(CRS, transform, number of GCPs, has RPCs) of a raster, as rasterio reads them."""
    import warnings

    import rasterio

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(path) as ds:
            placed = ds.transform != rasterio.Affine.identity()
            crs = (
                horizontal_crs(ds.crs)[0] if ds.crs and placed else None
            )  # a compound CRS places a 2-D map by its horizontal part
            return (
                crs.to_wkt() if crs else None,
                tuple(ds.transform)[:6] if placed else None,
                len(ds.gcps[0]),
                ds.rpcs is not None,
            )


def same_georef(want: tuple, got: tuple) -> bool:
    """The same CRS (as PROJ compares them: GeoTIFF keys re-encode a WKT), transform, GCP count and RPC presence."""
    import pyproj

    if (want[0] is None) != (got[0] is None):
        return False
    if want[0] is not None and not pyproj.CRS.from_wkt(want[0]).equals(pyproj.CRS.from_wkt(got[0]), ignore_axis_order=True):
        return False
    return want[1:] == got[1:]


def classify(proc: subprocess.CompletedProcess | None) -> str:
    """The outcome of one command (module docstring), before the output check."""
    if proc is None:
        return "timeout"
    text = (proc.stdout or "") + (proc.stderr or "")
    if "Traceback" in text:
        return "traceback"
    if proc.returncode == 0:
        return "ok"
    lines = [line for line in (proc.stderr or "").strip().splitlines() if line.strip()]
    if proc.returncode == 1 and len(lines) == 1:
        return "refusal"
    return "noisy refusal" if proc.returncode == 1 else "traceback"


def run(cmd: list[str], timeout: float) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path)
    p.add_argument("--bundle", type=Path)
    p.add_argument("--timeout", type=float, default=60)
    p.add_argument("--show", type=int, default=10, help="files listed per bad outcome")
    a = p.parse_args()
    exe = str(Path(sys.executable).with_name("terraseg"))
    files = sorted(f for f in a.folder.rglob("*") if f.is_file() and f.suffix.lower() in SUFFIXES)
    counts: dict[str, Counter] = {"stats": Counter(), "predict": Counter()}
    bad: dict[tuple[str, str], list[str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        bundle = a.bundle or small_bundle(Path(tmp) / "corpus.terraseg")
        for i, f in enumerate(files):
            out = Path(tmp) / f"o{i}"
            for cmd, args in (
                ("stats", ["stats", str(f), "--out", str(out / "stats")]),
                ("predict", ["predict", str(bundle), str(f), "--out", str(out / "pred")]),
            ):
                outcome = classify(run([exe, "-q", *args], a.timeout))
                if cmd == "predict" and outcome == "ok":
                    # the map itself: <stem>.tif (or the photo's own suffix), not its <stem>.tif.aux.xml side-car
                    preds = sorted(q for q in (out / "pred").glob(f"{f.stem}.*") if q.suffix.lower() != ".xml")
                    try:
                        want = georef(f)
                        got = georef(preds[0]) if preds else None
                        photo = f.suffix.lower() in {".png", ".jpg", ".jpeg"}
                        if got is None or (not photo and preds[0].suffix != ".tif"):
                            outcome = "wrong output"
                        elif (want[0] or want[2] or want[3]) and not same_georef(want, got):
                            outcome = "wrong output"
                    except Exception:  # noqa: BLE001 - an unreadable output is a wrong one
                        outcome = "wrong output"
                counts[cmd][outcome] += 1
                if outcome != "ok":
                    bad.setdefault((cmd, outcome), []).append(str(f))
    kinds = ["ok", "refusal", "noisy refusal", "traceback", "timeout", "wrong output"]
    print(f"{len(files)} files under {a.folder}")
    print(f"{'command':8} " + " ".join(f"{k:>12}" for k in kinds))
    for cmd, c in counts.items():
        print(f"{cmd:8} " + " ".join(f"{c[k]:>12}" for k in kinds))
    for (cmd, outcome), names in sorted(bad.items()):
        print(f"{cmd} {outcome}: " + ", ".join(Path(n).name for n in names[: a.show]) + (" ..." if len(names) > a.show else ""))


if __name__ == "__main__":
    main()
