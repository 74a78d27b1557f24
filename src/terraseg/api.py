"""The Python API: the commands as functions, for segmentation and scene classification alike.

Each function builds the same typed config as its command (:mod:`terraseg.config`) and goes
through the task seam (:mod:`terraseg.tasks`), so options are honoured or refused in one line
exactly as on the command line. Importing this module is cheap: the work imports lazily.

Example::

    import terraseg

    result = terraseg.train("configs/massachusetts-buildings.yaml", ["train.max_epochs=5"])
    metrics = terraseg.evaluate(result.bundle_path, split="val")   # the validation split training recorded
    metrics = terraseg.evaluate(result.bundle_path, "tile.tif", labels="buildings.zip", out_dir="eval/")
    terraseg.predict(result.bundle_path, ["big_scene.tif"], "pred/", overlap=0.25, probabilities=True)
    diff = terraseg.compare("runs/a/model.terraseg", "runs/b/model.terraseg", split="val")
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from terraseg.bundle import Bundle
    from terraseg.config import ExperimentConfig
    from terraseg.prediction.run import PredictResult
    from terraseg.training.result import TrainResult


def _load(bundle: str | Path | Bundle) -> Bundle:
    from terraseg.bundle import Bundle

    return bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)


def train(
    config: str | Path | ExperimentConfig, overrides: Sequence[str] = (), resume: bool = False, tracking_uri: str | None = None
) -> TrainResult:
    """Train what a config describes and write ``<output_dir>/model.terraseg``, as ``terraseg train CONFIG``.

    Args:
        config: a config YAML (``terraseg plan`` writes one) or a validated :class:`terraseg.config.ExperimentConfig`.
        overrides: ``key=value`` settings applied to a YAML config (``--set``), e.g. ``["train.max_epochs=5"]``.
        resume: continue an interrupted run from its last checkpoint (networks).
        tracking_uri: MLflow tracking URI instead of the config's.

    Returns:
        The run (:class:`terraseg.training.result.TrainResult`): ``bundle_path``, ``best`` validation figures, ``split``...

    Raises:
        ConfigError: an invalid config or override, or overrides given with a config object.
        InputFileError: data that cannot be read or labels that do not fit.
        OutputError: an unwritable run folder.
    """
    from terraseg.config import ExperimentConfig, load_config
    from terraseg.errors import ConfigError
    from terraseg.training.run import train as run_training

    if isinstance(config, ExperimentConfig):
        if overrides:
            raise ConfigError("overrides apply to a config file; change the config object with model_copy instead.")
        cfg = config
    else:
        cfg = load_config(config, list(overrides))
    return run_training(cfg, resume=resume, tracking_uri=tracking_uri)


def predict(bundle: str | Path | Bundle, inputs: Sequence[str | Path], out_dir: str | Path, **options: Any) -> PredictResult:
    """Predict every input with a bundle, as ``terraseg predict BUNDLE INPUTS --out OUT_DIR``.

    Args:
        bundle: a bundle path or a loaded :class:`terraseg.bundle.Bundle`.
        inputs: files, folders, globs, ``.txt`` lists or STAC JSON.
        out_dir: output folder (created; outputs appear whole or not at all).
        **options: fields of :class:`terraseg.config.inference.PredictConfig` (``probabilities``, ``overlay``,
            ``grid``, ``resume``, ``engine``...) and of :class:`terraseg.config.inference.InferenceConfig`
            (``window``, ``overlap``, ``tta``, ``backend``...).

    Returns:
        What was written (:class:`terraseg.prediction.run.PredictResult`): outputs and failures per input.

    Raises:
        ConfigError: an unknown or invalid option, or one the bundle's task does not apply (one line).
        BundleError: an unloadable bundle.
    """
    from terraseg.config.inference import PredictConfig, with_inference
    from terraseg.tasks import run_predict

    cfg = with_inference(PredictConfig, inputs=[str(p) for p in inputs], out_dir=str(out_dir), **options)
    return run_predict(cfg, _load(bundle))


def evaluate(
    bundle: str | Path | Bundle,
    data: str | Path | list[Any] | None = None,
    out_dir: str | Path | None = None,
    split: str = "test",
    say: Callable[[str], None] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Score a bundle on labelled data, as ``terraseg evaluate BUNDLE [DATA]``.

    Args:
        bundle: a bundle path or a loaded :class:`terraseg.bundle.Bundle`.
        data: an image (with ``labels=``), an image/mask or class folder, a config YAML, labelled scenes already
            opened (:func:`terraseg.data.sources.scene_from_path`), or None: the bundle's own training config.
        out_dir: output folder (default ``<bundle folder>/<split>``).
        split: with a config (or none), ``'test'`` (``data.test``) or ``'val'`` (the exact split the bundle records).
        say: called with each warning or note line (default: logged as warnings).
        **options: the other fields of :class:`terraseg.config.inference.EvaluateConfig` (``labels``, ``attribute``,
            ``aoi``, ``overlays``, ``overrides``...) and of :class:`terraseg.config.inference.InferenceConfig`.

    Returns:
        The metrics (also in ``<out_dir>/metrics.json``): ``task``, per-class scores, headline scores with 95% intervals.

    Raises:
        ConfigError: an unknown or invalid option, one the bundle's task does not apply, or no such split.
        InputFileError: unreadable data, labels that do not fit.
    """
    from terraseg.config.inference import EvaluateConfig, with_inference
    from terraseg.tasks import run_evaluate

    b = _load(bundle)
    scenes = data if isinstance(data, list) else None
    out = out_dir or (Path(b.path).parent if b.path else Path(".")) / split
    path = None if scenes is not None or data is None else str(data)
    cfg = with_inference(EvaluateConfig, out_dir=str(out), data=path, split="test" if scenes else split, **options)
    return run_evaluate(cfg, b, say, scenes)


