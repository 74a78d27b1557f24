"""Typed run configuration: the single source of truth for a run.

A YAML file is validated into :class:`ExperimentConfig`; the CLI's ``--set key=value`` overrides are
applied to the raw mapping before validation, so both go through the same checks. Every field has a
description (``ExperimentConfig.model_json_schema()`` lists them). Unknown fields are errors, never ignored.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BeforeValidator, Field, ValidationError, model_validator

from terraseg.config.base import Strict as _Strict
from terraseg.config.base import format_validation_error, number_as_text
from terraseg.config.sources import (  # the data sources, re-exported: terraseg.config.SceneSource
    ClassFolderSource,
    ClassSpec,
    FolderSource,
    ManifestSource,
    ProjectSource,
    SceneSource,
    Source,
    VectorLabels,
)
from terraseg.errors import ConfigError


class NormalizationConfig(_Strict):
    """Per-band normalisation, with statistics computed once on the training data and stored in the bundle."""

    method: Literal["meanstd", "percentile", "none"] = "meanstd"
    """'meanstd': (x - mean) / std; 'percentile': scale [low, high] percentiles to [0, 1], clipped."""
    percentiles: tuple[float, float] = Field((2.0, 98.0), description="Low and high percentiles for method 'percentile'.")
    max_pixels: int = Field(2_000_000, description="Pixels sampled (uniformly, seeded) per band to compute statistics.")
    stats_file: str | None = None
    """Use the statistics of this `terraseg stats` output (stats.json) instead of sampling the training scenes."""
    mean: list[float] | None = None
    """Fixed per-band means for 'meanstd' (one value for all bands, or one per band), in the data's units: a pretrained
    encoder's own normalisation (e.g. 0 for TorchGeo's SSL4EO-S12 weights) instead of the data's."""
    std: list[float] | None = None
    """Fixed per-band standard deviations to go with `mean` (e.g. 10000 for SSL4EO-S12: reflectance x 1e4)."""


class AugmentConfig(_Strict):
    """Batch augmentation on the training device (segmentation), besides the flips of `data.flips`.

    Geometric parameters move image, mask and nodata together; photometric ones act per band on the
    normalised image and keep nodata at 0 (terraseg.training.augment).
    """

    zoom: float = Field(0.0, ge=0.0, lt=1.0)
    """Zoom range: scale drawn uniformly in [1/(1+zoom), 1+zoom] (kornia RandomAffine; Keras zoom 0.2 ~ 0.2)."""
    shear: float = Field(0.0, ge=0.0, le=1.0, description="Shear angle range in radians (Keras shear_range 0.2 = 0.2).")
    rotate: float = Field(0.0, ge=0.0, le=180.0, description="Rotation range in degrees (any angle; D4 covers multiples of 90).")
    p_affine: float = Field(0.5, ge=0.0, le=1.0, description="Share of windows given the random affine transform.")
    brightness: float = Field(0.0, ge=0.0, description="Per-band shift range in normalised units (std units for meanstd).")
    contrast: float = Field(0.0, ge=0.0, lt=1.0, description="Per-band gain range: gain in [1 - contrast, 1 + contrast].")
    gamma: float = Field(0.0, ge=0.0, description="Per-band gamma range on the band's range: gamma in [1/(1+g), 1+g].")
    noise: float = Field(0.0, ge=0.0, description="Standard deviation of added Gaussian noise, in normalised units.")
    p_photometric: float = Field(0.5, ge=0.0, le=1.0, description="Share of windows given the photometric transforms.")


