"""Lightning DDP training with N processes against one: training windows per second and validation score.

Trains the shipped Massachusetts config (real data under $TERRASEG_DATA) for a few short epochs,
once per process count, through the CLI (``terraseg train --set train.strategy=ddp --set
train.devices=N``), with the same effective batch (``--batch`` windows split over the ranks) and
the cores split between the processes (CPU) or one GPU each. Printed per run, from the bundle's
manifest: wall windows/s over the training epochs, steady windows/s (epochs after the first),
validation share of the time, best val/score, and the speed-up and efficiency against one process.

Usage:
    python benchmarks/ddp_scale.py [--procs 1 2] [--epochs 3] [--samples 96] [--batch 8]
        [--accelerator cpu|gpu] [--config massachusetts-buildings]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--samples", type=int, default=96)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--accelerator", default="cpu")
    ap.add_argument("--config", default="massachusetts-buildings")
    args = ap.parse_args()
    data = os.environ.get("TERRASEG_DATA", str(ROOT.parent / "shared" / "datasets"))
    cores = os.cpu_count() or 1
    base = None
    work = Path(tempfile.mkdtemp(prefix="terraseg-ddp-"))
    for n in args.procs:
        cfg = yaml.safe_load((ROOT / "configs" / f"{args.config}.yaml").read_text())
        cfg["data"]["data_root"] = data
        cfg["data"] |= {"samples_per_epoch": args.samples, "batch_size": args.batch // n, "num_workers": 0}
        cfg["train"] |= {
            "max_epochs": args.epochs,
            "patience": args.epochs,
            "accelerator": args.accelerator,
            "devices": n,
            "strategy": "ddp" if n > 1 else "auto",
            "export_onnx": False,
            "calibrate": False,
            "max_minutes": None,
        }
        if args.accelerator == "cpu":
            cfg["train"]["threads"] = max(1, cores // n)
        cfg["tracking"] = {"enabled": False}
        cfg["output_dir"] = str(work / f"p{n}")
        path = work / f"p{n}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "terraseg", "--quiet", "train", str(path)],
            capture_output=True,
            text=True,
            env=os.environ | {"HF_HUB_OFFLINE": "1"},
        )
        wall = time.perf_counter() - t0
        if proc.returncode:
            raise SystemExit(proc.stderr[-2000:])
        from terraseg.bundle import Bundle

        m = Bundle.load(Path(cfg["output_dir"]) / "model.terraseg").manifest
        t = m.training
        row = {
            "processes": n,
            "world_size": t.get("world_size"),
            "threads_per_process": cfg["train"].get("threads"),
            "batch_per_rank": args.batch // n,
            "wall_windows_per_s": t["wall_chips_per_second"],
            "steady_windows_per_s": t.get("steady_wall_chips_per_second"),
            "validation_share": t["validation_share"],
            "val_score": round(m.metrics["validation"].get("val/score", float("nan")), 4),
            "command_wall_s": round(wall, 1),
        }
        rate = row["steady_windows_per_s"] or row["wall_windows_per_s"]
        if base is None:
            base = rate
        row["speedup"] = round(rate / base, 3)
        row["efficiency"] = round(rate / (n * base / args.procs[0]), 3)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
