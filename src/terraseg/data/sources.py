"""Build :class:`~terraseg.data.scenes.Scene` lists from config sources, and split them.

Folder layouts understood (see :class:`terraseg.config.FolderSource`):

* ``seed``: ``<root>/train_frames/<stem>.*`` + ``<root>/train_masks/<stem>.*``
* ``loveda``: ``<root>/**/images_png/<n>.png`` + sibling ``masks_png/<n>.png``; value 0 is no-data
  (-> ignore_index) and classes 1..7 become ids 0..6 (Wang et al., LoveDA, NeurIPS 2021).
* ``magnetic_tiles``: ``<root>/MT_<class>/Imgs/<id>.jpg`` + ``<id>.png``, binarised with ``> 0``
  (Huang et al., The Visual Computer 2020).
* ``pairs``: ``<root>/<images_dir>`` + ``<root>/<masks_dir>`` with matching stems.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from terraseg.config import DataConfig, FolderSource, ManifestSource, ProjectSource, SceneSource
from terraseg.data.rasters import RasterScene
from terraseg.data.scenes import ArrayScene, Scene
from terraseg.errors import InputFileError
from terraseg.formats import IMAGE_SUFFIXES, is_photo
from terraseg.settings import resolve_data_path


def _stems(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}


def _pairs_in(images: Path, masks: Path) -> list[tuple[Path, Path]]:
    if not images.is_dir():
        raise InputFileError(f"{images}: image folder not found.")
    if not masks.is_dir():
        raise InputFileError(f"{masks}: mask folder not found.")
    imgs, msks = _stems(images), _stems(masks)
    return [(imgs[s], msks[s]) for s in sorted(imgs) if s in msks]


def detect_layout(root: Path) -> str:
    """Guess a folder layout from its contents (see module docstring).

    Args:
        root: the folder.

    Returns:
        'seed', 'loveda', 'magnetic_tiles' or 'pairs'.
    """
    if (root / "train_frames").is_dir():
        return "seed"
    if any(root.glob("MT_*/Imgs")):
        return "magnetic_tiles"
    if any(root.glob("**/images_png")):
        return "loveda"
    return "pairs"


def folder_pairs(src: FolderSource, root: Path) -> tuple[list[tuple[Path, Path]], str]:
    """List ``(image, mask)`` pairs of a folder source and the layout used.

    Args:
        src: the folder source (layout, include filter).
        root: its resolved root folder.

    Returns:
        ``(pairs, layout)``: image/mask path pairs and the layout used.

    Raises:
        InputFileError: missing folder or no pairs found.
    """
    if not root.is_dir():
        raise InputFileError(f"{root}: data folder not found.")
    layout = detect_layout(root) if src.layout == "auto" else src.layout
    pairs: list[tuple[Path, Path]] = []
    if layout == "seed":
        pairs = _pairs_in(root / "train_frames", root / "train_masks")
    elif layout == "pairs":
        pairs = _pairs_in(root / src.images_dir, root / src.masks_dir)
    elif layout == "loveda":
        for img_dir in sorted(root.glob("**/images_png")):
            if src.include and not any(part in src.include for part in img_dir.parts):
                continue
            pairs += _pairs_in(img_dir, img_dir.parent / "masks_png")
    elif layout == "magnetic_tiles":
        for cls_dir in sorted(root.glob("MT_*")):
            if src.include and cls_dir.name not in src.include:
                continue
            for jpg in sorted((cls_dir / "Imgs").glob("*.jpg")):
                png = jpg.with_suffix(".png")
                if png.is_file():
                    pairs.append((jpg, png))
    if not pairs:
        raise InputFileError(f"{root}: no image/mask pairs found (layout '{layout}').")
    return pairs, layout


def build_scenes(sources: list, cfg: DataConfig, ignore_index: int, num_classes: int | None) -> list[Scene]:
    """Turn config sources into scenes (labels checked; pixels read lazily).

    Args:
        sources: scene and folder sources of a config.
        cfg: the data config (data root).
        ignore_index: mask value of unknown pixels.
        num_classes: K, for checking mask values (None: unchecked).

    Returns:
        One :class:`Scene` per raster or image/mask pair.

    Raises:
        InputFileError: a missing or unreadable file, or labels that do not fit the image.
    """
    root = Path(cfg.data_root) if cfg.data_root else None
    scenes: list[Scene] = []
    for src in sources:
        if isinstance(src, SceneSource):
            vec = src.vector.model_copy(update={"path": str(resolve_data_path(src.vector.path, root))}) if src.vector else None
            raster = RasterScene(
                resolve_data_path(src.image, root),
                bands=src.bands,
                vector=vec,
                mask_path=resolve_data_path(src.mask, root) if src.mask else None,
                mask_nodata=src.mask_nodata,
                ignore_index=ignore_index,
                num_classes=num_classes,
            )
            raster.set_mask_values(src.mask_values)
            if src.aoi:
                raster.set_aoi(resolve_data_path(src.aoi, root), src.aoi_layer)
            scenes.append(raster)
        elif isinstance(src, ManifestSource):
            scenes += manifest_scenes(src, root, ignore_index, num_classes)
        elif isinstance(src, ProjectSource):
            from terraseg.data.project import project_scenes

            scenes += project_scenes(src, root, ignore_index, num_classes)
        else:
            froot = resolve_data_path(src.root, root)
            pairs, layout = folder_pairs(src, froot)
            binarize = src.binarize or layout == "magnetic_tiles"
            offset = -1 if layout == "loveda" and src.value_offset == 0 else src.value_offset
            for img, msk in pairs:
                scenes.append(
                    ArrayScene(
                        img,
                        msk,
                        binarize=binarize,
                        value_offset=offset,
                        ignore_index=ignore_index,
                        num_classes=num_classes,
                        name=str(img.relative_to(froot).with_suffix("")),
                    )
                )
    return scenes


def manifest_scenes(src: ManifestSource, root: Path | None, ignore_index: int, num_classes: int | None) -> list[Scene]:
    """Scenes of the image/mask pairs a manifest lists (rasters streamed, PNG/JPEG pairs as arrays).

    Args:
        src: the manifest source.
        root: the data root (for a manifest path not found from here).
        ignore_index: mask value of unknown pixels.
        num_classes: K, for checking mask values (None: unchecked).

    Returns:
        One scene per row.

    Raises:
        InputFileError: a missing or unreadable manifest, missing columns, an empty manifest.
    """
    import pandas as pd

    p = Path(src.path)
    if not p.is_absolute() and not p.exists():
        p = resolve_data_path(src.path, root)
    if not p.is_file():
        raise InputFileError(f"{p}: manifest not found.")
    try:
        df = pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_csv(p)
    except Exception as e:  # noqa: BLE001 - pandas raises many types for a bad table
        raise InputFileError(f"{p}: not a readable manifest ({type(e).__name__}).") from None
    missing = {src.image_column, src.mask_column} - set(df.columns)
    if missing:
        raise InputFileError(f"{p}: manifest has no column(s) {', '.join(sorted(missing))}.")
    if df.empty:
        raise InputFileError(f"{p}: manifest lists no images.")
    scenes: list[Scene] = []
    for img, msk in zip(df[src.image_column], df[src.mask_column]):
        img_p = Path(img) if Path(img).is_absolute() else p.parent / img
        msk_p = None if not isinstance(msk, str) or not msk else (Path(msk) if Path(msk).is_absolute() else p.parent / msk)
        if is_photo(img_p):
            scenes.append(
                ArrayScene(
                    img_p, msk_p, binarize=src.binarize, ignore_index=ignore_index, num_classes=num_classes, name=img_p.stem
                )
            )
        else:
            scenes.append(RasterScene(img_p, mask_path=msk_p, ignore_index=ignore_index, num_classes=num_classes))
    return scenes


def split_scenes(cfg: DataConfig, ignore_index: int, num_classes: int, seed: int, class_names: list[str] | None = None):
    """The training/validation split of a config, with its record (:class:`terraseg.data.holdout.Split`).

    ``cfg.val`` sources, when given, are the validation data. Otherwise ``cfg.val_fraction`` of the
    labelled pixels is held out by the class-aware spatial-block rules of :mod:`terraseg.data.holdout`
    (blocks of raster scenes with a buffer; whole images of folders), every class represented where
    the data allows it.

    Args:
        cfg: the data config.
        ignore_index: mask value of unknown pixels.
        num_classes: K.
        seed: seed of the hold-out.
        class_names: K names for messages and the record (default ``class_<k>``).

    Returns:
        :class:`terraseg.data.holdout.Split`.

    Raises:
        InputFileError: as :func:`build_scenes`.
    """
    from terraseg.data.holdout import Split, class_aware_split

    train = build_scenes(cfg.train, cfg, ignore_index, num_classes)
    if cfg.val:
        return Split(train, build_scenes(cfg.val, cfg, ignore_index, num_classes), {"method": "sources"})
    if cfg.val_fraction <= 0:
        return Split(train, [], {"method": "none"})
    names = class_names or [f"class_{k}" for k in range(num_classes)]
    return class_aware_split(train, cfg.val_fraction, num_classes, names, seed, cfg.window, cfg.holdout_block, cfg.holdout_buffer)


def train_val_scenes(cfg: DataConfig, ignore_index: int, num_classes: int, seed: int) -> tuple[list[Scene], list[Scene]]:
    """``(training scenes, validation scenes)`` of a config: :func:`split_scenes` without its record.

    Args:
        cfg: the data config.
        ignore_index: mask value of unknown pixels.
        num_classes: K.
        seed: hold-out seed.

    Raises:
        InputFileError: as :func:`build_scenes`.
    """
    s = split_scenes(cfg, ignore_index, num_classes, seed)
    return s.train, s.val


def scene_from_path(
    path: str | Path,
    bands: list[int] | None = None,
    labels: str | Path | None = None,
    ignore_index: int = 255,
    num_classes: int | None = None,
    burn_value: int = 1,
    attribute: str | None = None,
    mapping: dict[str, int] | None = None,
    cache: bool = False,
    mask_nodata: int | None = None,
    layer: str | None = None,
    aoi: str | Path | None = None,
    mask_values: dict[str, int] | None = None,
) -> Scene:
    """Open one input file as a scene: GDAL rasters as :class:`RasterScene`, PNG/JPEG as :class:`ArrayScene`.

    Args:
        path: image file.
        bands: 1-based bands to read (rasters).
        labels: optional vector file or mask raster/image.
        ignore_index: label value meaning unknown (never scored).
        num_classes: K, for checking mask values (None: unchecked).
        burn_value: class id of every polygon without ``attribute`` (:class:`terraseg.config.VectorLabels`).
        attribute: vector field holding the class (:class:`terraseg.config.VectorLabels`).
        mapping: attribute value -> class id (:class:`terraseg.config.VectorLabels`).
        cache: hold a small raster in memory (off: prediction streams windows, so memory does not grow
            with the scene).
        mask_nodata: mask value meaning unknown (default: the mask raster's nodata).
        layer: the layer of vector ``labels`` in a multi-layer file (default: the first).
        aoi: polygons of the labelled extent: labels outside them are unknown (:meth:`RasterScene.set_aoi`).
        mask_values: mask value -> class id for a mask raster (:meth:`RasterScene.set_mask_values`).

    Raises:
        InputFileError: missing/unreadable file, labels that do not fit the image, an extent on an image without
            georeferencing.
    """
    from terraseg.config.base import build_options
    from terraseg.config.prep import LabelOptions

    label = None
    if labels is not None:
        label = build_options(
            LabelOptions,
            "--labels",
            path=str(labels),
            burn_value=burn_value,
            attribute=attribute,
            mapping=mapping,
            nodata=mask_nodata,
            layer=layer,
        )
    scene = labelled_scene(path, label, bands, ignore_index, num_classes, cache)
    if mask_values and isinstance(scene, RasterScene):
        scene.set_mask_values(mask_values)
    if aoi is not None:
        if not isinstance(scene, RasterScene) or scene.crs is None:
            raise InputFileError(f"--aoi {aoi}: {path} has no CRS to place a labelled extent on; leave --aoi out.")
        scene.set_aoi(aoi)
    return scene


def labelled_scene(
    image: str | Path,
    label=None,
    bands: list[int] | None = None,
    ignore_index: int = 255,
    num_classes: int | None = None,
    cache: bool = False,
) -> Scene:
    """Open an image with optional labels (:class:`terraseg.config.prep.LabelOptions`) as a scene.

    Rasters become :class:`RasterScene` (streamed unless ``cache``); PNG/JPEG become :class:`ArrayScene`.
    ``num_classes``: when given, mask values outside ``0..num_classes-1`` raise an error.

    Args:
        image: raster or PNG/JPEG file.
        label: :class:`terraseg.config.prep.LabelOptions` or None.
        bands: 1-based bands to read (rasters).
        ignore_index: mask value of unknown pixels.
        num_classes: K for checking mask values, or None.
        cache: hold a small raster in memory.

    Returns:
        The scene.

    Raises:
        InputFileError: missing/unreadable files, labels that do not fit or do not overlap the image.
    """
    from terraseg.config import VectorLabels
    from terraseg.io.raster import is_virtual

    p: Any = str(image) if is_virtual(image) else Path(image)  # /vsicurl/ URLs stay strings, read by GDAL
    if not is_virtual(image) and not p.exists():
        raise InputFileError(f"{p}: file not found.")
    if is_photo(p):
        return ArrayScene(p, label.path if label else None, ignore_index=ignore_index, num_classes=num_classes)
    vector = mask = None
    if label is not None:
        if label.is_mask:
            mask = Path(label.path)
        else:
            vector = VectorLabels(**{k: getattr(label, k) for k in VectorLabels.model_fields})
    return RasterScene(
        p,
        bands=bands,
        vector=vector,
        mask_path=mask,
        mask_nodata=label.nodata if label else None,
        ignore_index=ignore_index,
        num_classes=num_classes,
        cache=cache,
    )


def labels_for(images: list, labels: list) -> list:
    """Pair each image with its label spec: none, one shared spec, or one per image.

    Args:
        images: image paths.
        labels: no spec, one spec for every image, or one per image.

    Returns:
        One label spec (or None) per image.
    """
    if not labels:
        return [None] * len(images)
    if len(labels) == 1:
        return [labels[0]] * len(images)
    return list(labels)