def compare(
    bundle_a: str | Path | Bundle,
    bundle_b: str | Path | Bundle,
    data: str | Path | None = None,
    split: str = "test",
    say: Callable[[str], None] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Score two bundles on the same data with the paired difference A - B, as ``terraseg compare A B [DATA]``.

    Args:
        bundle_a: the first bundle (A), path or loaded; its config is the default data.
        bundle_b: the second bundle (B), with A's classes and bands.
        data: an image (with ``labels=``), an image/mask folder, a config YAML, or None: A's training config.
        split: with a config (or none), ``'test'`` or ``'val'`` (A's recorded validation blocks).
        say: called with each warning or note line (default: logged as warnings).
        **options: label fields of :class:`terraseg.config.inference.EvaluateConfig` (``labels``, ``attribute``,
            ``mapping``, ``aoi``, ``overrides``...).

    Returns:
        ``{"a", "b", "difference", "units", "unit", "score"}``: each score with its 95% interval and the paired
            difference with its own (:func:`terraseg.evaluation.compare.compare_bundles`).

    Raises:
        BundleError: bundles with other classes or bands, or a task that is not segmentation.
        ConfigError: an invalid option or split.
    """
    import logging

    from terraseg.config.inference import EvaluateConfig
    from terraseg.evaluation.compare import check_comparable, compare_bundles
    from terraseg.formats import is_config
    from terraseg.tasks import task_for

    say = say or logging.getLogger(__name__).warning
    a, b = _load(bundle_a), _load(bundle_b)
    check_comparable(a, b)  # before any scene is opened
    which = EvaluateConfig(out_dir=".", data=str(data) if data else None, split=split, **options)
    task = task_for(a)
    task.check_evaluate(which)
    scenes = task.evaluation_data(which, a, say)
    validation = split == "val" and (data is None or is_config(data))
    if validation and (a.manifest.split or {}).get("units") != (b.manifest.split or {}).get("units"):
        say(
            "warning: these are A's validation blocks; B held out others, so it may have trained on some of these "
            "pixels, which favours B."
        )
    return compare_bundles(a, b, scenes, validation=validation)


__all__ = ["compare", "evaluate", "predict", "train"]
