"""Opening inputs for a bundle: every path that feeds a model reads its bands through here.

The bundle's :meth:`terraseg.bundle.InputSpec.select_bands` decides which raster bands are read
(a pick such as bands 4, 3, 2 of a Sentinel-2 scene, or all bands) and refuses inputs whose band
count does not fit, so ``predict``, ``evaluate``, ``serve``, the ONNX export check and the
classifiers all apply one rule.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from terraseg.bundle import Bundle
from terraseg.data.scenes import Scene
from terraseg.data.sources import scene_from_path
from terraseg.io.listing import expand_inputs, stac_assets  # noqa: F401 - the command names its inputs through here


class RescaledScene:
    """A scene whose pixels are mapped linearly onto the model's training value range: ``x * scale + offset`` (float32).

    Every attribute but :meth:`read` is the wrapped scene's (grid, CRS, transform, labels).
    """

    def __init__(self, scene: Scene, scale: float, offset: float, note: str) -> None:
        self._scene, self.scale, self.offset, self.note = scene, float(scale), float(offset), note
        self.dtype = "float32"

    def __getattr__(self, name: str) -> Any:
        return getattr(self._scene, name)

    def read(self, row: int, col: int, height: int, width: int, labels: bool = True, compact: bool = False):
        """As :meth:`terraseg.data.scenes.Scene.read`, with the image rescaled (validity and labels unchanged)."""
        r = self._scene.read(row, col, height, width, labels, compact)
        r.image = r.image.astype(np.float32) * np.float32(self.scale) + np.float32(self.offset)
        return r

    def read_mask(self, *args: Any, **kwargs: Any):
        """As the wrapped scene's."""
        return self._scene.read_mask(*args, **kwargs)


def _depth(dtype: str) -> str:
    """'float', or the integer width ('8', '16', '32', '64'): inputs of one depth take the same value scale."""
    d = np.dtype(dtype)
    return "float" if d.kind == "f" else str(8 * d.itemsize)


def _type_range(dtype: str) -> tuple[float, float] | None:
    d = np.dtype(dtype)
    return (float(np.iinfo(d).min), float(np.iinfo(d).max)) if d.kind in "ui" else None


def _sampled_range(scene: Scene) -> tuple[float, float]:
    """Smallest and largest valid value of a decimated read of the whole scene (at most 512 x 512 pixels)."""
    if hasattr(scene, "_overview"):
        r = scene._overview(512 * 512)
    else:
        r = scene.read(0, 0, scene.height, scene.width, labels=False)
    v = r.image[:, r.valid]
    return (float(v.min()), float(v.max())) if v.size else (0.0, 0.0)


def _nbits(path: str | Path) -> int | None:
    """The ``NBITS`` of a raster's image structure (e.g. 11 or 12 for uint16 satellite imagery), when set."""
    from terraseg.io.raster import open_raster

    try:
        with open_raster(path) as ds:
            v = ds.tags(1, ns="IMAGE_STRUCTURE").get("NBITS")
    except Exception:  # noqa: BLE001 - PNG/JPEG and odd drivers have no tags: no rule
        return None
    return int(v) if v and v.isdigit() else None


