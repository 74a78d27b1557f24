"""Training throughput (windows per second) for a config, data loading included.

Runs ``--steps`` optimiser steps of the config's model on its training windows, after one warm-up
step, and prints windows/s for the full step and for data loading alone.

Usage: python benchmarks/train_throughput.py [configs/massachusetts-buildings.yaml] [--steps 10] [--set k=v]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from terraseg.config import load_config
from terraseg.data.datasets import RandomWindowDataset, collate_samples, scene_statistics
from terraseg.data.sources import train_val_scenes
from terraseg.train.module import SegmentationTask


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("config", type=Path, nargs="?", default=Path("configs/massachusetts-buildings.yaml"))
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--set", dest="overrides", action="append", default=[])
    a = p.parse_args()
    cfg = load_config(a.config, a.overrides)
    d = cfg.data
    tr, _ = train_val_scenes(d, cfg.ignore_index, cfg.num_classes, cfg.train.seed)
    stats = scene_statistics(tr, d.normalization.method, d.normalization.percentiles, d.normalization.max_pixels, 0)
    ds = RandomWindowDataset(tr, d.window, d.batch_size * (a.steps + 1), stats, d.rare_class_share, d.augment)
    dl = DataLoader(ds, batch_size=d.batch_size, collate_fn=collate_samples)
    task = SegmentationTask(cfg.model_dump(mode="json"), tr[0].count, 1000)
    task.setup("fit")
    opt = torch.optim.AdamW(task.model.parameters(), lr=1e-3)
    t_data = t_all = 0.0
    it = iter(dl)
    for step in range(a.steps + 1):
        t0 = time.perf_counter()
        batch = task.on_after_batch_transfer(next(it), 0)
        t1 = time.perf_counter()
        loss = task.loss_fn(task.model(batch["image"]), batch["mask"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        t2 = time.perf_counter()
        if step:  # skip warm-up
            t_data += t1 - t0
            t_all += t2 - t0
    n = a.steps * d.batch_size
    print(f"{cfg.name}: {cfg.model.arch}/{cfg.model.encoder}, window {d.window}, batch {d.batch_size}, "
          f"channels_last {cfg.train.channels_last}, threads {torch.get_num_threads()}")
    print(f"training: {n / t_all:.2f} windows/s ({n / t_all * d.window ** 2 / 1e6:.2f} MP/s); data loading alone: {n / t_data:.1f} windows/s")


if __name__ == "__main__":
    main()