class DataConfig(_Strict):
    """Where samples come from and how windows are drawn."""

    train: list[Source] = Field(description="Training sources.")
    val: list[Source] = Field(default_factory=list, description="Validation sources; when empty, `val_fraction` is held out.")
    test: list[Source] = Field(default_factory=list, description="Test sources (used by `terraseg evaluate CONFIG`).")
    val_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    """Share of labelled pixels held out when `val` is empty: spatial blocks of raster scenes (with a buffer) and whole
    folder images, chosen so that every class has validation pixels (terraseg.data.holdout)."""
    holdout_block: int | None = Field(None, ge=16)
    """Side in pixels of the hold-out's spatial blocks; default about 64 blocks over the labelled area (64-2048 px)."""
    holdout_buffer: int | None = Field(None, ge=0)
    """Pixels around each validation block whose labels training ignores; default an eighth of the block."""
    data_root: str | None = Field(None, description="Root for relative data paths; default $TERRASEG_DATA or ../shared/datasets.")
    window: int = Field(256, ge=32)
    """Window (chip) size in pixels for training and validation; a multiple of 32 for segmentation. Classification: the
    side images are resized to."""
    samples_per_epoch: int = Field(512, ge=1, description="Random training windows drawn per epoch.")
    rare_class_share: float = Field(0.5, ge=0.0, le=1.0)
    """Share of training windows centred on a pixel of a non-background class (sparse targets sampled uniformly teach a
    net to predict blank masks)."""
    augment: bool = True
    """Augment training windows: random flips and 90-degree rotations (`flips`), plus `augmentation` (zoom, shear,
    rotation, photometric), all on whole batches on the training device."""
    augmentation: AugmentConfig = Field(default_factory=AugmentConfig)
    """Geometric and photometric batch augmentation."""
    flips: Literal["d4", "horizontal"] = "d4"
    """Augmenting flips: 'd4' (flips and 90-degree rotations: overhead imagery), 'horizontal' (left-right only:
    ground-level photos such as the Intel scenes)."""
    crop_scale: tuple[float, float] = (0.6, 1.0)
    """Classification: random-resized-crop area share range (Szegedy et al. 2015), then resized to `window`."""
    band_names: list[str] | None = None
    """Names of the input bands in order (e.g. [red, green, blue, nir] or Sentinel-2 [B01, ..., B12]); needed by spectral
    indices, stored in the bundle."""
    batch_size: int = Field(8, ge=1, description="Windows per training batch.")
    cache_mb: float = Field(1024, ge=0)
    """Memory for decoded scenes and images, in MiB, whatever the number of scenes: a least-recently-used cache per
    process, shared out among the loader workers; GDAL's block cache gets a quarter (terraseg.io.cache)."""
    spill_mb: float = Field(16384, ge=0)
    """Local disk for decoded scenes once they exceed `cache_mb`, in MiB: each is decoded and rasterized once, written
    uncompressed in tiles to a folder under the system's temporary folder, read back window by window, and removed at
    the end of the run (terraseg.io.cache.SpillStore). 0: decode every window instead."""
    num_workers: int | None = Field(None, ge=0)
    """DataLoader worker processes (0 = in the main process); default from the machine: on a GPU up to 8 (cores - 2), on
    a CPU 0 up to 4 cores (the network step dominates there), else cores / 4."""
    normalization: NormalizationConfig = Field(default_factory=NormalizationConfig, description="Band normalisation.")


class ModelConfig(_Strict):
    """Model: a segmentation network (smp, plain U-Net), a timm classifier, or a classical pixel baseline."""

    arch: Literal[
        "unet",
        "deeplabv3",
        "deeplabv3plus",
        "fpn",
        "plain_unet",
        "classifier",
        "random_forest",
        "logistic_regression",
        "gradient_boosting",
    ] = "unet"
    """Architecture. 'classifier': a timm network named by `encoder` (task 'classification'). 'random_forest' |
    'logistic_regression' | 'gradient_boosting': scikit-learn per-pixel models (see `baseline`)."""
    encoder: str = "resnet34"
    """smp encoder name (resnet18/34/50, efficientnet-b0, tu-<timm name>, ...); for 'classifier' any timm model name
    ('xception' = timm's legacy_xception, Chollet 2017; resnet18, efficientnet_b0, convnext_tiny...)."""
    drop_rate: float = Field(0.0, ge=0, lt=1, description="Dropout before the classifier head ('classifier' only).")
    encoder_weights: str | None = None
    """None (random init, the default), a local weights file (.safetensors/.pth, loaded with weights_only),
    'package:<name>' (weights shipped in an installed package), a hub name such as 'imagenet' (needs internet), or
    TorchGeo's published remote-sensing weights 'torchgeo:<Enum>.<MEMBER>' (e.g.
    torchgeo:ResNet18_Weights.SENTINEL2_ALL_MOCO; bands mapped onto data.band_names; terraseg.models.rs_weights)."""
    weights_file: str | None = None
    """With 'torchgeo:' weights: a local copy of their file (default: the cache folder's weights/, torch hub's
    checkpoints/, else a download when online)."""

    @model_validator(mode="after")
    def _weights_fit_the_network(self) -> ModelConfig:
        """TorchGeo weights load into smp segmentation encoders only; ``weights_file`` goes with them."""
        if (self.encoder_weights or "").startswith("torchgeo:") and self.arch not in (
            "unet",
            "deeplabv3",
            "deeplabv3plus",
            "fpn",
        ):
            raise ValueError(
                f"model.encoder_weights {self.encoder_weights} applies to the smp segmentation networks (unet, fpn, "
                f"deeplabv3, deeplabv3plus), not model.arch {self.arch}"
            )
        if self.weights_file and not (self.encoder_weights or "").startswith("torchgeo:"):
            raise ValueError(
                "model.weights_file is the local copy of 'torchgeo:' weights; name them in model.encoder_weights, or "
                "give a plain weights file as model.encoder_weights"
            )
        return self

    encoder_depth: int = Field(5, ge=3, le=5, description="Encoder stages (smp U-Net/FPN) or U-Net levels (plain_unet).")
    base_filters: int = Field(32, ge=4, description="Filters of the first level of plain_unet, doubled at each level.")