def value_map(
    bundle: Bundle,
    dtype: str,
    path: str | Path,
    sampled: Callable[[], tuple[float, float]],
    input_range: tuple[float, float] | None = None,
) -> tuple[float, float, str] | None:
    """How an input's values map onto the model's training values: ``(scale, offset, note)``, None for as-is, or a refusal.

    Rules, in order:

    1. The same depth as the training rasters (same integer width, or both floating point): as is;
       also an integer input whose values (``sampled()``: smallest and largest valid value) lie within
       the training dtype's range, e.g. 8-bit values stored as uint16.
    2. ``input_range`` (``--input-range LOW,HIGH``): ``[LOW, HIGH]`` maps linearly onto the full
       range of the training dtype (integers), declared by the user.
    3. An integer input whose ``NBITS`` metadata is set (GDAL's IMAGE_STRUCTURE, e.g. 11-bit
       WorldView or 12-bit Sentinel-2 in uint16) given to an integer model: ``[0, 2^NBITS - 1]``
       maps onto the training dtype's range.
    4. Otherwise refused: no rule says how the values compare.

    Args:
        bundle: the loaded bundle (``input.dtype``: the training rasters' dtype).
        dtype: the input's dtype.
        path: its name, for messages and its NBITS tag.
        sampled: returns the input's value range (called only when rule 1 needs it).
        input_range: the user's declared value range of the input, or None.

    Raises:
        BundleError: a bit depth without a rule (the sentence names ``--input-range`` and a GDAL command).
    """
    from terraseg.errors import BundleError

    trained = bundle.manifest.input.dtype
    target = _type_range(trained)
    if input_range is not None:
        lo, hi = map(float, input_range)
        if not hi > lo:
            raise BundleError(f"--input-range {lo:g},{hi:g}: the high value must be above the low one.")
        t_lo, t_hi = target if target else (lo, hi)
        scale = (t_hi - t_lo) / (hi - lo)
        return scale, t_lo - lo * scale, f"[{lo:g}, {hi:g}] mapped onto [{t_lo:g}, {t_hi:g}]"
    if _depth(dtype) == _depth(trained):
        return None
    if target is not None and np.dtype(dtype).kind in "ui":
        lo, hi = sampled()
        if target[0] <= lo and hi <= target[1]:
            return None  # e.g. 8-bit values stored as uint16: the values, not the container, are what the model saw
    nbits = _nbits(path) if np.dtype(dtype).kind in "ui" else None
    if nbits and target is not None:
        scale = (target[1] - target[0]) / (2**nbits - 1)
        return scale, target[0], f"{nbits}-bit values (NBITS) mapped onto {trained} [{target[0]:g}, {target[1]:g}]"
    where = f"[{target[0]:g}, {target[1]:g}]" if target else "floating-point values"
    raise BundleError(
        f"{path}: {dtype} pixels, but the model was trained on {trained} imagery ({where}); give --input-range LOW,HIGH "
        f"(the input values that map onto the training range), or convert it first, e.g. gdal_translate -ot {trained.capitalize() if trained != 'uint8' else 'Byte'} "
        f"-scale LOW HIGH{f' {target[0]:g} {target[1]:g}' if target else ''}."
    )


def adapt_value_range(bundle: Bundle, scene: Scene, path: str | Path, input_range: tuple[float, float] | None = None):
    """Map a scene of another bit depth onto the model's training values (:func:`value_map`'s rules), or refuse it.

    Args:
        bundle: the loaded bundle.
        scene: the opened input.
        path: its name, for messages.
        input_range: the user's declared value range of the input, or None.

    Returns:
        ``scene`` itself, or a :class:`RescaledScene`.

    Raises:
        BundleError: a bit depth without a rule (the sentence names ``--input-range`` and a GDAL command).
    """
    m = value_map(bundle, scene.dtype, path, lambda: _sampled_range(scene), input_range)
    return scene if m is None else RescaledScene(scene, *m)


def _band_index(spec: str, names: list[str | None], path: str | Path) -> int:
    from terraseg.errors import InputFileError

    if spec.isdigit():
        return int(spec)
    wanted = spec.strip().lower()
    hits = [i + 1 for i, n in enumerate(names) if n and n.lower() == wanted]
    if len(hits) != 1:
        known = ", ".join(f"{i + 1}={n}" for i, n in enumerate(names) if n) or "none"
        raise InputFileError(
            f"{path}: no {'single ' if hits else ''}band named {spec!r} (band names: {known}); give 1-based "
            f"indexes instead, e.g. --bands 3,2,1."
        )
    return hits[0]


def resolve_bands(spec: list[str | int], path: str | Path) -> list[int]:
    """1-based band indexes from ``--bands``: indexes, or names matched (case-insensitively) to band descriptions or colours.

    Args:
        spec: e.g. ``["4", "3", "2"]`` or ``["red", "green", "blue"]`` or ``["B04", "B03", "B02"]``.
        path: the raster whose band descriptions and colour interpretations are matched.

    Returns:
        Indexes in the order given.

    Raises:
        InputFileError: a name no band has, or an index outside the raster.
    """
    from terraseg.errors import InputFileError
    from terraseg.io.raster import open_raster

    names: list[str | None] = []
    if any(not str(b).isdigit() for b in spec):
        with open_raster(path) as ds:
            names = [d or ci.name for d, ci in zip(ds.descriptions, ds.colorinterp)]
    out = [_band_index(str(b), names, path) for b in spec]
    if not out:
        raise InputFileError(f"{path}: --bands names no band.")
    return out


