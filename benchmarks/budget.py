"""Is `terraseg train --set train.max_minutes=M` done within M minutes of wall time? Prints one row per config.

The wall time is the whole `terraseg train` process (interpreter start, hold-out, statistics, training,
calibration, tiling choice, ONNX export, bundle), measured from outside. Run it with nothing else on the CPU.

Example:
    .venv/bin/python benchmarks/budget.py --minutes 2 configs/loveda.yaml configs/massachusetts-buildings.yaml configs/magnetic-tiles.yaml
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from terraseg.devices import cpu_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("configs", nargs="+", type=Path)
    p.add_argument("--minutes", type=float, default=2.0)
    a = p.parse_args()
    exe = Path(sys.executable).with_name("terraseg")
    print(f"CPU: {cpu_model()}; budget {a.minutes:g} min = {60 * a.minutes:.0f} s")
    print(f"{'config':40} {'wall s':>8} {'ratio':>6} {'epochs':>6}  skipped")
    for cfg in a.configs:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.monotonic()
            r = subprocess.run(
                [
                    str(exe),
                    "-q",
                    "train",
                    str(cfg),
                    "--set",
                    f"train.max_minutes={a.minutes}",
                    "--set",
                    f"output_dir={tmp}/run",
                    "--set",
                    "tracking.enabled=false",
                ],
                capture_output=True,
                text=True,
            )
            wall = time.monotonic() - t0
            if r.returncode:
                print(f"{cfg.name:40} failed: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}")
                continue
            from terraseg.bundle import Bundle

            m = Bundle.load(Path(tmp) / "run" / "model.terraseg").manifest.training
            print(
                f"{cfg.name:40} {wall:8.1f} {wall / (60 * a.minutes):6.3f} {m.get('epochs', 1):>6}  "
                f"{', '.join(m.get('budget', {}).get('skipped', [])) or '-'}  (inside: {json.dumps(m.get('budget', {}).get('wall_seconds'))} s)"
            )


if __name__ == "__main__":
    main()