PIXEL_ARCHS = ("random_forest", "logistic_regression", "gradient_boosting")


class BaselineConfig(_Strict):
    """Per-pixel features and estimator settings of the classical baselines (scikit-learn)."""

    indices: list[str] = Field(default_factory=list)
    """Spectral indices added as features, from `data.band_names`: ndvi, ndwi, mndwi, ndbi, savi, evi (see
    terraseg.models.pixel.INDICES for formulas and sources)."""
    texture_window: int | None = Field(None, ge=3)
    """Add local mean and standard deviation of every band in a window of this many pixels (odd)."""
    samples_per_class: int = Field(20000, ge=10, description="Training pixels drawn per class (class balancing).")
    n_estimators: int = Field(200, ge=1, description="Trees (random forest) or boosting iterations (gradient boosting).")
    max_depth: int | None = Field(None, ge=1)
    """Tree depth limit (None: unlimited for forests, 8 leaves-depth for boosting)."""
    C: float = Field(1.0, gt=0, description="Inverse regularisation strength (logistic regression).")
    learning_rate: float = Field(0.1, gt=0, description="Gradient boosting learning rate.")
    n_jobs: int = Field(-1, description="Parallel jobs for forests and prediction (-1 = all cores).")


class LossTerm(_Strict):
    """One weighted loss term."""

    name: Literal["dice", "jaccard", "ce", "focal"] = Field(description="'ce' is BCE for binary tasks, CE otherwise.")
    weight: float = Field(1.0, gt=0, description="Weight of this term in the sum.")


class OptimizerConfig(_Strict):
    """Optimiser and learning-rate schedule."""

    name: Literal["adam", "adamw", "sgd", "lion"] = Field("adamw", description="Optimiser (Lion: Chen et al. 2023, via timm).")
    lr: float = Field(1e-3, gt=0, description="Peak learning rate.")
    weight_decay: float = Field(1e-4, ge=0, description="Weight decay.")
    momentum: float = Field(0.9, ge=0, description="Momentum (SGD only).")
    scheduler: Literal["none", "cosine", "onecycle"] = Field("onecycle", description="Learning-rate schedule, stepped per batch.")


