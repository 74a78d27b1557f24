"""Candidates chosen by evidence: pixel baselines fitted beside the network, the one validation prefers kept.

On small label sets a per-pixel random forest on the bands (and indices, texture) often matches or beats a network
trained from scratch within minutes on a CPU (Belgiu and Dragut, *Random forest in remote sensing: a review of
applications and future directions*, ISPRS J. 114, 2016). Rather than assume either, a run with
``train.challengers`` fits each baseline first (seconds), trains the network in the budget left, and scores every
candidate on the same recorded validation blocks (:func:`terraseg.evaluation.compare.compare_bundles`: the paired block
bootstrap of the score difference). A baseline replaces the network only when the interval of its difference lies above
0; otherwise the network is kept. Both figures are printed and recorded in the kept bundle.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import replace
from typing import Any, Unpack

from terraseg.config import ExperimentConfig
from terraseg.config.inference import InferenceConfig
from terraseg.training.result import RunOptions, TrainResult

log = logging.getLogger(__name__)
# the comparison runs as validation does: float32 PyTorch, no backend measurement (which costs seconds on a first run)
AS_VALIDATED = InferenceConfig(backend="torch", precision="32", channels_last=False)


def train_with_challengers(cfg: ExperimentConfig, **run: Unpack[RunOptions]) -> TrainResult:
    """Fit ``cfg.train.challengers`` and the network within one budget; keep the candidate validation prefers.

    The network's bundle is ``<run>/model.terraseg`` unless a baseline wins, which then takes that name (the
    network's moves to ``<run>/candidates/network.terraseg``); each baseline's run folder is ``<run>/candidates/<arch>``.

    Args:
        cfg: a segmentation config whose ``train.challengers`` is not empty.
        **run: how the run starts (:class:`terraseg.training.result.RunOptions`).

    Returns:
        The kept candidate's :class:`TrainResult`, its ``candidates`` lines saying what each scored and why it was kept.

    Raises:
        InputFileError: as the trainers.
        ConfigError: as the trainers.
    """
    from terraseg.bundle import Bundle
    from terraseg.evaluation.bootstrap import format_interval
    from terraseg.evaluation.compare import compare_bundles
    from terraseg.evaluation.report import split_scenes_of
    from terraseg.training.network import train_network
    from terraseg.training.pixel import train_pixel

    started = run.get("started") or time.monotonic()
    run["started"] = started
    run_dir = cfg.run_dir()
    baselines: dict[str, TrainResult] = {}
    for arch in cfg.train.challengers:  # seconds each, first: the network trains in the time they leave
        c = cfg.model_copy(
            update={
                "model": cfg.model.model_copy(update={"arch": arch}),
                "train": cfg.train.model_copy(update={"challengers": []}),
                "output_dir": str(run_dir / "candidates" / arch),
                "tracking": cfg.tracking.model_copy(update={"enabled": False}),
            }
        )
        baselines[arch] = train_pixel(c)
    # the network's budget keeps time for the comparisons after it (terraseg.training.network._Budget)
    scoring = sum(Bundle.load(r.bundle_path).manifest.training.get("validation_seconds", 0.0) for r in baselines.values())
    net = train_network(cfg, after_seconds=scoring, **run)
    if net.rank:
        return net
    network = Bundle.load(net.bundle_path)
    val = split_scenes_of(network, None, "val", warn=log.warning)
    kept, kept_name = net, "network"
    rows: list[dict[str, Any]] = []
    lines: list[str] = []
    best_gain = 0.0
    for arch, res in baselines.items():  # type: ignore[assignment]
        r = compare_bundles(Bundle.load(res.bundle_path), network, val, inference=AS_VALIDATED, validation=True)
        d = r["difference"]
        rows.append(
            {
                "candidate": arch,
                "score": r["a"]["score"],
                "interval": r["a"]["interval"],
                "network_score": r["b"]["score"],
                "network_interval": r["b"]["interval"],
                "difference": d["difference"],
                "difference_interval": d["interval"],
                "units": r["units"],
                "score_name": r["score"],
            }
        )
        if not lines:
            lines.append(
                f"candidate network ({cfg.model.arch}/{cfg.model.encoder}): {format_interval(r['b']['score'], r['b']['interval'])} "
                f"{r['score']} on {r['units']} validation blocks"
            )
        lines.append(
            f"candidate {arch}: {format_interval(r['a']['score'], r['a']['interval'])}; {arch} - network "
            f"{format_interval(d['difference'], d['interval'])} (paired block bootstrap)"
        )
        if d["separates"] and d["difference"] > best_gain:
            kept, kept_name, best_gain = res, arch, d["difference"]
    if kept_name == "network":
        tied = [r["candidate"] for r in rows if r["difference_interval"][0] <= 0 <= r["difference_interval"][1]]
        lines.append(
            "kept the network: "
            + (
                f"validation cannot tell it from {', '.join(tied)} (the interval of the difference holds 0)"
                if tied
                else "it scores above every baseline"
            )
        )
    else:
        lines.append(
            f"kept {kept_name}: it scores above the network on these validation blocks (the interval of the "
            "difference lies above 0)"
        )
    kept_bundle = Bundle.load(kept.bundle_path)
    kept_bundle.manifest.training["candidates"] = {"kept": kept_name, "comparisons": rows}
    # the run's MLflow run is the network's (the baselines are fitted untracked): a kept baseline registers under it
    kept_bundle.manifest.training["mlflow_run_id"] = network.manifest.training.get("mlflow_run_id")
    final = run_dir / "model.terraseg"
    if kept_name != "network":
        (run_dir / "candidates").mkdir(parents=True, exist_ok=True)
        shutil.move(str(final), str(run_dir / "candidates" / "network.terraseg"))
    kept_bundle.save(final)
    return replace(
        kept,
        bundle_path=final,
        run_dir=run_dir,
        candidates=lines,
        wall_seconds=time.monotonic() - started,
        split=kept.split or net.split,
        arch=None if kept_name == "network" else kept_name,
        tracking_uri=net.tracking_uri,
    )


__all__ = ["train_with_challengers"]
