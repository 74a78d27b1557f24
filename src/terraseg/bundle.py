"""The model bundle: one zip file holding everything needed to predict.

Layout (``model.terraseg``)::

    manifest.json        BundleManifest: architecture, input spec, classes, metrics, provenance
    weights.safetensors  the network's state dict (safetensors: data only, never pickled code)
    estimator.skops      instead of weights, for pixel baselines: the scikit-learn estimator (skops,
                         loaded admitting only scikit-learn/numpy/scipy types; see terraseg.models.pixel)
    model.onnx           optional, added at the end of training or by ``terraseg export`` (see terraseg.infer.onnx)
    model_int8.onnx      optional, ``terraseg export --quantize int8`` (see terraseg.prediction.quantize)
    calibration.npy      optional, raw training windows for INT8 calibration (loaded without pickle)

Loading a bundle needs no config file and no training code. Bundles are written atomically.
"""

from __future__ import annotations

import json
import os
import zipfile
import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field, ValidationError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from terraseg.config import ClassSpec, ModelConfig
from terraseg.config.base import Described
from terraseg.data.normalize import NormStats
from terraseg.errors import BundleError
from terraseg.io.atomic import atomic_path
from terraseg.version import __version__

FORMAT_VERSION = 2
MANIFEST = "manifest.json"
WEIGHTS = "weights.safetensors"
ONNX = "model.onnx"
ONNX_INT8 = "model_int8.onnx"
CALIBRATION = "calibration.npy"
ESTIMATOR = "estimator.skops"
EXTRAS = (ONNX, ONNX_INT8, CALIBRATION)
MIN_PREDICT_WINDOW = 256


class InputSpec(Described):
    """What the model takes: bands and their order, dtype, nodata, normalisation and window sizes.

    Every path that feeds the model (predict, evaluate, serve, export checks, classification) asks
    :meth:`select_bands` which raster bands to read, so a 13-band scene given to a 3-band model is
    refused, never silently cut to its first bands.
    """

    model_config = ConfigDict(extra="forbid")
    bands: int = Field(ge=1, description="Band count the model takes.")
    band_indexes: list[int] | None = None
    """1-based raster bands read during training, in order (None: all bands)."""
    source_bands: int | None = Field(None, description="Band count of the training rasters the indexes refer to (None: unknown).")
    band_names: list[str] | None = Field(None, description="Names of the model's input bands in order, if known.")
    dtype: str = Field(description="Raster dtype seen in training (others are accepted; values matter).")
    nodata: float | None = Field(None, description="Nodata value of the training rasters.")
    normalization: NormStats = Field(description="Per-band normalisation statistics (the preprocessing contract).")
    train_window: int = Field(ge=1, description="Side of the training windows (chips) in pixels.")
    predict_window: int = Field(ge=1, description="Default sliding-window side for prediction in pixels.")
    fit_max: int | None = Field(None, ge=0)
    """Largest image side (pixels) predicted as one window; 0: always sliding windows of `predict_window`; None: the
    inference default (1024). Training sets it to the tiling that validated better (terraseg.training.tiling); a run's
    `--fit-max` can only lower it, `--window` overrides it."""
    input_size: int | None = None
    """Classification: the side (pixels) images are resized to before the network."""

    @property
    def side(self) -> int:
        """The side in pixels of a classifier's input (every image is resized to it): ``input_size``, else the training
        window (older bundles)."""
        return self.input_size or self.train_window

    def select_bands(self, count: int, source: str = "input") -> list[int] | None:
        """The 1-based bands to read from an input with ``count`` bands.

        Args:
            count: the input's band count.
            source: file name for the error message.

        Returns:
            The training band selection when it picks bands out of a larger raster (e.g. bands
            4, 3, 2 of 13), else None (read every band, in order).

        Raises:
            BundleError: the input's band count does not fit the model's input.
        """
        idx = self.band_indexes
        if idx and idx != list(range(1, self.bands + 1)):  # a pick of bands out of larger rasters
            if count == self.source_bands or (self.source_bands is None and count >= max(idx)):
                return list(idx)
            of = f"{self.source_bands}-band images" if self.source_bands else f"images of at least {max(idx)} bands"
            raise BundleError(f"{source}: image has {count} bands but the model reads bands {idx} of {of}.")
        if count == self.bands:
            return None
        names = f" ({', '.join(self.band_names)})" if self.band_names and len(self.band_names) == self.bands else ""
        if count > self.bands:
            fix = f"pick {self.bands} of its bands in the model's order with --bands (1-based indexes or band names, e.g. --bands 3,2,1)"
        else:
            fix = (
                f"give an image with {self.bands} bands, or stack single-band files on one grid first "
                f"(terraseg stack B1.tif B2.tif ... --out stacked.tif)"
            )
        s = "" if count == 1 else "s"
        raise BundleError(f"{source}: image has {count} band{s} but the model expects {self.bands}{names}; {fix}.")