class TrainConfig(_Strict):
    """The training loop (Lightning)."""

    max_epochs: int = Field(20, ge=1, description="Epochs at most.")
    max_minutes: float | None = Field(None, gt=0)
    """Stop after this many minutes of training (the best checkpoint is kept)."""
    patience: int = Field(10, ge=1, description="Early stopping: epochs without a better validation score.")
    challengers: list[Literal["random_forest", "logistic_regression", "gradient_boosting"]] = Field(default_factory=list)
    """Segmentation: pixel baselines fitted beside the network within the same budget and on the same hold-out (first, in
    seconds; the network trains in the time left). The run keeps the one the paired block-bootstrap comparison on the
    validation blocks prefers, or the network when it cannot tell them apart; both figures are printed and recorded in
    the bundle (`manifest.training.candidates`). `terraseg plan` sets it for small label sets (docs/plan.md)."""
    keep: Literal["auto", "best", "last"] = "auto"
    """Which epoch's network the bundle keeps. 'best': the best validation score. 'last': the last epoch. 'auto': the
    best unless validation cannot tell it from the last (the paired block-bootstrap interval of their difference holds
    0), then the last: on the demo's 20 validation blocks the best-by-validation network (epoch 4) scored 0.018
    [0.007, 0.031] IoU below the last one (epoch 16) on the unseen tile (docs/benchmarks.md). 'auto' needs
    validation's units of one process: classification (scored over all images at once) and DDP keep the best."""
    precision: Annotated[Literal["auto", "32", "bf16-mixed", "16-mixed"], BeforeValidator(number_as_text)] = "auto"
    """Numeric precision (autocast for the mixed ones); 'auto': bf16-mixed on a device with native bf16 (AVX-512 BF16 /
    AMX CPUs, Ampere+ GPUs), 16-mixed on other GPUs, else 32 (YAML's number 32 is taken too)."""
    accelerator: str = "auto"
    """Lightning accelerator: auto (CUDA when PyTorch sees a GPU, else the CPU; Apple's MPS is not used), cpu, gpu."""
    devices: int | str = Field("auto", description="Lightning devices: processes (CPU) or GPUs per node, e.g. 2, or 'auto'.")
    strategy: Literal["auto", "ddp", "ddp_spawn"] = "auto"
    """Lightning strategy: 'ddp' runs one process per device (gloo on CPU, NCCL on GPU; the launcher re-runs the command,
    or torchrun / SLURM start the processes), 'ddp_spawn' spawns them from this process. Windows are sharded across
    ranks, validation confusion matrices are summed over ranks (docs/scale.md)."""
    num_nodes: int = Field(1, ge=1)
    """Machines taking part (multi-node DDP; torchrun, SLURM or a PyTorchJob start them)."""
    seed: int = Field(0, description="Seed for weights, sampling and splits.")
    threads: int | None = Field(None, ge=1, description="torch CPU threads; default all cores.")
    channels_last: bool = Field(True, description="Train in NHWC memory layout (about 1.4x faster convolutions on CPU here).")
    choose_tiling: bool = True
    """Segmentation: after training, validate the best weights with images up to 1024 px as one window and with sliding
    windows; the bundle predicts with the better (terraseg.training.tiling)."""
    freeze_encoder_epochs: int = Field(0, ge=0)
    """Fine-tuning: keep the encoder frozen (weights and batch-norm statistics) for the first N epochs."""
    unfreeze: Literal["all", "progressive"] = "all"
    """After the frozen epochs: unfreeze the whole encoder, or one stage per epoch from the deepest (as the land-cover
    system unfroze its ResNet50 block by block)."""
    encoder_lr_ratio: float = Field(1.0, gt=0, le=1.0)
    """Encoder learning rate as a share of optimizer.lr (e.g. 0.1 for pretrained encoders)."""
    export_onnx: bool = True
    """Segmentation networks: end training by adding the ONNX graph to the bundle (checked against PyTorch), so
    predict/serve can run ONNX Runtime where it is the fastest backend."""
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    """Classification: cross-entropy label smoothing (Szegedy et al. 2016)."""
    calibrate: bool = True
    """Segmentation: fit temperature scaling on the validation split and store it in the bundle (Guo et al. 2017);
    classes never change, probabilities become calibrated."""


class TrackingConfig(_Strict):
    """Experiment tracking with MLflow."""

    enabled: bool = Field(True, description="Log params, per-epoch metrics and the bundle to MLflow.")
    tracking_uri: str | None = Field(None, description="MLflow URI; default a sqlite file under the run folder.")
    experiment: str | None = Field(None, description="Experiment name; default the config name.")


class TuneParam(_Strict):
    """One dimension of a hyper-parameter search (Optuna's suggest_float / suggest_int / suggest_categorical)."""

    type: Literal["float", "int", "categorical"] = Field(description="Kind of values.")
    low: float | None = Field(None, description="float / int: smallest value.")
    high: float | None = Field(None, description="float / int: largest value (inclusive).")
    log: bool = Field(False, description="float / int: sample on a log scale (learning rates, weight decay).")
    step: float | None = Field(None, description="float / int: grid step (int default 1).")
    choices: list[Any] | None = Field(None, description="categorical: the values to choose from.")

    @model_validator(mode="after")
    def _range(self) -> TuneParam:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical parameter needs a non-empty `choices` list")
        else:
            if self.low is None or self.high is None or not self.low < self.high:
                raise ValueError(f"an empty range: `low` ({self.low}) must be below `high` ({self.high})")
            if self.log and self.low <= 0:
                raise ValueError("a log-scale range needs `low` > 0")
        return self


