"""The data set's fingerprint: what the planner's rules read (after nnU-Net's "dataset fingerprint").

Isensee et al., *nnU-Net: a self-configuring method for deep learning-based biomedical image
segmentation*, Nature Methods 18 (2021), derive a training configuration from a few properties of
the data (image sizes, spacing, intensities, class frequencies) by fixed rules. The fingerprint here
holds the properties remote-sensing data adds: bands, bit depth, resolution and CRS, nodata and
alpha, georeferenced overhead imagery versus photos, the form of the labels, and object sizes.

Everything is read from headers and a bounded sample (overviews of at most 4 Mpx per scene, at most
:data:`MAX_IMAGES` folder images), so fingerprinting costs seconds, not a pass over the data.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from terraseg.data.rasters import RasterScene
from terraseg.data.scenes import Scene
from terraseg.formats import is_geotiff

log = logging.getLogger(__name__)

MAX_IMAGES = 200  # folder images read for class frequencies and object sizes (a seeded sample beyond)


@dataclass
class Fingerprint:
    """Properties of a labelled data set that the planning rules read.

    Attributes:
        task: 'segmentation' or 'classification'.
        label_form: 'vector', 'mask raster', 'image/mask folder' or 'class folders'.
        images: number of scenes or images.
        sizes: ``[median, min, max]`` of the shorter image side (pixels).
        pixels: total pixels of all images.
        bands: band count (alpha excluded).
        dtype: pixel dtype.
        value_range: ``[p1, p99]`` of sampled valid pixels.
        nodata: nodata value, if any.
        alpha: an alpha or mask band marks validity.
        georeferenced: rasters with a CRS and transform (overhead imagery) rather than photos.
        crs: CRS of the first scene (WKT name or EPSG).
        resolution: pixel size in CRS units, or None.
        class_pixels: labelled pixels per class id (segmentation) or images per class (classification).
        object_diameter: per non-background class, ``[median, p90]`` equivalent diameter (pixels) of connected
            components.
        notes: facts worth telling the user (e.g. a class with no pixels).
        band_names: the first scene's band descriptions (e.g. Sentinel-2 B1...B12), when every band has one.
    """

    task: str
    label_form: str
    images: int
    sizes: list[int]
    pixels: int
    bands: int
    dtype: str
    value_range: list[float]
    nodata: float | None = None
    alpha: bool = False
    georeferenced: bool = False
    crs: str | None = None
    resolution: float | None = None
    class_pixels: list[int] = field(default_factory=list)
    object_diameter: dict[int, list[float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    band_names: list[str] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fingerprint."""
        return asdict(self)


def _components(mask: np.ndarray, k: int) -> np.ndarray:
    """Equivalent diameters (pixels) of the connected components of class ``k`` (8-connectivity)."""
    from scipy import ndimage

    lab, n = ndimage.label(mask == k, structure=np.ones((3, 3), bool))
    if n == 0:
        return np.zeros(0)
    areas = np.bincount(lab.ravel())[1:]
    return 2.0 * np.sqrt(areas / np.pi)


