"""Hold-outs that represent the data: class-aware spatial blocks with a buffer, recorded exactly.

Without ``data.val`` sources, a share ``data.val_fraction`` of the labelled pixels is held out for
validation. Every labelled raster scene is cut into square blocks; every image of a folder (a
photo/mask pair) is one unit. Units are chosen for validation by fixed rules:

1. **Every class is represented.** Classes are visited from the rarest (fewest labelled pixels) to
   the commonest. A class with no validation pixels yet gets the unit whose pixels of it are
   closest to ``val_fraction`` of the class's total, among the units that leave some of it in
   training. A class whose pixels all lie in one unit cannot be both trained and validated; it is
   named in one sentence with the fix (:attr:`Split.warnings`).
2. **The share is met.** Further units are added in a seeded random order until the held-out
   labelled pixels reach ``val_fraction`` of the total, skipping any unit that would take the last
   training pixels of a class.
3. **Spatial blocks with a buffer.** Neighbouring pixels look alike, so validation blocks are whole
   blocks and training ignores the labels of a ring of ``buffer`` pixels around them (the imagery
   stays as context): the "block" design with a buffer of Roberts et al., *Cross-validation
   strategies for data with temporal, spatial, hierarchical, or phylogenetic structure*, Ecography
   40 (2017), and Valavi et al., *blockCV*, Methods in Ecology and Evolution 10 (2019).
   A validation block is predicted with ``context`` pixels of imagery around it (clipped to the
   scene), scored on the block's own pixels only. Blocks and buffers are places on the map, not only
   in one file: where a block (or its buffer) reaches into an adjacent or overlapping scene of a
   project, training ignores the labels there too.

Block side rule (when ``data.holdout_block`` is unset): about 64 blocks over the whole labelled
area, ``sqrt(labelled pixels / 64)``, between 16 and 2,048 pixels, rounded to 16 pixels (a tiny scene gets small
blocks, enough of them for a 95% interval, rather than one block and no interval). Buffer
rule (``data.holdout_buffer`` unset): an eighth of the block side. Context: a quarter of the
training window.

The split is recorded (:attr:`Split.record`, stored in the bundle as ``manifest.split``) so that
``terraseg evaluate BUNDLE --split val`` scores exactly the pixels training validated on
(:func:`apply_record`).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from terraseg.data.rasters import RasterScene
from terraseg.data.scenes import Region, Scene
from terraseg.errors import BundleError

log = logging.getLogger(__name__)

TARGET_BLOCKS = 64
MIN_BLOCK, MAX_BLOCK = 16, 2048  # 16: a tiny scene (100 x 100 px) still gets about 40 blocks, so an interval


@dataclass
class Split:
    """A train/validation split of scenes.

    Attributes:
        train: training scenes (rasters with validation blocks and buffer excluded from their labels).
        val: validation scenes (raster blocks with context, whole folder images).
        record: JSON-able description of the exact split (:func:`apply_record` rebuilds it), or None
            when the split came from the caller (cross-validation folds).
        warnings: one sentence per figure a user could misread (a class that could not be held out).
    """

    train: list[Scene]
    val: list[Scene]
    record: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)


def block_side(labelled_pixels: float) -> int:
    """The block side rule: about :data:`TARGET_BLOCKS` blocks over the labelled area, in pixels.

    Args:
        labelled_pixels: labelled pixels of all raster scenes.

    Returns:
        Side in pixels, between 16 and 2,048, a multiple of 16.
    """
    side = float(np.sqrt(max(labelled_pixels, 1.0) / TARGET_BLOCKS))
    return int(np.clip(round(side / 16) * 16, MIN_BLOCK, MAX_BLOCK))


def _unit_counts(scene: Scene, num_classes: int, block: int) -> list[tuple[Region | None, np.ndarray]]:
    """Per-unit labelled pixel counts of each class: blocks of a raster scene, or the whole image.

    Returns:
        ``[(region or None, (K,) int64 counts)]``; counts of a decimated overview are scaled to full-resolution pixels.
    """
    if isinstance(scene, RasterScene):
        mask = scene.label_overview(1 << 22)
        assert mask is not None
        sy, sx = mask.shape[0] / scene.height, mask.shape[1] / scene.width
        area = 1.0 / max(sy * sx, 1e-12)
        out: list[tuple[Region | None, np.ndarray]] = []
        for r in range(0, scene.height, block):
            for c in range(0, scene.width, block):
                h, w = min(block, scene.height - r), min(block, scene.width - c)
                sub = mask[int(r * sy) : int(np.ceil((r + h) * sy)), int(c * sx) : int(np.ceil((c + w) * sx))]
                counts = np.bincount(sub[(sub >= 0) & (sub < num_classes)].ravel(), minlength=num_classes)[:num_classes]
                out.append((Region(r, c, h, w), (counts * area).round().astype(np.int64)))
        return out
    mask = scene.read(0, 0, scene.height, scene.width).mask
    assert mask is not None
    counts = np.bincount(mask[(mask >= 0) & (mask < num_classes)].ravel(), minlength=num_classes)[:num_classes]
    return [(None, counts.astype(np.int64))]


def _choose(counts: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, list[int]]:
    """Rules 1 and 2 of the module docstring on a ``(U, K)`` count table.

    Returns:
        ``(chosen (U,) bool, classes that could not be held out)``.
    """
    rng = np.random.default_rng(seed)
    total = counts.sum(0)
    chosen = np.zeros(len(counts), dtype=bool)
    held = np.zeros_like(total)
    tie = rng.random(len(counts))
    unheld = []

    def keeps_training(held: np.ndarray) -> np.ndarray:
        """(U,) True where adding the unit leaves training pixels of every class that has any."""
        return ~np.any((total > 0) & (total - held - counts <= 0), axis=1)

    for c in [int(k) for k in np.argsort(total, kind="stable") if total[k] > 0]:
        if held[c] > 0:
            continue
        ok = (~chosen) & (counts[:, c] > 0) & keeps_training(held)
        if not ok.any():
            unheld.append(c)
            continue
        cand = np.flatnonzero(ok)
        pick = cand[np.lexsort((tie[cand], np.abs(counts[cand, c] - fraction * total[c])))[0]]
        chosen[pick] = True
        held += counts[pick]
    target = fraction * total.sum()
    for u in rng.permutation(len(counts)):
        if held.sum() >= target:
            break
        if chosen[u] or counts[u].sum() == 0 or not keeps_training(held)[u]:
            continue  # taken, unlabelled, or it would take the last training pixels of a class
        chosen[u] = True
        held += counts[u]
    return chosen, unheld


def _sub_scene(scene: RasterScene, block: Region, context: int) -> RasterScene:
    """A validation scene: ``block`` (pixels of the scene's region) with ``context`` pixels of imagery around it.

    Labels outside the block are ``ignore_index`` (:attr:`RasterScene.score_region`).
    """
    r0, c0 = max(block.row_off - context, 0), max(block.col_off - context, 0)
    r1 = min(block.row_off + block.height + context, scene.height)
    c1 = min(block.col_off + block.width + context, scene.width)
    part = scene.restricted(Region(r0, c0, r1 - r0, c1 - c0))
    part.score_region = Region(block.row_off - r0, block.col_off - c0, block.height, block.width)
    part.name = f"{scene.name}[{block.row_off}:{block.row_off + block.height},{block.col_off}:{block.col_off + block.width}]"
    return part


def _build(
    scenes: list[Scene], units: list[tuple[int, Region | None]], buffer: int, context: int
) -> tuple[list[Scene], list[Scene]]:
    """Training and validation scenes for the chosen validation ``units`` (scene index, block or None for a whole image)."""
    val: list[Scene] = []
    held: dict[int, list[Region]] = {}
    whole: set[int] = set()
    for i, region in units:
        s = scenes[i]
        if region is None:
            val.append(s)
            whole.add(i)
        else:
            assert isinstance(s, RasterScene)
            val.append(_sub_scene(s, region, context))
            held.setdefault(i, []).append(
                Region(region.row_off - buffer, region.col_off - buffer, region.height + 2 * buffer, region.width + 2 * buffer)
            )
    for j, extra in _across_scenes(scenes, held).items():
        held.setdefault(j, []).extend(extra)
    train: list[Scene] = []
    for i, s in enumerate(scenes):
        if i in whole:
            continue
        if i in held:
            s = copy.copy(s)
            s.exclude = tuple(getattr(s, "exclude", ())) + tuple(held[i])
            s._cached = None
        train.append(s)
    return train, val


def _georeferenced(s: Scene) -> bool:
    return isinstance(s, RasterScene) and s.crs is not None and not s.transform.is_identity and s.info.gcps is None


def _across_scenes(scenes: list[Scene], held: dict[int, list[Region]]) -> dict[int, list[Region]]:
    """The held-out blocks and their buffer where they reach into other scenes (adjacent or overlapping tiles).

    A validation block at a tile's edge has neighbours in the next tile; training must not see the labels
    there either. Each held region (block + buffer) is taken to map coordinates and back into every other
    georeferenced scene it meets (reprojected as a rectangle when the CRSs differ).

    Returns:
        ``{scene index: [regions in its pixels]}`` to add to those scenes' exclusions.
    """
    geo = [i for i, s in enumerate(scenes) if _georeferenced(s)]
    if len(geo) < 2 or not any(i in held for i in geo):
        return {}
    from rasterio.warp import transform_bounds

    bounds = np.array([scenes[i].window_bounds(0, 0, scenes[i].height, scenes[i].width) for i in geo])
    out: dict[int, list[Region]] = {}
    for i in geo:
        src = scenes[i]
        for r in held.get(i, []):
            b = src.window_bounds(r.row_off, r.col_off, r.height, r.width)
            for k, j in enumerate(geo):
                dst = scenes[j]
                if j == i:
                    continue
                bb = b if dst.crs == src.crs else transform_bounds(src.crs, dst.crs, *b)
                lo = bounds[k]
                if bb[2] <= lo[0] or bb[0] >= lo[2] or bb[3] <= lo[1] or bb[1] >= lo[3]:
                    continue
                inv = ~dst.transform
                xs, ys = zip(*(inv * (x, y) for x in (bb[0], bb[2]) for y in (bb[1], bb[3])))
                c0, c1 = int(np.floor(min(xs))), int(np.ceil(max(xs)))
                r0, r1 = int(np.floor(min(ys))), int(np.ceil(max(ys)))
                r0, c0, r1, c1 = max(r0, 0), max(c0, 0), min(r1, dst.height), min(c1, dst.width)
                if r1 > r0 and c1 > c0:
                    out.setdefault(j, []).append(Region(r0, c0, r1 - r0, c1 - c0))
    return out


def _scene_key(s: Scene) -> str:
    return str(getattr(s, "path", s.name))


def class_pixels(scenes: list[Scene], num_classes: int) -> np.ndarray:
    """``(K,)`` labelled pixels per class over the labelled scenes (read from label overviews, as the hold-out counts).

    Args:
        scenes: scenes (unlabelled ones count nothing).
        num_classes: K.
    """
    total = np.zeros(num_classes, dtype=np.int64)
    for s in scenes:
        if s.has_labels:
            for _, counts in _unit_counts(s, num_classes, MAX_BLOCK):
                total += counts
    return total


def class_aware_split(
    scenes: list[Scene],
    val_fraction: float,
    num_classes: int,
    class_names: list[str],
    seed: int,
    window: int,
    block: int | None = None,
    buffer: int | None = None,
) -> Split:
    """Hold out ``val_fraction`` of the labelled pixels so that every class is represented (module docstring).

    Args:
        scenes: labelled training scenes (rasters and folder images); unlabelled scenes stay in training.
        val_fraction: share of labelled pixels to hold out, in (0, 1).
        num_classes: K.
        class_names: K names, for messages and the record.
        seed: seed of the tie-breaks and of the fill order.
        window: training window side in pixels (sets the validation context, a quarter of it).
        block: block side in pixels (None: the rule of :func:`block_side`).
        buffer: pixels around validation blocks whose labels training ignores (None: block / 8).

    Returns:
        :class:`Split` with its record and warnings.
    """
    labelled = [i for i, s in enumerate(scenes) if s.has_labels]
    rasters = [i for i in labelled if isinstance(scenes[i], RasterScene)]
    raster_px = sum(scenes[i].height * scenes[i].width for i in rasters)
    side = int(block) if block else block_side(raster_px)
    buf = int(buffer) if buffer is not None else side // 8
    context = window // 4
    units: list[tuple[int, Region | None]] = []
    rows: list[np.ndarray] = []
    for i in labelled:
        for region, counts in _unit_counts(scenes[i], num_classes, side):
            units.append((i, region))
            rows.append(counts)
    counts = np.stack(rows) if rows else np.zeros((0, num_classes), dtype=np.int64)
    from terraseg.data.census import require_two_classes

    require_two_classes(counts.sum(0), class_names, [scenes[i] for i in labelled], "train")
    chosen, unheld = _choose(counts, val_fraction, seed)
    picked = [u for u, c in zip(units, chosen) if c]
    train, val = _build(scenes, picked, buf, context)
    total, held = counts.sum(0), counts[chosen].sum(0)
    warnings = []
    for c in unheld:
        where = "block" if any(r is not None for (_, r), n in zip(units, counts[:, c]) if n > 0) else "image"
        warnings.append(
            f"class '{class_names[c]}' cannot be held out: all its {int(total[c]):,} labelled pixels lie in one {where}"
            f"{f' of {side} px' if where == 'block' else ''}, so validation does not score it; label it in more places, "
            f"set a smaller data.holdout_block, or give data.val sources."
        )
    record = {
        "method": "class-aware blocks",
        "val_fraction": val_fraction,
        "seed": seed,
        "block": side,
        "buffer": buf,
        "context": context,
        "units": [
            {
                "scene": i,
                "source": _scene_key(scenes[i]),
                "region": None if r is None else [r.row_off, r.col_off, r.height, r.width],
            }
            for i, r in picked
        ],
        "pixels": {name: {"train": int(total[k] - held[k]), "val": int(held[k])} for k, name in enumerate(class_names)},
        "warnings": warnings,
    }
    for w in warnings:
        log.warning(w)
    return Split(train, val, record, warnings)


def apply_record(scenes: list[Scene], record: dict[str, Any]) -> Split:
    """Rebuild a recorded split on the same training scenes (``terraseg evaluate BUNDLE --split val``).

    Args:
        scenes: the training sources' scenes, built as at training time (same order).
        record: :attr:`Split.record` as stored in a bundle.

    Returns:
        The :class:`Split` training used.

    Raises:
        BundleError: the scenes differ from those the bundle was trained on.
    """
    units = []
    for u in record["units"]:
        i = int(u["scene"])
        if i >= len(scenes) or _scene_key(scenes[i]).split("/")[-1] != str(u["source"]).split("/")[-1]:
            raise BundleError(
                f"the bundle's validation split names {u['source']} as training scene {i}, but the data now "
                f"has {_scene_key(scenes[i]) if i < len(scenes) else 'no such scene'}; evaluate with the data "
                f"the bundle was trained on, or use --split test."
            )
        r = u.get("region")
        units.append((i, None if r is None else Region(*map(int, r))))
    train, val = _build(scenes, units, int(record.get("buffer", 0)), int(record.get("context", 0)))
    return Split(train, val, record, list(record.get("warnings", [])))