def upgrade_manifest(raw: dict[str, Any]) -> dict[str, Any]:
    """Bring a manifest written by an older terraseg to :data:`FORMAT_VERSION` (in place).

    Version 1 kept one ``input.window`` meaning the training chip, the pixel-baseline prediction
    window and the classification resize; version 2 splits it into ``train_window``,
    ``predict_window`` and ``input_size``.
    """
    version = int(raw.get("format_version", 1))
    if version < 2:
        inp = raw.get("input", {})
        w = int(inp.pop("window", 256))
        pixel = raw.get("baseline") is not None
        inp["train_window"] = w
        inp["predict_window"] = w if pixel else max(w, MIN_PREDICT_WINDOW)
        inp["input_size"] = w if raw.get("task") == "classification" else None
    raw["format_version"] = max(version, FORMAT_VERSION)
    return raw


class BundleManifest(Described):
    """``manifest.json`` of a bundle."""

    model_config = ConfigDict(extra="allow")
    format_version: int = FORMAT_VERSION
    terraseg_version: str = __version__
    created: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    name: str
    task: str = "segmentation"
    model: ModelConfig
    input: InputSpec
    classes: list[ClassSpec]
    ignore_index: int = 255
    metrics: dict[str, Any] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict, description="The training config, for provenance.")
    exports: dict[str, Any] = Field(default_factory=dict)
    """Exported graphs in the bundle (e.g. 'onnx': opset, contract, check)."""
    baseline: dict[str, Any] | None = Field(None, description="Pixel baselines: BaselineConfig (features) and feature names.")
    split: dict[str, Any] | None = None
    """The exact train/validation split training used (terraseg.data.holdout: method, blocks or images held out, labelled
    pixels per class on each side, warnings); `evaluate --split val` rebuilds it."""
    drift: dict[str, Any] | None = None
    """Drift profile (terraseg.infer.drift.fit_drift): reference histograms from training windows, thresholds fitted on
    other training windows, and the false-alarm rate measured on validation windows."""
    calibration: dict[str, Any] = Field(default_factory=dict)
    """Temperature scaling fitted on the validation split (temperature, ECE and NLL before/after); every backend divides
    logits by it."""


MAX_MEMBER_BYTES = {MANIFEST: 16 * 2**20}  # a manifest is a few kB
MAX_BUNDLE_MEMBER = 8 * 2**30  # the largest weights / graph member (uncompressed)
MAX_RATIO = 200  # uncompressed / compressed size beyond which a large member is a zip bomb (weights compress ~1.1x)


def _check_members(z: zipfile.ZipFile, path: Path) -> None:
    """Refuse a bundle whose members would inflate far beyond their stored size, before reading any.

    Sizes come from the zip's central directory; ``zipfile`` stops reading a member at its declared
    size, so a member cannot inflate past what is checked here.

    Raises:
        BundleError: a member over its size limit, or large and compressed over :data:`MAX_RATIO` to one.
    """
    for info in z.infolist():
        limit = MAX_MEMBER_BYTES.get(info.filename, MAX_BUNDLE_MEMBER)
        if info.file_size > limit:
            raise BundleError(
                f"{path}: bundle member '{info.filename}' would inflate to {info.file_size:,} bytes, over the "
                f"limit of {limit:,}; refused (zip bomb?)."
            )
        if info.file_size > 2**20 and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise BundleError(
                f"{path}: bundle member '{info.filename}' inflates {info.file_size / max(info.compress_size, 1):,.0f} "
                f"times ({info.compress_size:,} -> {info.file_size:,} bytes); refused (zip bomb?)."
            )


