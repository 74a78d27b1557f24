"""Training networks (segmentation and scene classification) with Lightning.

Steps: build scenes and the train/val split; compute band statistics on the training scenes (or
reload them on ``resume``); train with Lightning (seeded, early stopping, best checkpoint by
``val/score``, optional bf16/fp16 autocast, time limit); track with MLflow through
:class:`terraseg.tracking.Tracker`; write the bundle from the best checkpoint, atomically.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Unpack

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from torch.utils.data import DataLoader

from terraseg import progress
from terraseg.bundle import CALIBRATION, MIN_PREDICT_WINDOW, Bundle, BundleManifest, InputSpec
from terraseg.config import ExperimentConfig
from terraseg.data.holdout import Split
from terraseg.data.normalize import NormStats
from terraseg.data.sources import split_scenes
from terraseg.devices import is_main_process
from terraseg.formats import is_geotiff
from terraseg.io.atomic import output_folder
from terraseg.io.cache import CACHE, SPILL, configure, peak_rss_mb
from terraseg.models.factory import build_model
from terraseg.tasks import task_named
from terraseg.tracking import Tracker, flatten_params
from terraseg.training.callbacks import Budget, EpochLines, Throughput, after_training, progress_bar
from terraseg.training.history import plot_learning_curve, write_history
from terraseg.training.loaders import calibration_windows, segmentation_loaders
from terraseg.training.module import ModuleBase, SegmentationModule
from terraseg.training.result import RunOptions, TrainResult
from terraseg.version import __version__

log = logging.getLogger(__name__)


def train_network(cfg: ExperimentConfig, after_seconds: float = 0.0, **run: Unpack[RunOptions]) -> TrainResult:
    """Train a segmentation or classification network and write ``<run_dir>/model.terraseg``.

    Args:
        cfg: validated experiment config.
        after_seconds: seconds of the budget kept for work after this network (the challengers' comparison).
        **run: how the run starts (:class:`terraseg.training.result.RunOptions`).

    Returns:
        :class:`TrainResult`.

    Raises:
        InputFileError: bad data.
        ConfigError: bad model settings.
        BundleError: never on success.
    """
    resume, scenes = run.get("resume", False), run.get("scenes")
    started = run.get("started")
    t_start = started if started is not None else time.monotonic()
    deadline = t_start + 60 * cfg.train.max_minutes if cfg.train.max_minutes else None
    configure(cfg.data.cache_mb, cfg.data.spill_mb)
    run_dir = cfg.run_dir()
    output_folder(run_dir)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    L.seed_everything(cfg.train.seed, workers=True, verbose=False)
    data = _training_data(cfg, run_dir / "stats.json", resume, scenes)
    config = cfg.model_dump(mode="json")
    config["data"]["band_names"] = config["data"]["band_names"] or data.input_kw.get("band_names")  # pretrained bands map by name
    module = data.task_cls(config, data.in_channels, cfg.train.max_epochs * max(len(data.train_dl), 1))
    if isinstance(module, SegmentationModule):
        module.train_stats = data.stats
        if data.val_dl is not None:
            module.val_scenes, module.val_stats = data.val_scenes, data.stats
    # under DDP's launcher every rank runs this function; only global rank 0 tracks, builds and saves the bundle
    tracker = (
        Tracker(cfg, run_dir, run.get("tracking_uri"), run.get("parent_run_id"))
        if cfg.tracking.enabled and is_main_process()
        else None
    )
    if tracker is not None:
        tracker.log_params(flatten_params(cfg.model_dump(mode="json")) | {"in_channels": data.in_channels})
    # the drift profile before the epochs: it needs the data and statistics, not the network, so its real cost comes out of
    # the training time and no bundle goes without one (fitted after training it was the step a tight budget left out)
    drift = _drift_profile(cfg, data) if task_named(cfg.task).dense and is_main_process() else None
    export_s = _export_reserve(cfg, module, data.in_channels) if deadline is not None else 0.0
    trainer, ckpt_cb, throughput, budget = _trainer(
        cfg, module, data, deadline, tracker, list(run.get("callbacks") or []), run_dir, export_s + after_seconds
    )
    train_seconds = _fit(trainer, module, data, run_dir / "checkpoints" / "last.ckpt", resume, tracker)
    if not trainer.is_global_zero:  # the other DDP ranks stop here: rank 0 writes the bundle
        return TrainResult(
            run_dir / "model.terraseg",
            run_dir,
            dict(module.best),
            trainer.current_epoch,
            train_seconds,
            throughput.samples / max(throughput.seconds, 1e-9),
            None,
            throughput.validation_share,
            rank=trainer.global_rank,
        )

    model, best, history, kept_epoch, kept = _kept_weights(cfg, module, ckpt_cb, run_dir, data.in_channels)
    manifest = _manifest(cfg, data, best, history, trainer, tracker, train_seconds, throughput)
    manifest.training["stopped"] = stop_reason = _stop_reason(cfg, trainer, budget)
    manifest.training["kept"] = kept
    manifest.drift = drift
    skipped: list[str] = []
    _after_fit(
        cfg, model, manifest, data, best, budget.pass_seconds() if budget is not None else None, deadline, skipped, export_s
    )
    bundle_path = run_dir / "model.terraseg"
    wall = _write_bundle(
        cfg, Bundle(manifest, model, _extras(cfg, data)), bundle_path, data, deadline, skipped, t_start, export_s
    )
    curve = plot_learning_curve(history, run_dir / "learning_curve.png")
    write_history(history, run_dir / "history.csv")  # per-epoch curves for `dvc plots` (one logging path)
    if tracker is not None:
        tracker.log_artifacts(bundle_path, *([curve] if curve else []))
        if best:  # the kept network's validation score
            tracker.log_metrics({"best/val_score": float(best.get("val/score", 0.0))})
        tracker.finish()
    return TrainResult(
        bundle_path,
        run_dir,
        best,
        trainer.current_epoch,
        train_seconds,
        throughput.samples / max(throughput.seconds, 1e-9),
        tracker.uri if tracker else None,
        throughput.validation_share,
        history=history,
        split=data.split.record if data.split is not None else None,
        wall_seconds=wall,
        budget_skipped=skipped,
        memory=manifest.training["cache"],
        stop_reason=stop_reason,
        kept=kept,
        kept_epoch=kept_epoch,
    )


def _stop_reason(cfg: ExperimentConfig, trainer: L.Trainer, budget: Budget | None) -> str:
    """Why training stopped, in words: the wall budget, early stopping, or the planned epochs."""
    epochs = f"{trainer.current_epoch} of {cfg.train.max_epochs} epochs"
    if budget is not None and budget.stopped:
        return f"the wall budget ({epochs}; train.max_minutes {cfg.train.max_minutes:g})"
    early = next((cb for cb in trainer.callbacks if isinstance(cb, EarlyStopping)), None)  # type: ignore[attr-defined]
    if early is not None and early.stopped_epoch > 0:
        return (
            f"early stopping: no better validation score for {cfg.train.patience} epochs ({epochs}; "
            f"train.patience {cfg.train.patience})"
        )
    return f"the planned epochs ran out ({epochs}; raise train.max_epochs to train longer)"


@dataclass
class _Data:
    """A run's loaders and what they tell the bundle."""

    train_dl: DataLoader
    val_dl: DataLoader | None
    in_channels: int
    stats: NormStats
    input_kw: dict[str, Any]
    split: Split | None
    task_cls: type[ModuleBase]

    @property
    def train_scenes(self) -> list:
        """The training scenes (segmentation)."""
        return self.train_dl.dataset.scenes  # type: ignore[attr-defined]

    @property
    def val_scenes(self) -> list:
        """The validation scenes (segmentation; empty without validation)."""
        return self.val_dl.dataset.scenes if self.val_dl is not None else []  # type: ignore[attr-defined]


def _training_data(cfg: ExperimentConfig, stats_path: Path, resume: bool, scenes: tuple[list, list] | None) -> _Data:
    """The loaders of a classification or segmentation run, and the exact split (recorded in the bundle)."""
    if not task_named(cfg.task).dense:
        from terraseg.training.classify import ClassificationModule, classification_loaders

        train_dl, val_dl, in_channels, stats, input_kw = classification_loaders(cfg, stats_path, resume)
        split = None
        if val_dl is not None:  # the exact images validated on, for `evaluate --split val`
            split = Split(
                [],
                [],
                {
                    "method": "sources" if cfg.data.val else "stratified",
                    "seed": cfg.train.seed,
                    "files": [[str(it.path), int(it.label)] for it in val_dl.dataset.items],
                },
            )
        return _Data(train_dl, val_dl, in_channels, stats, input_kw, split, ClassificationModule)
    split = (
        Split(*scenes)
        if scenes
        else split_scenes(cfg.data, cfg.ignore_index, cfg.num_classes, cfg.train.seed, [c.name for c in cfg.classes])
    )
    train_dl, val_dl, in_channels, stats, input_kw = segmentation_loaders(cfg, stats_path, resume, (split.train, split.val))
    return _Data(train_dl, val_dl, in_channels, stats, input_kw, split, SegmentationModule)


def _trainer(
    cfg: ExperimentConfig,
    module: ModuleBase,
    data: _Data,
    deadline: float | None,
    tracker: Tracker | None,
    extra: list,
    run_dir: Path,
    export_s: float = 0.0,
) -> tuple[L.Trainer, ModelCheckpoint, Throughput, Budget | None]:
    """Lightning's trainer with terraseg's callbacks: best/last checkpoints, early stopping, throughput, the wall budget."""
    monitor, mode = ("val/score", "max") if data.val_dl is not None else ("train/loss", "min")
    # best.ckpt: the best epoch by the monitored score; last.ckpt: every epoch, for --resume. Lightning 2.6's save_last
    # refreshes last.ckpt only when the best improves (a resumed run restarted from the best epoch), and its version
    # counter wrote best-v1/last-v1 beside an earlier run's files (a resumed run then read the earlier run's)
    ckpt_cb = ModelCheckpoint(
        dirpath=run_dir / "checkpoints", filename="best", monitor=monitor, mode=mode, enable_version_counter=False
    )
    last_cb = ModelCheckpoint(
        dirpath=run_dir / "checkpoints",
        filename="last",
        monitor=None,
        save_top_k=1,
        every_n_epochs=1,
        enable_version_counter=False,
    )
    throughput = Throughput()
    # a bar only when the CLI asks (a terminal, no --quiet); else a line per epoch, flushed (files, pipes, CI)
    bar = [progress_bar()] if progress.enabled() else [EpochLines()] if progress.lines() else []
    callbacks = [
        ckpt_cb,
        last_cb,
        EarlyStopping(monitor=monitor, mode=mode, patience=cfg.train.patience),
        throughput,
        *bar,
        *extra,
    ]
    segmenting = task_named(cfg.task).dense and data.val_dl is not None
    budget = None
    if deadline is not None:
        # a tiling choice validates with sliding windows: about twice the pixels of the one-window validation pass
        # passes after training: calibration's, the tiling choice's (about two), and the comparison with each challenger
        # (the network's and the baseline's on the validation blocks: terraseg.training.candidates)
        after = (
            int(segmenting and cfg.train.calibrate)
            + 2 * int(segmenting and cfg.train.choose_tiling)
            + 2 * len(cfg.train.challengers)
        )
        budget = Budget(deadline, after, throughput, export_s)
        callbacks.append(budget)
    logger: Any = False
    if tracker is not None:
        logger = tracker.lightning_logger()
        callbacks.append(LearningRateMonitor(logging_interval="epoch"))  # lr-<optimizer> per epoch in the run
    trainer = L.Trainer(
        max_epochs=cfg.train.max_epochs,
        max_time=None,  # train.max_minutes is wall time for the whole run: Budget stops training in time
        precision=cfg.training_precision(),  # type: ignore[arg-type]
        devices=cfg.train.devices,
        # 'auto' is CUDA or the CPU (terraseg.devices.training_device): Lightning's own 'auto' would pick Apple's MPS,
        # which no other step (precision, prediction) uses
        accelerator=cfg.training_device() if cfg.train.accelerator == "auto" else cfg.train.accelerator,
        strategy=_strategy(cfg, module, data.in_channels),
        num_nodes=cfg.train.num_nodes,
        use_distributed_sampler=False,  # EpochSampler and ShardSampler shard over ranks themselves (terraseg.data.datasets)
        logger=logger,
        callbacks=callbacks,
        default_root_dir=run_dir,
        log_every_n_steps=10,
        num_sanity_val_steps=0,
        enable_model_summary=False,
        enable_progress_bar=progress.enabled(),
        limit_val_batches=1.0 if data.val_dl is not None else 0,
    )
    return trainer, ckpt_cb, throughput, budget


def _fit(trainer: L.Trainer, module: ModuleBase, data: _Data, last: Path, resume: bool, tracker: Tracker | None) -> float:
    """Run the epochs (from ``last`` when resuming); the seconds it took. A failed run is marked so in MLflow."""
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*Checkpoint directory.*exists and is not empty.*")
        warnings.filterwarnings("ignore", message=".*LeafSpec.*is deprecated.*")
        warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
        try:
            trainer.fit(module, data.train_dl, data.val_dl, ckpt_path=str(last) if resume and last.is_file() else None)
        except BaseException as e:  # a failed, interrupted or pruned run is marked so in MLflow, not left RUNNING
            if tracker is not None:
                tracker.finish("KILLED" if type(e).__name__ in ("TrialPruned", "KeyboardInterrupt", "Terminated") else "FAILED")
            raise
    return time.perf_counter() - t0


def keep_epoch(mode: str, best: dict[str, Any], last: dict[str, Any], units: dict[str, np.ndarray]) -> tuple[str, str | None]:
    """Which epoch's network a run keeps, ``"best"`` or ``"last"``, and a sentence saying why (None: nothing to say).

    With ``mode`` 'auto' the best epoch by validation is kept only when validation separates it from the last epoch:
    the paired block-bootstrap interval of their difference on the same held-out units
    (:func:`terraseg.evaluation.bootstrap.paired_difference`) excludes 0. Otherwise the figures cannot tell the two apart
    and the last network, trained through the whole schedule, is kept. Picking the maximum of noisy figures favours
    a lucky epoch (the winner's curse); nnU-Net smooths the validation score for the same reason (Isensee et al.,
    Nature Methods 2021, its exponential moving average of the pseudo-Dice).

    Args:
        mode: ``train.keep``: 'auto', 'best' or 'last'.
        best: the best and the last epoch's validation figures (``epoch``, ``val/score``...); empty without validation.
        last: the best and the last epoch's validation figures (``epoch``, ``val/score``...); empty without validation.
        units: ``{"best": (U, K, K), "last": (U, K, K)}`` confusion matrices per validation unit; missing under DDP.

    Returns:
        ``(which, why)``.
    """
    if mode == "last" and not last:  # no validation: the last network, whatever the training loss did
        return "last", "kept the last epoch's network (train.keep last)"
    if mode == "best" or not best or not last or best.get("epoch") == last.get("epoch"):
        return "best", None
    b, e = best["epoch"] + 1, last["epoch"] + 1
    if mode == "last":
        return "last", f"kept the last epoch's network (epoch {e}; train.keep last), not the best by validation (epoch {b})"
    if "best" not in units or "last" not in units or units["best"].shape != units["last"].shape or len(units["last"]) < 2:
        return "best", None
    from terraseg.evaluation.bootstrap import format_interval, paired_difference

    d = paired_difference(units["last"], units["best"])
    diff = f"last - best {format_interval(d['difference'], d['interval'])} over {d['units']} validation units"
    if d["separates"]:
        return "best", f"kept the best epoch's network (epoch {b}): validation separates it from the last epoch's ({diff})"
    return "last", (
        f"kept the last epoch's network (epoch {e}): validation cannot tell it from the best epoch {b} ({diff}; train.keep auto)"
    )


def _kept_weights(
    cfg: ExperimentConfig, module: ModuleBase, ckpt_cb: ModelCheckpoint, run_dir: Path, in_channels: int
) -> tuple[torch.nn.Module, dict[str, Any], list[dict[str, Any]], str, str | None]:
    """The network the run keeps (:func:`keep_epoch`), its validation figures, the epochs' history, which epoch
    (``"best"`` or ``"last"``) and why it was kept."""
    last_path = run_dir / "checkpoints" / "last.ckpt"
    best_path = Path(ckpt_cb.best_model_path) if ckpt_cb.best_model_path else last_path
    ckpt = torch.load(best_path, map_location="cpu", weights_only=True)
    saved = ckpt.get("terraseg", {})
    best = dict(module.best) or saved.get("best", {})
    history = module.history or saved.get("history", [])  # ddp_spawn: the module here never trained
    last = dict(getattr(module, "last", {}) or {})
    which, why = ("best", None)
    if last_path.exists() and best_path != last_path:
        which, why = keep_epoch(cfg.train.keep, best, last, getattr(module, "unit_cms", {}))
    if which == "last":
        kept = torch.load(last_path, map_location="cpu", weights_only=True)
        saved_last = kept.get("terraseg", {})
        # with validation, the weights validated last (a budget stop mid-epoch leaves last.ckpt past them: then the best)
        if not last or (
            saved_last.get("last", {}).get("epoch") == last.get("epoch")
            and kept.get("global_step") == saved_last.get("last_step")
        ):
            ckpt, best = kept, last or best
        else:
            which, why = "best", None
    state = {k[len("model.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    model = build_model(cfg.model, in_channels, cfg.num_classes, load_pretrained=False)
    model.load_state_dict(state)
    return model, best, history, which, why


def _manifest(
    cfg: ExperimentConfig,
    data: _Data,
    best: dict,
    history: list,
    trainer: L.Trainer,
    tracker: Tracker | None,
    train_seconds: float,
    throughput: Throughput,
) -> BundleManifest:
    """The bundle's manifest: input spec, figures, the exact split and how the run went."""
    d, classify = cfg.data, not task_named(cfg.task).dense
    return BundleManifest(
        name=cfg.name,
        task=cfg.task,
        model=cfg.model,
        classes=cfg.classes,
        ignore_index=cfg.ignore_index,
        input=InputSpec(
            bands=data.in_channels,
            normalization=data.stats,
            train_window=d.window,
            predict_window=d.window if classify else max(d.window, MIN_PREDICT_WINDOW),
            input_size=d.window if classify else None,
            **data.input_kw,
        ),
        metrics={"validation": best, "history": history},
        split=data.split.record if data.split is not None else None,
        training={
            "config": cfg.model_dump(mode="json"),
            "epochs": trainer.current_epoch,
            "mlflow_run_id": tracker.run_id if tracker else None,
            "train_seconds": round(train_seconds, 1),
            "terraseg_version": __version__,
            "chips_per_second": round(throughput.samples / max(throughput.seconds, 1e-9), 2),
            "wall_chips_per_second": round(throughput.samples / max(throughput.wall - throughput.val_seconds, 1e-9), 2),
            "steady_wall_chips_per_second": round(throughput.steady_rate, 2) if throughput.steady_rate else None,
            "validation_seconds": round(throughput.val_seconds, 1),
            "validation_share": round(throughput.validation_share, 4),
            "precision": cfg.training_precision(),
            "world_size": trainer.world_size,
            "strategy": cfg.train.strategy,
        },
    )


def _after_fit(
    cfg: ExperimentConfig,
    model: torch.nn.Module,
    manifest: BundleManifest,
    data: _Data,
    best: dict,
    val_pass: float | None,
    deadline: float | None,
    skipped: list[str],
    export_s: float = 0.0,
) -> None:
    """Segmentation's steps after the epochs, each within the budget: temperature and the tiling choice (the drift
    profile comes after the ONNX export, :func:`_write_bundle`)."""
    if not task_named(cfg.task).dense:
        return
    window = max(cfg.data.window, MIN_PREDICT_WINDOW)
    val_scenes = data.val_scenes
    if (
        cfg.train.calibrate
        and val_scenes
        and (step := after_training("temperature calibration", deadline, val_pass, skipped, export_s)) is not None
    ):
        from terraseg.training.calibrate import calibrate_on_scenes

        with step:
            cal = calibrate_on_scenes(model, val_scenes, data.stats, window, cfg.ignore_index, seed=cfg.train.seed)
        if cal is not None:
            manifest.calibration = cal
            log.info("temperature scaling: T = %.3f, ECE %.4f -> %.4f", cal["temperature"], cal["ece_before"], cal["ece_after"])
    if (
        cfg.train.choose_tiling
        and val_scenes
        and (step := after_training("tiling choice", deadline, val_pass, skipped, export_s)) is not None
    ):
        from terraseg.training.tiling import choose_tiling

        with step:
            tiling = choose_tiling(
                model, val_scenes, data.stats, cfg, manifest.input.predict_window, one_window=best.get("val/score")
            )  # validation scored the best weights as one window
        if tiling is not None:
            manifest.input.fit_max = tiling["fit_max"]
            manifest.metrics["tiling"] = tiling


def _extras(cfg: ExperimentConfig, data: _Data) -> dict[str, bytes]:
    """The bundle's extra files: raw training windows (INT8 calibration, drift reference) for segmentation."""
    if not task_named(cfg.task).dense:
        return {}
    return {CALIBRATION: calibration_windows(data.train_scenes, cfg.data.window, cfg.train.seed)}


def _drift_profile(cfg: ExperimentConfig, data: _Data) -> dict | None:
    """The bundle's drift profile (:func:`terraseg.infer.drift.fit_drift`) from the training and validation scenes."""
    from terraseg.infer.drift import fit_drift

    t0 = time.monotonic()
    with progress.task("drift profile") if progress.enabled() else contextlib.nullcontext():
        profile = fit_drift(
            data.train_scenes,
            data.val_scenes,
            data.stats,
            max(cfg.data.window, MIN_PREDICT_WINDOW),
            cfg.train.seed,
        )
    log.info("drift profile fitted in %.1f s", time.monotonic() - t0)
    if profile is not None:
        profile["seconds"] = round(time.monotonic() - t0, 2)
    return profile


def _write_bundle(
    cfg: ExperimentConfig,
    bundle: Bundle,
    bundle_path: Path,
    data: _Data,
    deadline: float | None,
    skipped: list[str],
    t_start: float,
    export_s: float = 0.0,
) -> float:
    """Save the bundle (with its ONNX graph when asked and within the budget) and the run's memory and wall time.

    Returns:
        The run's wall seconds.
    """
    manifest = bundle.manifest
    manifest.training["cache"] = CACHE.report() | SPILL.report() | {"peak_rss_mb": peak_rss_mb()}  # the main process's
    SPILL.close()
    bundle.path = bundle_path
    export = None
    if cfg.train.export_onnx and task_named(cfg.task).dense:
        export = after_training("ONNX export", deadline, export_s, skipped)
    exported = False
    if export is not None:
        with export:
            exported = _export(bundle, data.val_scenes)
    if not exported:
        bundle.save(bundle_path)
    wall = time.monotonic() - t_start
    manifest.training["wall_seconds"] = round(wall, 1)
    if cfg.train.max_minutes:
        manifest.training["budget"] = {"minutes": cfg.train.max_minutes, "wall_seconds": round(wall, 1), "skipped": skipped}
        bundle.save(bundle_path)  # the manifest with the run's wall time
    return wall


def _strategy(cfg: ExperimentConfig, module: ModuleBase, in_channels: int) -> Any:
    """Lightning's strategy for ``train.strategy``; under DDP, parameters the loss never reaches are frozen first.

    DDP's reducer expects a gradient for every trainable parameter each step. Some encoders carry
    parameters the segmentation forward never uses (timm EfficientNet's head convolution under smp,
    for one); one forward and backward on a zero batch finds them and they are frozen (they would get
    no gradient anyway), so DDP runs without ``find_unused_parameters`` and its extra graph walk every
    step. With a fine-tuning schedule (``freeze_encoder_epochs``), which changes what trains between
    epochs, DDP looks for unused parameters every step instead.
    """
    s = cfg.train.strategy
    if s not in ("ddp", "ddp_spawn"):
        return s
    from lightning.pytorch.strategies import DDPStrategy

    if cfg.train.freeze_encoder_epochs:
        return DDPStrategy(find_unused_parameters=True, start_method="spawn" if s == "ddp_spawn" else "popen")
    model = module.model
    state = {k: v.clone() for k, v in model.state_dict().items()}  # the probe must not move batch-norm statistics
    model.train()
    w = cfg.data.window
    model(torch.zeros(2, in_channels, w, w)).float().sum().backward()
    unused = [p for p in model.parameters() if p.requires_grad and p.grad is None]
    for p in model.parameters():
        p.grad = None
    for p in unused:
        p.requires_grad_(False)
    model.load_state_dict(state)
    if unused:
        log.info("DDP: %d parameter tensors the loss never reaches are frozen", len(unused))
    return DDPStrategy(start_method="spawn" if s == "ddp_spawn" else "popen")


def _export_reserve(cfg: ExperimentConfig, module: ModuleBase, bands: int) -> float:
    """Seconds the budget keeps for the ONNX export of this run's network (0 without an export)."""
    if not cfg.train.export_onnx or not task_named(cfg.task).dense or cfg.pixel_model:
        return 0.0
    try:
        from terraseg.training.export_time import export_key, export_reserve
    except ImportError:  # no ONNX Runtime: the export is skipped with its reason at the end
        return 0.0
    return export_reserve(module.model, export_key(cfg.model.arch, cfg.model.encoder, bands, len(cfg.classes)), bands)


def _export(bundle: Bundle, scenes: list) -> bool:
    """Add the ONNX graph to a fresh bundle (checked on validation windows) and save it; False when the network does not export."""
    from terraseg.errors import BundleError
    from terraseg.prediction.export import export_onnx

    images = sorted({s.path for s in scenes if is_geotiff(getattr(s, "path", ""))})[:2]
    try:
        export_onnx(bundle, check_images=images)
        return True
    except (BundleError, ImportError) as e:
        log.warning("no ONNX graph added to %s: %s", bundle.path, e)
        return False
