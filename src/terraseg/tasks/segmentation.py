"""The segmentation task: every pixel gets a class; inputs are scenes of any size, read window by window."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from terraseg.bundle import Bundle
from terraseg.config.inference import EvaluateConfig, InferenceConfig, PredictConfig
from terraseg.data.scenes import Scene
from terraseg.formats import is_config
from terraseg.tasks import options as opts

if TYPE_CHECKING:
    from terraseg.infer.sliding import SlidingWindowPredictor

Say = Callable[[str], None]


class SegmentationTask(opts.EvaluateChecks):
    """Segmentation bundles: sliding-window prediction into class maps, pixel-level evaluation (IoU, Dice/F1)."""

    name, noun, dense, endpoint = "segmentation", "segments", True, "segment"  # see terraseg.tasks.Task

    def inference(self, bundle: Bundle, options: InferenceConfig, backend: Any = None) -> SlidingWindowPredictor:
        """The sliding-window predictor of ``bundle`` (:func:`terraseg.infer.sliding.predictor_for`).

        Args:
            bundle: the segmentation bundle.
            options: window, overlap, batch size, device, backend, TTA.
            backend: a backend to run instead of the bundle's network (Ray Serve), or None.

        Raises:
            BundleError: as :func:`~terraseg.infer.sliding.predictor_for`.
            ConfigError: as :func:`~terraseg.infer.sliding.predictor_for`.
        """
        from terraseg.infer.sliding import predictor_for, tiling_for

        if backend is None:
            return predictor_for(bundle, options)
        pred = tiling_for(bundle, options)
        pred.backend, pred.batch_size = backend, options.batch_size or int(backend.info["batch_size"])
        return pred

    def input_size(self, bundle: Bundle) -> int:
        """The prediction window in pixels (``manifest.input.predict_window``)."""
        return bundle.manifest.input.predict_window

    def windows(self, inference: SlidingWindowPredictor, height: int, width: int) -> int:
        """The windows the predictor tiles a ``height x width`` image into."""
        _, _, ys, xs = inference.geometry(height, width)
        return len(ys) * len(xs)

    def check_predict(self, cfg: PredictConfig) -> None:
        """Refuse, in one line, a predict option segmentation does not apply (:data:`terraseg.tasks.options.PREDICT`).

        Args:
            cfg: the predict config.

        Raises:
            ConfigError: the option, why, and what would work.
        """
        opts.check(cfg, opts.PREDICT, opts.WAYS, "segmentation", "this bundle segments")

    def predict(self, cfg: PredictConfig, bundle: Bundle) -> Any:
        """Predict every input into class maps and the extras asked for (:func:`terraseg.prediction.run.predict_segmentation`).

        Args:
            cfg: the predict config.
            bundle: the segmentation bundle.
        """
        from terraseg.prediction.run import predict_segmentation

        return predict_segmentation(cfg, bundle)

    def evaluation_data(self, cfg: EvaluateConfig, bundle: Bundle, say: Say) -> list[Scene]:
        """The labelled scenes to score: a config's test/val split, an image/mask folder, or one image with labels.

        Args:
            cfg: the evaluate config (``data``, ``split``, ``labels``, ``burn_value``, ``attribute``, ``mapping``,
                ``mask_nodata``, ``overrides``).
            bundle: the bundle.
            say: called with each warning or note line.

        Raises:
            ConfigError: no such split.
            InputFileError: an image without ``labels``, unreadable data.
            BundleError: as :func:`terraseg.evaluation.report.split_scenes_of`.
        """
        from terraseg.config import DataConfig, FolderSource
        from terraseg.data.sources import build_scenes
        from terraseg.errors import InputFileError
        from terraseg.evaluation.report import split_scenes_of
        from terraseg.infer.inputs import open_input

        m = bundle.manifest
        data = Path(cfg.data) if cfg.data else None
        if (data is None or data.is_dir() or is_config(data)) and (
            given := [
                f"--{k.replace('_', '-')}"
                for k in ("labels", "attribute", "mapping", "layer", "aoi", "mask_nodata")
                if getattr(cfg, k) is not None
            ]
        ):
            from terraseg.errors import ConfigError

            raise ConfigError(
                f"{' '.join(given)} apply to one image with its labels; {data or 'the bundle config'} holds its "
                "own labels (set them in the config's sources, e.g. `aoi:`), so leave them out."
            )
        if data is None or is_config(data):
            return split_scenes_of(bundle, data, cfg.split, cfg.overrides, warn=lambda w: say(f"warning: {w}"))
        if data.is_dir():
            dc = DataConfig(train=[FolderSource(root=str(data.resolve()))])
            return build_scenes(dc.train, dc, m.ignore_index, len(m.classes))
        if cfg.labels is None:
            raise InputFileError(f"{data}: give --labels (vector file or mask raster) to evaluate an image.")
        from terraseg.config.prep import LabelOptions, parse_mapping
        from terraseg.data.census import background_tag, background_tag_note

        nodata: int | str | None = cfg.mask_nodata
        attribute, mapping = cfg.attribute, parse_mapping(cfg.mapping)
        if LabelOptions(path=cfg.labels).is_mask:
            if nodata is None and (hidden := background_tag([Path(cfg.labels)])) is not None:
                nodata = "none"  # as the plan counts such masks
                say("note: " + background_tag_note(*hidden, "give --mask-nodata 0"))
        else:
            attribute, mapping = labels_as_trained(bundle, cfg.labels, attribute, mapping, say, cfg.layer)
        return [
            open_input(
                bundle,
                data,
                cfg.labels,
                burn_value=cfg.burn_value,
                attribute=attribute,
                mapping=mapping,
                mask_nodata=nodata,
                layer=cfg.layer,
                aoi=cfg.aoi,
                mask_values=bundle.mask_values(),
            )
        ]

    def evaluate(self, cfg: EvaluateConfig, bundle: Bundle, say: Say, data: list[Any] | None = None) -> dict[str, Any]:
        """Score the bundle on :meth:`evaluation_data` (:func:`terraseg.evaluation.report.evaluate_segmentation`).

        Args:
            cfg: the evaluate config.
            bundle: the bundle.
            say: called with each warning or note line.
            data: labelled data already opened, instead of :meth:`evaluation_data`.

        Returns:
            The metrics (also in ``<out_dir>/metrics.json``).
        """
        from terraseg.evaluation.report import evaluate_segmentation

        scenes = data if data is not None else self.evaluation_data(cfg, bundle, say)
        if cfg.data and not is_config(cfg.data):
            cfg = cfg.model_copy(update={"split": "test"})  # data of the user's own: scored and logged as a test
        return evaluate_segmentation(cfg, bundle, scenes)

    def report(self, bundle: Bundle, metrics: dict[str, Any], what: str, split: str, out: Any, err: Any) -> None:
        """Print per-class IoU, Dice/F1, precision, recall and pixels, the headline with its 95% intervals, object scores,
        and a warning when an interval is too wide to decide by (the arguments: :meth:`terraseg.tasks.Task.report`)."""
        from rich.table import Table

        from terraseg.evaluation.bootstrap import format_interval, width_warning
        from terraseg.evaluation.metrics import absent_classes

        b, m = bundle, metrics
        table = Table(title=f"{b.manifest.name} on {what} ({m['pixels']:,} labelled pixels)")
        for col in ("class", "IoU", "Dice/F1", "precision", "recall", "pixels"):
            table.add_column(col)
        fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
        for name, v in m["per_class"].items():
            table.add_row(name, fmt(v["iou"]), fmt(v["dice"]), fmt(v["precision"]), fmt(v["recall"]), str(v["support"]))
        out.print(table)
        iv = m.get("intervals") or {}
        headline = f"mIoU {format_interval(m['miou'], iv.get('miou'))}  pixel accuracy {fmt(m['pixel_accuracy'])}"
        if "iou" in m:
            headline = (
                f"IoU {format_interval(m['iou'], iv.get('iou'))}  F1 {format_interval(m['dice'], iv.get('dice'))}  " + headline
            )
        out.print(headline + f"  ({m['pixels']:,} pixels; 95% intervals over {iv.get('units', 0)} {iv.get('unit', 'units')})")
        if (o := m.get("objects")) is not None:
            oi = o["intervals"]
            out.print(
                f"objects '{o['class']}' (matched one to one at IoU >= {o['match_iou']:g}, SpaceNet; under "
                f"{o['min_pixels']} px left out): F1 {format_interval(o['f1'], oi['f1'])}  precision "
                f"{format_interval(o['precision'], oi['precision'])}  recall {format_interval(o['recall'], oi['recall'])}  "
                f"(TP {o['tp']:,}, FP {o['fp']:,}, FN {o['fn']:,}; {o['units']} units)"
            )
            if o.get("scenes_left_out"):
                err.print(f"warning: {o['scenes_left_out']} scene(s) over 64 million pixels left out of the object scores.")
        if wide := width_warning(iv.get("iou") or iv.get("score"), iv.get("units", 0), split):
            err.print(f"warning: {wide}.")
        for name in absent_classes(m):
            err.print(
                f"warning: class '{name}' has no labelled pixel in this data: its figures are undefined (-) or 0 and say "
                f"nothing of the model; the headline covers the other classes only where they are means."
            )
        drift = m.get("drift") or {}
        if drift.get("flagged"):
            err.print(
                f"warning: {len(drift['flagged'])} of {drift['scenes']} images differ from the training data (drift: "
                + ", ".join(f"{k} in {'/'.join(v)}" for k, v in list(drift["flagged"].items())[:5])
                + (", ..." if len(drift["flagged"]) > 5 else "")
                + "); figures on them may not carry over."
            )


def labels_as_trained(
    bundle: Bundle, path: str, attribute: str | None, mapping: dict[str, int] | None, say: Say, layer: str | None = None
) -> tuple[str | None, dict[str, int] | None]:
    """The attribute and value-to-class mapping that score polygons as the bundle was trained on them.

    An explicit ``mapping`` wins. Otherwise the mapping the bundle records for ``attribute``
    (:meth:`terraseg.bundle.Bundle.vector_labels`) is used; without ``attribute``, the bundle's one trained attribute
    is read when the file has it (said in a note), rather than burning every polygon as class ``burn_value``.

    Args:
        bundle: the bundle.
        path: the vector file.
        attribute: ``--attribute`` or None.
        mapping: ``--mapping`` or None.
        say: called with a note line.
        layer: the file's layer (default: the first).

    Returns:
        ``(attribute, mapping)`` to rasterize with.
    """
    trained = bundle.vector_labels()
    if attribute is None and len(trained) == 1:
        import pyogrio

        (name,) = trained
        try:
            fields = list(pyogrio.read_info(path, layer=layer)["fields"])
        except Exception:  # noqa: BLE001 - an unreadable file is refused in one line when it is read
            fields = []
        if name in fields:
            attribute = name
            say(f"note: classes read from attribute '{name}' of {path}, as the bundle was trained (--attribute chooses another).")
    if mapping is None and attribute in trained:
        mapping = trained[attribute]
    return attribute, mapping


__all__ = ["SegmentationTask", "labels_as_trained"]