class CrossValidationOptions(_Strict):
    """``terraseg cv``: how the scenes are cut into folds (:func:`terraseg.training.cv.cross_validate`)."""

    folds: int = Field(5, ge=2, description="Folds (K).")
    block_size: float | None = Field(None, gt=0, description="Spatial block side in CRS units (default: 4 training windows).")
    buffer: float = Field(0.0, ge=0.0, description="CRS units around validation blocks whose labels are left out of training.")
    random: bool = Field(True, description="Also run a random split (blocks one window wide) to show the leakage gap.")


class TuneRunOptions(_Strict):
    """``terraseg tune``: how long this call searches and where the study is kept (:func:`terraseg.training.tune.tune`)."""

    trials: int = Field(20, ge=1, description="Trials to run in this call (a resumed study adds them).")
    timeout: float | None = Field(None, gt=0, description="Stop starting trials after this many minutes.")
    storage: str | None = Field(None, description="Optuna storage URL (default sqlite:///<run folder>/tune/optuna.db).")
    n_jobs: int = Field(1, ge=1, description="Trials run in parallel (threads).")


class TuneConfig(_Strict):
    """``terraseg tune``: the search space and how trials are judged and stopped early."""

    params: dict[str, TuneParam] = Field(default_factory=dict)
    """Config path (e.g. 'optimizer.lr', 'model.encoder') -> its range; each trial trains the config with sampled values."""
    pruner: Literal["median", "hyperband", "none"] = "median"
    """Stops unpromising trials after a validation epoch (Optuna MedianPruner / HyperbandPruner)."""
    startup_trials: int = Field(2, ge=0, description="Trials that always run to the end before pruning starts.")
    include_config: bool = True
    """Trial 0 trains the config's own values (when inside the ranges): the baseline the search is compared with."""
    seed: int = Field(0, description="TPE sampler seed.")


