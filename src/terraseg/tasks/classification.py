"""The scene-classification task: one class per image (or per window of a scene's grid)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from terraseg.bundle import Bundle
from terraseg.config.inference import EvaluateConfig, InferenceConfig, PredictConfig
from terraseg.formats import is_config
from terraseg.tasks import options as opts

if TYPE_CHECKING:
    from terraseg.infer.classify import ImageClassifier

Say = Callable[[str], None]


class ClassificationTask(opts.EvaluateChecks):
    """Scene-classification bundles: ``predictions.csv`` for image files, class grids for georeferenced scenes,
    image-level evaluation (accuracy, macro-F1, top-k, per-class precision/recall/F1)."""

    name, noun, dense, endpoint = "classification", "classifies scenes", False, "classify"  # see terraseg.tasks.Task

    def inference(self, bundle: Bundle, options: InferenceConfig, backend: Any = None) -> ImageClassifier:
        """The image classifier of ``bundle`` (:class:`terraseg.infer.classify.ImageClassifier`).

        Args:
            bundle: the classification bundle.
            options: batch size, device, backend, TTA.
            backend: a backend to run instead of the bundle's network (Ray Serve), or None.

        Raises:
            BundleError: 'onnx' asked for a bundle without an ONNX graph.
        """
        from terraseg.infer.classify import ImageClassifier

        return ImageClassifier(bundle, options=options, backend=backend)

    def input_size(self, bundle: Bundle) -> int:
        """The side in pixels every image is resized to (``manifest.input.input_size``)."""
        return bundle.manifest.input.side

    def windows(self, inference: ImageClassifier, height: int, width: int) -> int:
        """One: an image of any size is resized to one input."""
        return 1

    def check_predict(self, cfg: PredictConfig) -> None:
        """Refuse, in one line, a predict option this way of classifying does not apply.

        Args:
            cfg: the predict config (``grid``: classify scenes on a grid, else image files).

        Raises:
            ConfigError: the option, why, and what would work (:data:`terraseg.tasks.options.PREDICT`).
        """
        way = "grid" if cfg.grid else "files"
        what = "this bundle classifies scenes" + ("" if cfg.grid else " and these inputs are classified as image files")
        opts.check(cfg, opts.PREDICT, opts.WAYS, way, what)

    def predict(self, cfg: PredictConfig, bundle: Bundle) -> Any:
        """Classify every input (:func:`terraseg.prediction.classify.predict_classes`).

        Args:
            cfg: the predict config.
            bundle: the classification bundle.
        """
        from terraseg.prediction.classify import predict_classes
        from terraseg.prediction.run import PredictResult

        return predict_classes(cfg, bundle, PredictResult())

    def evaluation_data(self, cfg: EvaluateConfig, bundle: Bundle, say: Say) -> list[Any]:
        """The labelled images to score: a class folder, or a config's split (``val``: exactly the images training
        validated on, as the bundle records them).

        Args:
            cfg: the evaluate config (``data``, ``split``, ``overrides``).
            bundle: the bundle.
            say: warning lines.

        Raises:
            ConfigError: a config without that split.
            InputFileError: a folder naming other classes.
        """
        from terraseg.config import ClassFolderSource
        from terraseg.data.classes import ClassItem, class_items, class_items_of, train_val_items
        from terraseg.errors import ConfigError
        from terraseg.evaluation.report import bundle_config

        data = Path(cfg.data) if cfg.data else None
        if data is not None and not is_config(data):
            return class_items(ClassFolderSource(root=str(data.resolve()), split=cfg.split), bundle.class_names)
        config = bundle_config(bundle, data, cfg.overrides)
        recorded = (bundle.manifest.split or {}).get("files")
        if cfg.split == "val" and recorded:  # exactly the images training validated on
            return [ClassItem(p, int(k)) for p, k in recorded]
        if cfg.split == "val":
            say(
                f"warning: {bundle.path} records no validation images (an older bundle); they are drawn again from the "
                "config and may differ from those training validated on."
            )
        items = (
            (class_items_of(config, "test") if config.data.test else []) if cfg.split == "test" else train_val_items(config)[1]
        )
        if not items:
            raise ConfigError(f"{data or bundle.path}: config has no `data.{cfg.split}` images; use --split val.")
        return items

    def evaluate(self, cfg: EvaluateConfig, bundle: Bundle, say: Say, data: list[Any] | None = None) -> dict[str, Any]:
        """Score the bundle on :meth:`evaluation_data` (:func:`terraseg.evaluation.classify.evaluate_classifier`).

        Args:
            cfg: the evaluate config (inference options, MLflow logging).
            bundle: the bundle.
            say: warning lines.
            data: labelled data already opened, instead of :meth:`evaluation_data`.

        Returns:
            The metrics (also in ``<out_dir>/metrics.json``).
        """
        from terraseg.evaluation.classify import evaluate_classifier

        items = data if data is not None else self.evaluation_data(cfg, bundle, say)
        return evaluate_classifier(
            bundle,
            items,
            cfg.out_dir,
            max(cfg.inference.batch_size or 32, 1),
            options=cfg.inference,
            log_to_run=cfg.log_to_run,
            tracking_uri=cfg.tracking_uri,
            split=cfg.split,
        )

    def report(self, bundle: Bundle, metrics: dict[str, Any], what: str, split: str, out: Any, err: Any) -> None:
        """Print per-class precision, recall, F1 and images, accuracy, macro-F1 and top-k with 95% intervals, and warnings
        for a class without images or too wide an interval (the arguments: :meth:`terraseg.tasks.Task.report`)."""
        from rich.table import Table

        from terraseg.evaluation.bootstrap import format_interval, width_warning

        b, m = bundle, metrics
        table = Table(title=f"{b.manifest.name} on {what} ({m['n']} images)")
        for col in ("class", "precision", "recall", "F1", "images"):
            table.add_column(col)
        for name, v in m["per_class"].items():
            table.add_row(name, f"{v['precision']:.4f}", f"{v['recall']:.4f}", f"{v['f1']:.4f}", str(v["support"]))
        out.print(table)
        iv = m.get("intervals") or {}
        topk = next(k for k in m if k.startswith("top"))
        out.print(
            f"accuracy {format_interval(m['accuracy'], iv.get('accuracy'))}  macro-F1 "
            f"{format_interval(m['f1_macro'], iv.get('f1_macro'))}  {topk.replace('_', ' ')} {m[topk]:.4f}  "
            f"(95% intervals over {iv.get('units', m['n'])} images)"
        )
        if wide := width_warning(iv.get("accuracy"), iv.get("units", 0), split):
            err.print(f"warning: {wide}.")
        absent = [name for name, v in m["per_class"].items() if not v["support"]]
        if absent:
            err.print(
                f"warning: no image of class {', '.join(repr(n) for n in absent)} in this data: "
                "recall and F1 of such a class say nothing of the model."
            )


__all__ = ["ClassificationTask"]
