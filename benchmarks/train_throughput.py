"""Training throughput: the bare training step vs `terraseg train` wall time, and the loader alone.

Prints, for a config on this machine's device (CUDA when present, else the CPU; the GPU section):

* the bare step: forward + loss + backward + AdamW on batches already on the device, in float32
  and in the precision ``train.precision: auto`` resolves to (bf16-mixed where the device has
  native bf16), with channels_last as configured;
* the training DataLoader alone (random windows, the loader options ``data.num_workers`` resolves to);
* with ``--fit``: ``terraseg train`` for ``--epochs`` epochs of ``data.samples_per_epoch`` windows,
  its wall windows/s (validation excluded), validation's share of the time, and the ratio to the
  bare step in the same precision.

Usage:
    python benchmarks/train_throughput.py [configs/massachusetts-buildings.yaml] [--steps 10] [--fit --epochs 2]
        [--set data.batch_size=64 --set data.window=256 ...] [--keep RUN_DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from terraseg.config import load_config
from terraseg.data.datasets import RandomWindowDataset, collate_samples
from terraseg.data.sources import train_val_scenes
from terraseg.devices import cpu_flags, cpu_model, loader_options
from terraseg.training.module import SegmentationModule


def bare_step(cfg, in_channels: int, device: str, precision: str, steps: int) -> float:
    """Windows per second of forward + loss + backward + optimiser step on device-resident batches."""
    d = cfg.data
    task = SegmentationModule(cfg.model_dump(mode="json"), in_channels, 1000).to(device)
    task.setup("fit")
    opt = torch.optim.AdamW(task.model.parameters(), lr=1e-3)
    x = torch.randn(d.batch_size, in_channels, d.window, d.window, device=device)
    y = torch.randint(0, cfg.num_classes, (d.batch_size, d.window, d.window), device=device)
    if cfg.train.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler(enabled=precision == "16-mixed")
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    t0 = 0.0
    for step in range(steps + 2):
        if step == 2:  # two warm-up steps
            sync()
            t0 = time.perf_counter()
        with torch.autocast(torch.device(device).type, dtype=dtype, enabled=dtype is not None):
            loss = task.loss_fn(task.model(x), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    sync()
    return steps * d.batch_size / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config", type=Path, nargs="?", default=Path("configs/massachusetts-buildings.yaml"))
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--fit", action="store_true", help="also run `terraseg train` and compare its wall throughput")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--keep", type=Path, default=None, help="with --fit: keep the run folder (its bundle) here")
    a = p.parse_args()
    cfg = load_config(a.config, a.overrides)
    d = cfg.data
    device = cfg.training_device()
    auto = cfg.training_precision()
    name = torch.cuda.get_device_name() if device == "cuda" else f"{cpu_model()} x{os.cpu_count()}"
    print(
        f"{cfg.name}: {cfg.model.arch}/{cfg.model.encoder}, window {d.window}, batch {d.batch_size}, channels_last "
        f"{cfg.train.channels_last}; device {device} ({name}; native bf16: {'avx512_bf16' in cpu_flags() or device == 'cuda'}), "
        f"torch threads {torch.get_num_threads()}"
    )
    tr, _ = train_val_scenes(d, cfg.ignore_index, cfg.num_classes, cfg.train.seed)
    bare = {}
    for prec in dict.fromkeys(["32", auto]):
        bare[prec] = bare_step(cfg, tr[0].count, device, prec, a.steps)
        print(f"bare step {prec}: {bare[prec]:.1f} windows/s ({bare[prec] * d.window**2 / 1e6:.2f} MP/s)", flush=True)
    kw = loader_options(d.num_workers, device)
    n_batches = max(a.steps, 4 * kw["num_workers"])
    ds = RandomWindowDataset(tr, d.window, d.batch_size * (n_batches + 1), None, d.rare_class_share)  # as training: raw windows
    dl = DataLoader(ds, batch_size=d.batch_size, collate_fn=collate_samples, **kw)
    it = iter(dl)
    next(it)
    t0 = time.perf_counter()
    n = sum(len(b["image"]) for _, b in zip(range(n_batches), it))
    print(f"loader alone ({kw['num_workers']} workers): {n / (time.perf_counter() - t0):.1f} windows/s", flush=True)
    if a.fit:
        from terraseg.bundle import Bundle
        from terraseg.training.run import train

        with tempfile.TemporaryDirectory() as tmp:
            run_dir = a.keep or Path(tmp) / "run"
            run_cfg = load_config(
                a.config,
                a.overrides
                + [
                    f"output_dir={run_dir}",
                    "tracking.enabled=false",
                    f"train.max_epochs={a.epochs}",
                    "train.max_minutes=null",
                    "train.export_onnx=false",
                ],
            )
            res = train(run_cfg)
            t = Bundle.load(res.bundle_path).manifest.training
        wall = t["wall_chips_per_second"]
        print(
            f"terraseg train ({t['precision']}, {a.epochs} epochs x {d.samples_per_epoch} windows): wall {wall:.1f} windows/s "
            f"(steps only {t['chips_per_second']:.1f}), validation {t['validation_share']:.1%} of the time; "
            f"ratio to the bare step {wall / bare[t['precision']]:.2f}"
        )
        steady = t.get("steady_wall_chips_per_second")
        if steady:
            print(
                f"  after the first epoch (worker start-up, kernel autotuning): wall {steady:.1f} windows/s, "
                f"ratio to the bare step {steady / bare[t['precision']]:.2f}"
            )


if __name__ == "__main__":
    main()