class ExperimentConfig(_Strict):
    """A whole training run."""

    name: str = Field(description="Run name; also the default MLflow experiment.")
    task: Literal["segmentation", "classification"] = "segmentation"
    """'segmentation' (a class per pixel) or 'classification' (a class per image or window)."""
    classes: list[ClassSpec] = Field(min_length=2, description="Output classes in id order (id 0 first).")
    ignore_index: int = Field(255, description="Mask value excluded from loss and metrics (nodata, unknown).")
    data: DataConfig = Field(description="Data sources and sampling.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="Architecture.")
    baseline: BaselineConfig = Field(default_factory=BaselineConfig)
    """Pixel-baseline features and estimator (pixel archs only)."""
    loss: list[LossTerm] = Field(default_factory=lambda: [LossTerm(name="ce"), LossTerm(name="dice")])
    """Loss terms, summed."""
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig, description="Optimiser.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Training loop.")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, description="MLflow tracking.")
    tune: TuneConfig = Field(default_factory=TuneConfig, description="Hyper-parameter search space (`terraseg tune`).")
    output_dir: str = Field("runs/${name}", description="Run folder (checkpoints, bundle, MLflow store); ${name} expands.")

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    @property
    def binary(self) -> bool:
        """True for two-class tasks, trained with one sigmoid output (class 1 = positive)."""
        return len(self.classes) == 2

    @property
    def pixel_model(self) -> bool:
        """True for the scikit-learn per-pixel baselines."""
        return self.model.arch in PIXEL_ARCHS

    @model_validator(mode="after")
    def _task_fits(self) -> ExperimentConfig:
        kinds = {s.kind for s in self.data.train + self.data.val + self.data.test}
        if self.train.challengers and self.task == "classification":
            raise ValueError(
                "train.challengers are pixel baselines fitted beside a segmentation network; for task "
                "classification set train.challengers: []"
            )
        if self.task == "classification":
            if self.model.arch != "classifier":
                raise ValueError(f"task 'classification' needs model.arch 'classifier', not '{self.model.arch}'")
            if kinds - {"classes"}:
                raise ValueError("task 'classification' reads class folders (data sources of kind 'classes')")
        elif "classes" in kinds or self.model.arch == "classifier":
            raise ValueError("class folders and model.arch 'classifier' need task 'classification'")
        elif self.data.window % 32:  # classifiers pool globally and take any input size
            raise ValueError(
                f"data.window must be a multiple of 32 for segmentation (encoders downsample 5 times), got {self.data.window}"
            )
        return self

    @model_validator(mode="after")
    def _ignore_outside(self) -> ExperimentConfig:
        if 0 <= self.ignore_index < len(self.classes):
            raise ValueError(f"ignore_index {self.ignore_index} collides with a class id (0..{len(self.classes) - 1})")
        return self

    def training_device(self) -> str:
        """'cuda' when ``train.accelerator`` allows a GPU and one is present, else 'cpu' (:func:`terraseg.devices.training_device`)."""
        from terraseg.devices import training_device

        return training_device(self.train.accelerator)

    def training_precision(self) -> str:
        """The Lightning precision this run uses (``train.precision`` with 'auto' resolved for this machine)."""
        from terraseg.devices import run_precision

        return run_precision(self.train.precision, self.training_device())

    def run_dir(self) -> Path:
        """The run folder, with ``${name}`` expanded."""
        return Path(self.output_dir.replace("${name}", self.name))


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form key=value (e.g. train.max_epochs=3)")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (values parsed as YAML) to a raw config mapping in place.

    Raises:
        ConfigError: when an override is malformed or walks into a non-mapping.
    """
    for item in overrides:
        keys, value = _parse_override(item)
        node = raw
        for k in keys[:-1]:
            if isinstance(node, list) and k.isdigit() and int(k) < len(node):
                node = node[int(k)]
                continue
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {k!r} is not inside a mapping")
            node = node.setdefault(k, {})
        if isinstance(node, list) and keys[-1].isdigit() and int(keys[-1]) < len(node):
            node[int(keys[-1])] = value
        elif isinstance(node, dict):
            node[keys[-1]] = value
        else:
            raise ConfigError(f"override {item!r}: cannot set {keys[-1]!r} here")
    return raw


def with_aoi(cfg: ExperimentConfig, aoi: str | None) -> ExperimentConfig:
    """The config with the labelled extent ``aoi`` on every training and validation source (``--aoi`` of train and cv).

    Args:
        cfg: the config.
        aoi: polygons of the labelled extent, or None (the config as it is).

    Raises:
        ConfigError: a source that is not a georeferenced scene or project (an extent has nothing to apply to there).
    """
    if aoi is None:
        return cfg
    data = cfg.data.model_copy(deep=True)
    for src in [*data.train, *data.val]:
        if not isinstance(src, (SceneSource, ProjectSource)):
            raise ConfigError(
                f"--aoi {aoi}: a labelled extent applies to scene and project sources, not to a '{src.kind}' "
                "source; leave it out."
            )
        src.aoi = str(Path(aoi).resolve())
    return cfg.model_copy(update={"data": data})


def load_config(path: str | os.PathLike[str], overrides: list[str] | None = None) -> ExperimentConfig:
    """Read, override and validate a YAML experiment config.

    Args:
        path: YAML file.
        overrides: ``key.sub=value`` strings applied before validation.

    Returns:
        The validated config.

    Raises:
        ConfigError: missing or unparsable file, unknown or mistyped field, bad value.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found.")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as e:  # found by tests/test_fuzz.py
        raise ConfigError(f"{p}: not a UTF-8 text file (byte {e.start}); a config is YAML text.") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML ({str(e).splitlines()[0]}).") from None
    except RecursionError:
        raise ConfigError(f"{p}: YAML nested too deeply.") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: a config must be a YAML mapping at top level.")
    apply_overrides(raw, overrides or [])
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, str(p))) from None


__all__ = [  # the sources are re-exported from terraseg.config.sources
    "ClassFolderSource",
    "ClassSpec",
    "FolderSource",
    "ManifestSource",
    "ProjectSource",
    "SceneSource",
    "Source",
    "VectorLabels",
]
