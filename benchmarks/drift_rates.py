"""Drift that does not cry wolf: false-alarm rates on each bundle's own validation windows, and what is still flagged.

For each data set a short planned run (`terraseg train --data ... --minutes M`) fits the bundle's drift
profile; its false-alarm rate on validation windows (windows the thresholds never saw) is printed.
Then each bundle is shown imagery of other cities and sensors, and a uint16 image (another bit depth):
printed is whether the input is flagged (or refused). Run it with nothing else on the CPU.

Example:
    .venv/bin/python benchmarks/drift_rates.py --minutes 1.5
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from terraseg.devices import cpu_model  # noqa: E402
from terraseg.settings import data_root  # noqa: E402

D = data_root()
V = D / "spacenet" / "sn2-vegas"
VSTEM = "SpaceNet_AOI_2_Las_Vegas-056155973080_01_P001-WV03"
NB = D / "new-brunswick-landcover"

DATASETS = {  # name -> (--data, --labels, --attribute)
    "massachusetts": (
        [D / "massachusetts-buildings" / "22978945_15.tif"],
        D / "massachusetts-buildings" / "massachusetts_buildings.zip",
        None,
    ),
    "vegas": ([V / f"{VSTEM}-RGB.tif"], V / f"{VSTEM}.gpkg", None),
    "new-brunswick": (
        [NB / "23322E759967N_clipped_1m_1of2.tif", NB / "23322E759967N_clipped_1m_2of2.tif"],
        NB / "BakerLake_2017_clipped.gpkg",
        "Quatreclasses",
    ),
    "loveda": ([D / "loveda-samples"], None, None),
    "magnetic-tiles": ([D / "magnetic-tiles"], None, None),
    "sen1floods11": (
        [D / "sen1floods11" / "S2" / "Spain_7370579_S2Hand.tif"],
        D / "sen1floods11" / "Labels" / "Spain_7370579_LabelHand.tif",
        None,
    ),
    "aerial-tile": ([D / "aerial-building-tiles" / "tiled_image_1.tif"], D / "aerial-building-tiles" / "tiled_label_1.tif", None),
}
OTHERS = {  # imagery of another city / sensor, for the RGB bundles
    "Massachusetts 1 m aerial": D / "massachusetts-buildings" / "23429155_15.tif",
    "Las Vegas WorldView-3 0.3 m": V / f"{VSTEM}-RGB.tif",
    "Atlanta 0.5 m PS-RGB": next(iter(sorted((D / "spacenet" / "sn4-atlanta").glob("*.tif"))), None),
    "New Brunswick 0.5 m aerial": NB / "23322E759967N_clipped_1m_1of2.tif",
    "Landsat 7 30 m": D / "landsat" / "RGB.byte.tif",
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=1.5)
    p.add_argument("--only", nargs="*", default=None, help="data sets to run (default: all)")
    a = p.parse_args()
    exe = str(Path(sys.executable).with_name("terraseg"))
    from terraseg.bundle import Bundle
    from terraseg.errors import TerrasegError
    from terraseg.infer.drift import bundle_drift
    from terraseg.infer.inputs import open_input

    print(f"CPU: {cpu_model()}; planned runs of {a.minutes:g} min")
    with tempfile.TemporaryDirectory() as tmp:
        bundles = {}
        print(f"{'bundle':16} {'false alarms':>13} {'val windows':>12}  thresholds (smd, range, psi)")
        for name, (data, labels, attr) in DATASETS.items():
            if a.only and name not in a.only:
                continue
            args = [
                exe,
                "-q",
                "train",
                *sum((["--data", str(d)] for d in data), []),
                "--minutes",
                str(a.minutes),
                "--set",
                f"output_dir={tmp}/{name}",
                "--set",
                "tracking.enabled=false",
                "--set",
                "train.export_onnx=false",
            ]
            args += ["--labels", str(labels)] if labels else []
            args += ["--attribute", attr] if attr else []
            r = subprocess.run(args, capture_output=True, text=True, cwd=tmp)
            if r.returncode:
                print(f"{name:16} failed: {(r.stderr or r.stdout).strip().splitlines()[-1:]}")
                continue
            b = Bundle.load(Path(tmp) / name / "model.terraseg")
            bundles[name] = b
            d = b.manifest.drift or {}
            t = d.get("thresholds", {})
            rate = d.get("false_alarm_rate")
            print(
                f"{name:16} {('-' if rate is None else f'{rate:.1%}'):>13} {d.get('validation_windows', 0):>12}  "
                f"{t.get('smd', 0):.2f}, {t.get('range', 0):.2f}, {t.get('psi', 0):.2f}"
            )
        import numpy as np
        import rasterio

        u16 = Path(tmp) / "uint16.tif"
        with rasterio.open(D / "massachusetts-buildings" / "22978945_15.tif") as src:
            prof = src.profile | {"dtype": "uint16", "nodata": None}
            data = src.read(window=((0, 512), (0, 512))).astype(np.uint16) * 257
            prof.update(width=512, height=512, transform=src.window_transform(((0, 512), (0, 512))))
        with rasterio.open(u16, "w", **prof) as dst:
            dst.write(data)
        print("\nother imagery given to the RGB bundles (flagged bands, or the refusal):")
        for name in ("massachusetts", "vegas", "new-brunswick"):
            if name not in bundles:
                continue
            for what, path in list(OTHERS.items()) + [("the same tile as uint16 (x257)", u16)]:
                if path is None or not Path(path).exists():
                    continue
                try:
                    rep = bundle_drift(bundles[name], open_input(bundles[name], path))
                    verdict = ("flagged: " + ",".join(rep.flagged)) if rep and rep.drifted else "not flagged"
                except TerrasegError as e:
                    verdict = "refused: " + str(e).split(": ", 1)[-1][:70]
                print(f"  {name:14} <- {what:34} {verdict}")


if __name__ == "__main__":
    main()
