"""Import CVAT "for images" 1.1 XML annotations (polygons, boxes, masks) into class masks.

Format: https://docs.cvat.ai/docs/manual/advanced/xml_format/ . Each ``<image name width height>``
holds ``<polygon label points="x,y;x,y;..." z_order>``, ``<box xtl ytl xbr ybr>`` and ``<mask rle
left top width height>`` shapes in pixel coordinates (x = column, y = row, pixel corners at
integers). Shapes are burnt in ``z_order`` (then document order), so shapes drawn on top win, with
GDAL's rasterizer (pixel centres inside the shape). The XML is parsed with ``defusedxml`` (no
entity expansion or external references: annotation files come from users).

Masks are written as PNG, or as GeoTIFF on the image's grid (CRS, transform) when the annotated
image is a georeferenced raster found in ``images_dir``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import rasterio
from defusedxml import ElementTree
from rasterio.features import rasterize
from shapely.geometry import Polygon, box

from terraseg.errors import InputFileError
from terraseg.formats import is_geotiff
from terraseg.io.atomic import staged_dir
from terraseg.io.images import write_png
from terraseg.io.outputs import create_raster
from terraseg.io.raster import raster_info

log = logging.getLogger(__name__)


def _points(text: str, where: str) -> list[tuple[float, float]]:
    try:
        pts = [tuple(float(v) for v in p.split(",")) for p in text.strip().split(";") if p]
    except ValueError:
        raise InputFileError(f"{where}: malformed points '{text[:40]}'.") from None
    if any(len(p) != 2 for p in pts):
        raise InputFileError(f"{where}: malformed points '{text[:40]}'.")
    return pts  # type: ignore[return-value]


def _rle_mask(el, height: int, width: int, where: str) -> np.ndarray:
    """Decode a CVAT 1.1 ``<mask>``: run lengths alternating 0/1 (starting with 0) over its box, row-major."""
    try:
        counts = [int(v) for v in el.get("rle", "").split(",") if v.strip()]
        left, top, w, h = (int(float(el.get(k))) for k in ("left", "top", "width", "height"))
    except (TypeError, ValueError):
        raise InputFileError(f"{where}: malformed <mask> element.") from None
    flat = np.repeat(np.arange(len(counts)) % 2, counts).astype(bool)
    if flat.size != w * h:
        raise InputFileError(f"{where}: <mask> run lengths cover {flat.size} pixels, its box {w * h}.")
    out = np.zeros((height, width), dtype=bool)
    sub = flat.reshape(h, w)[: max(height - top, 0), : max(width - left, 0)]
    out[top : top + sub.shape[0], left : left + sub.shape[1]] = sub
    return out


def read_cvat(path: str | Path) -> tuple[list[str], list]:
    """Parse a CVAT XML file: the label names of its ``<meta>`` (in order) and its ``<image>`` elements.

    Args:
        path: CVAT 'for images 1.1' XML export (parsed with defusedxml).

    Returns:
        ``(label names, <image> elements)``.

    Raises:
        InputFileError: missing file, invalid or unsafe XML, or no ``<image>`` elements.
    """
    p = Path(path)
    if not p.exists():
        raise InputFileError(f"{p}: annotation file not found.")
    try:
        root = ElementTree.parse(p).getroot()
    except Exception as e:  # ParseError, defusedxml's EntitiesForbidden / DTDForbidden ...
        raise InputFileError(
            f"{p}: not a valid CVAT XML file ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})."
        ) from None
    labels = [el.findtext("name") for el in root.iter("label") if el.findtext("name")]
    images = root.findall("image")
    if not images:
        raise InputFileError(f"{p}: no <image> elements; is this a CVAT 'for images' export?")
    return labels, images


def import_cvat(
    xml: str | Path,
    out_dir: str | Path,
    mapping: dict[str, int] | None = None,
    images_dir: str | Path | None = None,
    background: int = 0,
) -> list[Path]:
    """Rasterize every annotated image of a CVAT XML file into a class mask.

    Args:
        xml: CVAT for images 1.1 XML.
        out_dir: output folder (``<image stem>.png`` or ``.tif``).
        mapping: label name -> class id; default: the ``<meta>`` labels in order, from 1.
        images_dir: folder of the annotated images; georeferenced rasters found there give GeoTIFF masks on their grid.
        background: value outside every shape.

    Returns:
        The written mask paths.

    Raises:
        InputFileError: invalid XML, a label with no class id, malformed shapes, or an image whose
            size differs from the size the XML states.
    """
    labels, images = read_cvat(xml)
    if mapping is None:
        mapping = {name: k + 1 for k, name in enumerate(labels)}
    with staged_dir(out_dir) as stage:  # every mask appears, or none (a bad image part-way leaves nothing)
        staged = _rasterize_images(images, mapping, background, xml, stage, images_dir)
    written = [Path(out_dir) / p.relative_to(stage) for p in staged]
    log.info("imported %d masks from %s", len(written), xml)
    return written


def _rasterize_images(images, mapping: dict[str, int], background: int, xml, out_dir: Path, images_dir) -> list[Path]:
    written = []
    for im in images:
        name = im.get("name", "")
        where = f"{xml}: image '{name}'"
        try:
            width, height = int(im.get("width")), int(im.get("height"))
        except (TypeError, ValueError):
            raise InputFileError(f"{where}: missing width/height.") from None
        shapes = []
        for order, el in enumerate(im):
            label = el.get("label")
            if el.tag not in ("polygon", "box", "mask") or label is None:
                continue
            if label not in mapping:
                raise InputFileError(f"{where}: label '{label}' has no class id (known: {', '.join(mapping)}).")
            z = int(el.get("z_order", 0))
            if el.tag == "polygon":
                pts = _points(el.get("points", ""), where)
                if len(pts) < 3:
                    raise InputFileError(f"{where}: a polygon needs 3 points or more.")
                geom = Polygon(pts).buffer(0)  # repairs self-intersections
            elif el.tag == "box":
                geom = box(*(float(el.get(k)) for k in ("xtl", "ytl", "xbr", "ybr")))
            else:
                geom = _rle_mask(el, height, width, where)
            shapes.append((z, order, geom, mapping[label]))
        mask = np.full((height, width), background, dtype=np.uint8)
        for _, _, geom, value in sorted(shapes, key=lambda s: (s[0], s[1])):
            if isinstance(geom, np.ndarray):
                mask[geom] = value
            elif not geom.is_empty:
                rasterize([(geom, value)], out=mask, transform=rasterio.transform.Affine.identity())
        written.append(_write(mask, Path(name), Path(out_dir), images_dir, where))
    return written


def _write(mask: np.ndarray, name: Path, out_dir: Path, images_dir, where: str) -> Path:
    src = Path(images_dir) / name if images_dir else None
    if src is not None and src.exists() and is_geotiff(src):
        info = raster_info(src)
        if (info.width, info.height) != (mask.shape[1], mask.shape[0]):
            raise InputFileError(
                f"{where}: the XML says {mask.shape[1]}x{mask.shape[0]} but {src} is {info.width}x{info.height}."
            )
        crs, transform = info.crs, info.transform
        if crs is not None:
            target = out_dir / f"{name.stem}.tif"
            with create_raster(
                target,
                driver="GTiff",
                width=mask.shape[1],
                height=mask.shape[0],
                count=1,
                dtype="uint8",
                crs=crs,
                transform=transform,
                compress="deflate",
            ) as dst:
                dst.write(mask, 1)
            return target
    target = out_dir / f"{name.stem}.png"
    write_png(target, mask)
    return target