def open_input(
    bundle: Bundle,
    path: str | Path,
    labels: str | Path | None = None,
    bands: Sequence[str | int] | None = None,
    input_range: tuple[float, float] | None = None,
    **label_options: Any,
) -> Scene:
    """Open an image (and optional labels) as a scene with the bands and value range the bundle's model takes.

    Args:
        bundle: the loaded bundle.
        path: GeoTIFF (or any GDAL raster), PNG or JPEG.
        labels: optional vector file or mask raster for evaluation.
        bands: the user's band selection (``--bands``: 1-based indexes or band names, in the model's order), overriding
            the bundle's; None: the bundle's rule (:meth:`terraseg.bundle.InputSpec.select_bands`).
        input_range: the input's value range to map onto the training range (:func:`adapt_value_range`).
        **label_options: ``burn_value``, ``attribute``, ``mapping``, ``mask_nodata`` (see
            :func:`terraseg.data.sources.scene_from_path`).

    Returns:
        A streamed :class:`terraseg.data.scenes.Scene` whose ``count`` equals the model's band
        count; labels use the bundle's ``ignore_index`` and class count.

    Raises:
        BundleError: the band count or bit depth does not fit the model (the sentence says what would).
        InputFileError: a missing or unreadable image or labels, a band name the image lacks.
    """
    from terraseg.errors import BundleError

    m = bundle.manifest
    if bands:
        picked = resolve_bands(list(bands), path)
        if len(picked) != m.input.bands:
            names = (
                f" ({', '.join(m.input.band_names)})" if m.input.band_names and len(m.input.band_names) == m.input.bands else ""
            )
            raise BundleError(f"{path}: --bands picks {len(picked)} bands but the model takes {m.input.bands}{names}.")
        scene = scene_from_path(
            path, bands=picked, labels=labels, ignore_index=m.ignore_index, num_classes=len(m.classes), **label_options
        )
    else:
        probe = scene_from_path(path)  # header only: band count
        sel = m.input.select_bands(probe.count, str(path))
        scene = (
            probe
            if sel is None and labels is None
            else scene_from_path(
                path, bands=sel, labels=labels, ignore_index=m.ignore_index, num_classes=len(m.classes), **label_options
            )
        )
    return adapt_value_range(bundle, scene, path, input_range)


def read_input_image(
    bundle: Bundle, path: str, bands: Sequence[str | int] | None = None, input_range: tuple[float, float] | None = None
) -> np.ndarray:
    """Read a whole image (a file or a ``.zip`` member) with the bands and value range the bundle's model takes.

    The same rules as :func:`open_input`: ``bands`` picks the user's bands (else the bundle's rule),
    and an input of another bit depth is mapped by :func:`value_map` (or refused).

    Args:
        bundle: the loaded bundle.
        path: image file or ``<archive>.zip/<member>``.
        bands: 1-based indexes or band names, in the model's order (``--bands``), or None.
        input_range: the input's value range mapped onto the training range (``--input-range``), or None.

    Returns:
        ``(C, H, W)`` array, C = the model's band count: the file's dtype, or float32 when rescaled.

    Raises:
        BundleError: the band count or bit depth does not fit.
        InputFileError: a missing or undecodable image, a band name the image lacks.
    """
    from terraseg.data.classes import read_any
    from terraseg.errors import BundleError

    image = read_any(path)
    m = bundle.manifest
    if bands:
        chosen = resolve_bands(list(bands), path) if Path(str(path)).exists() else [int(b) for b in bands]
        picked: list[int] | None = chosen
        if len(chosen) != m.input.bands or max(chosen) > image.shape[0] or min(chosen) < 1:
            raise BundleError(
                f"{path}: --bands {','.join(map(str, bands))} does not pick {m.input.bands} of the image's "
                f"{image.shape[0]} bands (the model takes {m.input.bands})."
            )
    else:
        picked = m.input.select_bands(image.shape[0], path)
    image = image if picked is None else image[[b - 1 for b in picked]]

    def sampled() -> tuple[float, float]:
        return (float(image.min()), float(image.max())) if image.size else (0.0, 0.0)

    vm = value_map(bundle, str(image.dtype), path, sampled, input_range)
    return image if vm is None else image.astype(np.float32) * np.float32(vm[0]) + np.float32(vm[1])


__all__ = ["adapt_value_range", "expand_inputs", "open_input", "read_input_image", "stac_assets", "value_map"]
