"""The scene-classification task: one class per image (or per window of a scene's grid)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from terraseg.bundle import Bundle
from terraseg.config.inference import EvaluateConfig, PredictConfig
from terraseg.tasks import options as opts

Say = Callable[[str], None]


class ClassificationTask(opts.EvaluateChecks):
    """Scene-classification bundles: ``predictions.csv`` for image files, class grids for georeferenced scenes,
    image-level evaluation (accuracy, macro-F1, top-k, per-class precision/recall/F1)."""

    name = "classification"
    noun = "classifies scenes"

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
        """Classify every input (:func:`terraseg.predict.classify.predict_classes`).

        Args:
            cfg: the predict config. bundle: the classification bundle.
        """
        from terraseg.predict.classify import predict_classes
        from terraseg.predict.run import PredictResult

        return predict_classes(cfg, bundle, PredictResult())

    def evaluation_data(self, cfg: EvaluateConfig, bundle: Bundle, say: Say) -> list[Any]:
        """The labelled images to score: a class folder, or a config's split (``val``: exactly the images training
        validated on, as the bundle records them).

        Args:
            cfg: the evaluate config (``data``, ``split``, ``overrides``). bundle: the bundle. say: warning lines.

        Raises:
            ConfigError: a config without that split. InputFileError: a folder naming other classes.
        """
        from terraseg.config import ClassFolderSource
        from terraseg.data.classes import ClassItem, class_items
        from terraseg.errors import ConfigError
        from terraseg.evaluate.report import bundle_config
        from terraseg.train.classify import class_items_of, train_val_items

        data = Path(cfg.data) if cfg.data else None
        if data is not None and data.suffix.lower() not in {".yaml", ".yml"}:
            return class_items(ClassFolderSource(root=str(data.resolve()), split=cfg.split), bundle.class_names)
        config = bundle_config(bundle, data, cfg.overrides)
        recorded = (bundle.manifest.split or {}).get("files")
        if cfg.split == "val" and recorded:  # exactly the images training validated on
            return [ClassItem(p, int(k)) for p, k in recorded]
        if cfg.split == "val":
            say(f"warning: {bundle.path} records no validation images (an older bundle); they are drawn again from the "
                "config and may differ from those training validated on.")
        items = (class_items_of(config, "test") if config.data.test else []) if cfg.split == "test" else train_val_items(config)[1]
        if not items:
            raise ConfigError(f"{data or bundle.path}: config has no `data.{cfg.split}` images; use --split val.")
        return items

    def evaluate(self, cfg: EvaluateConfig, bundle: Bundle, say: Say) -> dict[str, Any]:
        """Score the bundle on :meth:`evaluation_data` (:func:`terraseg.evaluate.classify.evaluate_classifier`).

        Args:
            cfg: the evaluate config (inference options, MLflow logging). bundle: the bundle. say: warning lines.

        Returns:
            The metrics (also in ``<out_dir>/metrics.json``).
        """
        from terraseg.evaluate.classify import evaluate_classifier

        items = self.evaluation_data(cfg, bundle, say)
        return evaluate_classifier(bundle, items, cfg.out_dir, max(cfg.inference.batch_size or 32, 1), options=cfg.inference,
                                   log_to_run=cfg.log_to_run, tracking_uri=cfg.tracking_uri, split=cfg.split)


__all__ = ["ClassificationTask"]