class Bundle:
    """A loaded bundle: manifest plus network in eval mode on the CPU."""

    def __init__(self, manifest: BundleManifest, model: Any, extras: dict[str, bytes] | None = None) -> None:
        self.manifest = manifest
        self.model = model.eval()
        self.extras: dict[str, bytes] = dict(extras or {})
        self.path: Path | None = None

    @property
    def stats(self) -> NormStats:
        """Normalisation statistics (the preprocessing contract)."""
        return self.manifest.input.normalization

    @property
    def num_classes(self) -> int:
        """Class count."""
        return len(self.manifest.classes)

    @property
    def class_names(self) -> list[str]:
        """Class names in id order."""
        return [c.name for c in self.manifest.classes]

    @property
    def in_channels(self) -> int:
        """Input band count."""
        return self.manifest.input.bands

    def _training_sources(self) -> list[dict[str, Any]]:
        return ((self.manifest.training.get("config") or {}).get("data") or {}).get("train") or []

    def mask_values(self) -> dict[str, int] | None:
        """How training read mask rasters' values as classes (mask value as text -> class id), or None (values were ids)."""
        found: dict[str, int] = {}
        for src in self._training_sources():
            found |= src.get("mask_values") or {}
        return found or None

    def vector_labels(self) -> dict[str, dict[str, int] | None]:
        """How training turned polygon attributes into classes, from the training config the bundle records.

        Returns:
            Attribute name -> attribute value (as text) -> class id, for every vector label source training read with
            an attribute (``None``: the values were the class ids themselves); ids equal to ``ignore_index`` mark
            values trained as unknown.
        """
        found: dict[str, dict[str, int] | None] = {}
        for src in self._training_sources():
            vec = src.get("vector") or {}
            if vec.get("attribute"):
                name, mapping = vec["attribute"], vec.get("mapping")
                found[name] = None if mapping is None else {**(found.get(name) or {}), **mapping}
        return found

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the bundle atomically (temp file + rename) and return its path."""
        with atomic_path(path) as tmp:
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
                z.writestr(MANIFEST, self.manifest.model_dump_json(indent=2))
                if isinstance(self.model, nn.Module):
                    z.writestr(WEIGHTS, st_save({k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}))
                else:
                    z.writestr(ESTIMATOR, self.model.to_bytes())
                for name, data in self.extras.items():
                    z.writestr(name, data)
        return Path(path)

    @classmethod
    def from_bytes(cls, data: bytes) -> Bundle:
        """Load a bundle from the bytes of a ``.terraseg`` file (e.g. sent to Ray workers), with :meth:`load`'s checks.

        Args:
            data: the file's bytes.

        Raises:
            BundleError: as :meth:`load`.
        """
        import tempfile

        fd, tmp = tempfile.mkstemp(suffix=".terraseg")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            return cls.load(tmp)
        finally:
            os.unlink(tmp)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Bundle:
        """Load a bundle.

        Raises:
            BundleError: missing file, not a bundle, corrupt members, or a newer format.
        """
        p = Path(path)
        if not p.is_file():
            raise BundleError(f"{p}: model bundle not found.")
        try:
            with zipfile.ZipFile(p) as z:
                _check_members(z, p)
                manifest_raw = json.loads(z.read(MANIFEST))
                weights = z.read(ESTIMATOR if ESTIMATOR in z.namelist() else WEIGHTS)
                extras = {n: z.read(n) for n in EXTRAS if n in z.namelist()}
        except (zipfile.BadZipFile, KeyError, ValueError, OSError, EOFError, NotImplementedError, zlib.error) as e:
            # ValueError covers JSON and UTF-8 decoding; zlib.error, EOFError: corrupt compressed members (tests/test_fuzz.py)
            raise BundleError(
                f"{p}: not a terraseg bundle ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})."
            ) from None
        if not isinstance(manifest_raw, dict):
            raise BundleError(f"{p}: not a terraseg bundle (its manifest is not a JSON object).")
        if int(manifest_raw.get("format_version", 1)) > FORMAT_VERSION:
            raise BundleError(
                f"{p}: bundle format {manifest_raw['format_version']} is newer than this terraseg supports ({FORMAT_VERSION})."
            )
        try:
            manifest = BundleManifest.model_validate(upgrade_manifest(manifest_raw))
        except ValidationError as e:
            raise BundleError(f"{p}: bundle manifest is invalid ({e.errors()[0]['loc']}: {e.errors()[0]['msg']}).") from None
        if manifest.baseline is not None:
            from terraseg.models.pixel import PixelFeatures, PixelModel

            f = manifest.baseline
            feats = PixelFeatures(manifest.input.bands, manifest.input.band_names, f["indices"], f["texture_window"])
            b = cls(manifest, PixelModel(PixelModel.estimator_from_bytes(weights, str(p)), feats, len(manifest.classes)), extras)
            b.path = p
            return b
        from terraseg.models.factory import build_model

        model = build_model(manifest.model, manifest.input.bands, len(manifest.classes), load_pretrained=False)
        try:
            model.load_state_dict(st_load(weights))
        except (RuntimeError, Exception) as e:
            raise BundleError(f"{p}: weights do not fit the bundle's architecture ({str(e).splitlines()[0]}).") from None
        b = cls(manifest, model, extras)
        b.path = p
        return b

    def summary(self) -> dict[str, Any]:
        """JSON-ready description (``terraseg info``)."""
        m = self.manifest
        n_params = sum(p.numel() for p in self.model.parameters())  # 0 for pixel baselines
        return {
            "name": m.name,
            "task": m.task,
            "terraseg_version": m.terraseg_version,
            "created": m.created,
            "model": m.model.model_dump(),
            "parameters": n_params,
            "input": m.input.model_dump(),
            "classes": [c.model_dump() for c in m.classes],
            "ignore_index": m.ignore_index,
            "metrics": m.metrics,
            "exports": m.exports,
            "baseline": m.baseline,
            "split": {k: v for k, v in (m.split or {}).items() if k != "units"}
            | ({"held_out": len(m.split["units"])} if m.split and "units" in m.split else {}),
            "drift": {k: v for k, v in (m.drift or {}).items() if k != "reference"} or None,
        }
