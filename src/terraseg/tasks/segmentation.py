"""The segmentation task: every pixel gets a class; inputs are scenes of any size, read window by window."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from terraseg.bundle import Bundle
from terraseg.config.inference import EvaluateConfig, PredictConfig
from terraseg.data.scenes import Scene
from terraseg.tasks import options as opts

Say = Callable[[str], None]


class SegmentationTask(opts.EvaluateChecks):
    """Segmentation bundles: sliding-window prediction into class maps, pixel-level evaluation (IoU, Dice/F1)."""

    name = "segmentation"
    noun = "segments"

    def check_predict(self, cfg: PredictConfig) -> None:
        """Refuse, in one line, a predict option segmentation does not apply (:data:`terraseg.tasks.options.PREDICT`).

        Args:
            cfg: the predict config.

        Raises:
            ConfigError: the option, why, and what would work.
        """
        opts.check(cfg, opts.PREDICT, opts.WAYS, "segmentation", "this bundle segments")

    def predict(self, cfg: PredictConfig, bundle: Bundle) -> Any:
        """Predict every input into class maps and the extras asked for (:func:`terraseg.predict.run.run_predict`).

        Args:
            cfg: the predict config. bundle: the segmentation bundle.
        """
        from terraseg.predict.run import run_predict

        return run_predict(cfg, bundle)

    def evaluation_data(self, cfg: EvaluateConfig, bundle: Bundle, say: Say) -> list[Scene]:
        """The labelled scenes to score: a config's test/val split, an image/mask folder, or one image with labels.

        Args:
            cfg: the evaluate config (``data``, ``split``, ``labels``, ``burn_value``, ``attribute``, ``mapping``,
                ``mask_nodata``, ``overrides``). bundle: the bundle. say: called with each warning or note line.

        Raises:
            ConfigError: no such split. InputFileError: an image without ``labels``, unreadable data. BundleError:
                as :func:`terraseg.evaluate.report.split_scenes_of`.
        """
        from terraseg.config import DataConfig, FolderSource
        from terraseg.data.sources import build_scenes
        from terraseg.errors import InputFileError
        from terraseg.evaluate.report import split_scenes_of
        from terraseg.infer.inputs import open_input

        m = bundle.manifest
        data = Path(cfg.data) if cfg.data else None
        if (data is None or data.is_dir() or data.suffix.lower() in {".yaml", ".yml"}) and (given := [
                f"--{k.replace('_', '-')}" for k in ("labels", "attribute", "mapping", "layer", "aoi", "mask_nodata")
                if getattr(cfg, k) is not None]):
            from terraseg.errors import ConfigError

            raise ConfigError(f"{' '.join(given)} apply to one image with its labels; {data or 'the bundle config'} holds its "
                              "own labels (set them in the config's sources, e.g. `aoi:`), so leave them out.")
        if data is None or data.suffix.lower() in {".yaml", ".yml"}:
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
        return [open_input(bundle, data, cfg.labels, burn_value=cfg.burn_value, attribute=attribute, mapping=mapping,
                           mask_nodata=nodata, layer=cfg.layer, aoi=cfg.aoi, mask_values=bundle.mask_values())]

    def evaluate(self, cfg: EvaluateConfig, bundle: Bundle, say: Say) -> dict[str, Any]:
        """Score the bundle on :meth:`evaluation_data` (:func:`terraseg.evaluate.report.run_evaluate`).

        Args:
            cfg: the evaluate config. bundle: the bundle. say: called with each warning or note line.

        Returns:
            The metrics (also in ``<out_dir>/metrics.json``).
        """
        from terraseg.evaluate.report import run_evaluate

        scenes = self.evaluation_data(cfg, bundle, say)
        if cfg.data and Path(cfg.data).suffix.lower() not in {".yaml", ".yml"}:
            cfg = cfg.model_copy(update={"split": "test"})  # data of the user's own: scored and logged as a test
        return run_evaluate(cfg, bundle, scenes)


def labels_as_trained(bundle: Bundle, path: str, attribute: str | None, mapping: dict[str, int] | None,
                      say: Say, layer: str | None = None) -> tuple[str | None, dict[str, int] | None]:
    """The attribute and value-to-class mapping that score polygons as the bundle was trained on them.

    An explicit ``mapping`` wins. Otherwise the mapping the bundle records for ``attribute``
    (:meth:`terraseg.bundle.Bundle.vector_labels`) is used; without ``attribute``, the bundle's one trained attribute
    is read when the file has it (said in a note), rather than burning every polygon as class ``burn_value``.

    Args:
        bundle: the bundle. path: the vector file. attribute: ``--attribute`` or None. mapping: ``--mapping`` or None.
        say: called with a note line. layer: the file's layer (default: the first).

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
