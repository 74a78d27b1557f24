"""`terraseg stats` speed in seconds per GB of pixels for 3-, 13- and 224-band rasters, and peak memory.

Generates tiled, DEFLATE-compressed int16 GeoTIFFs (a 224-band one like an EnMAP/HySpecNet COG),
runs compute_statistics in a fresh process for each, and prints wall seconds, s/GB of raw pixels and
peak RSS. Run it with nothing else on the CPU.

Example:
    .venv/bin/python benchmarks/stats_speed.py            # 512^2 x {3, 13, 224} bands
    .venv/bin/python benchmarks/stats_speed.py --size 1024
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from terraseg.devices import cpu_model  # noqa: E402

CHILD = r"""
import json, resource, sys, time
from terraseg.config.prep import StatsConfig
from terraseg.prepare.stats import compute_statistics
t = time.perf_counter()
compute_statistics(StatsConfig(images=[sys.argv[1]], out_dir=sys.argv[2]))
print(json.dumps({"seconds": time.perf_counter() - t, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--bands", type=int, nargs="*", default=[3, 13, 224])
    a = p.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from test_hyperspectral import cube

    print(f"CPU: {cpu_model()}; {a.size}^2 int16, tiled 64 px, DEFLATE")
    print(f"{'bands':>6} {'GB raw':>8} {'seconds':>8} {'s/GB':>8} {'peak RSS MB':>12}")
    with tempfile.TemporaryDirectory() as tmp:
        for b in a.bands:
            path, _ = cube(Path(tmp) / f"c{b}.tif", bands=b, size=a.size)
            r = subprocess.run([sys.executable, "-c", CHILD, str(path), str(Path(tmp) / f"s{b}")], capture_output=True, text=True)
            if r.returncode:
                print(f"{b:>6} failed: {r.stderr.strip().splitlines()[-1]}")
                continue
            m = json.loads(r.stdout.strip().splitlines()[-1])
            gb = a.size * a.size * b * 2 / 1e9
            print(f"{b:>6} {gb:8.3f} {m['seconds']:8.2f} {m['seconds'] / gb:8.1f} {m['rss_mb']:12.0f}")


if __name__ == "__main__":
    main()