def segmentation_fingerprint(scenes: list[Scene], num_classes: int, label_form: str, seed: int = 0) -> Fingerprint:
    """Fingerprint of labelled scenes or folder images.

    Args:
        scenes: labelled scenes (rasters with vector or mask labels; image/mask pairs).
        num_classes: K (class ids 0..K-1; others are ignored).
        label_form: how the labels came ('vector', 'mask raster', 'image/mask folder').
        seed: seed of the image sample of large folders.

    Returns:
        :class:`Fingerprint`.
    """
    rng = np.random.default_rng(seed)
    pick = list(range(len(scenes)))
    if len(pick) > MAX_IMAGES:
        pick = sorted(rng.choice(len(scenes), MAX_IMAGES, replace=False).tolist())
    counts = np.zeros(num_classes, dtype=np.float64)
    diam: dict[int, list[np.ndarray]] = {k: [] for k in range(1, num_classes)}
    values: list[np.ndarray] = []
    sides = [min(s.height, s.width) for s in scenes]
    for i in pick:
        s = scenes[i]
        ov = s._overview(1 << 22) if isinstance(s, RasterScene) else s.read(0, 0, s.height, s.width)
        scale = (s.height * s.width) / max(ov.valid.size, 1)
        if ov.mask is not None:
            m = ov.mask
            counts += np.bincount(m[(m >= 0) & (m < num_classes)].ravel(), minlength=num_classes)[:num_classes] * scale
            for k in diam:
                diam[k].append(_components(m, k) * np.sqrt(scale))
        px = ov.image[:, ov.valid]
        if px.shape[1]:
            values.append(px[:, rng.choice(px.shape[1], min(px.shape[1], 20_000), replace=False)].astype(np.float64))
    first = scenes[0]
    allv = np.concatenate(values, axis=1) if values else np.zeros((first.count, 1))
    finite = allv[np.isfinite(allv)]
    georef = isinstance(first, RasterScene) and first.crs is not None and first.info.georeferenced
    notes = [f"class {k} has no labelled pixel in the sample" for k in range(num_classes) if counts[k] == 0]
    obj = {}
    for k, parts in diam.items():
        d = np.concatenate(parts) if parts else np.zeros(0)
        if d.size:
            obj[k] = [round(float(np.median(d)), 1), round(float(np.percentile(d, 90)), 1)]
    return Fingerprint(
        task="segmentation",
        label_form=label_form,
        images=len(scenes),
        sizes=[int(np.median(sides)), int(min(sides)), int(max(sides))],
        pixels=int(sum(s.height * s.width for s in scenes)),
        bands=first.count,
        dtype=str(first.dtype),
        value_range=[float(np.percentile(finite, 1)), float(np.percentile(finite, 99))] if finite.size else [0.0, 0.0],
        nodata=first.nodata,
        alpha=bool(isinstance(first, RasterScene) and (first.info.alpha or first.info.dataset_mask)),
        georeferenced=bool(georef),
        crs=str(first.crs) if georef else None,
        resolution=round(abs(first.transform.a), 6) if georef else None,
        class_pixels=[int(c) for c in counts],
        object_diameter=obj,
        notes=notes,
        band_names=first.band_descriptions(),
    )


def classification_fingerprint(items: list, num_classes: int, seed: int = 0) -> Fingerprint:
    """Fingerprint of class-folder images (scene classification).

    Args:
        items: :class:`terraseg.data.classes.ClassItem` list (path, label).
        num_classes: K.
        seed: seed of the image sample.

    Returns:
        :class:`Fingerprint` (``class_pixels`` holds images per class).
    """
    from terraseg.data.classes import read_any

    rng = np.random.default_rng(seed)
    pick = rng.choice(len(items), min(len(items), 32), replace=False)
    shapes, values = [], []
    georef = False
    for i in pick:
        img = read_any(items[i].path)
        shapes.append(img.shape)
        values.append(img.reshape(img.shape[0], -1)[:, :: max(1, img.shape[1] * img.shape[2] // 4096)].astype(np.float64))
    if is_geotiff(items[0].path):
        from terraseg.io.raster import raster_info

        try:
            georef = raster_info(items[0].path).georeferenced
        except Exception:  # noqa: BLE001 - zip members and odd paths: photos unless shown otherwise
            georef = False
    sides = [min(s[1], s[2]) for s in shapes]
    allv = np.concatenate(values, axis=1)
    per_class = np.bincount([it.label for it in items], minlength=num_classes)
    dtype = str(read_any(items[int(pick[0])].path).dtype)
    return Fingerprint(
        task="classification",
        label_form="class folders",
        images=len(items),
        sizes=[int(np.median(sides)), int(min(sides)), int(max(sides))],
        pixels=int(sum(s[1] * s[2] for s in shapes)),
        bands=int(shapes[0][0]),
        dtype=dtype,
        value_range=[float(np.percentile(allv, 1)), float(np.percentile(allv, 99))],
        georeferenced=georef or shapes[0][0] > 3,
        class_pixels=per_class.tolist(),
        notes=[f"class {k} has no image" for k in range(num_classes) if per_class[k] == 0],
    )


__all__ = ["Fingerprint", "classification_fingerprint", "segmentation_fingerprint"]
