"""What the labels hold, and the refusal of a task they cannot teach or score.

A segmentation model learns to tell classes apart; with labelled pixels of one class alone it learns a constant
and scores 1.0 on a hold-out of that class (a perfect figure of a useless map). Training (plan, ``train``, ``cv``,
``tune``) and scoring (``evaluate``) therefore stop, in one sentence naming the labels and the missing classes,
when fewer than two classes have labelled pixels. The commonest cause is a mask whose nodata tag is also its
background value (a 0/1 mask tagged nodata 0, as GDAL writes many): the sentence says so and names the setting.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from terraseg.errors import InputFileError


def _label_files(scenes: Sequence[object]) -> str:
    names = []
    for s in scenes:
        path = getattr(s, "mask_path", None) or getattr(getattr(s, "_rasterizer", None), "path", None) or getattr(s, "path", None)
        if path and str(path) not in names:
            names.append(str(path))
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "") if names else "the labels"


def hidden_background(tags: set, values: set[int]) -> tuple[int, list[int]] | None:
    """The rule of :func:`background_tag` on what was read: the masks' nodata tags and the values of their pixels.

    Args:
        tags: the nodata tag of every mask read (None for an untagged mask).
        values: the pixel values seen.

    Returns:
        ``(0, the values seen, sorted)`` when every mask carries the tag 0, its pixels hold it, and the other values
        seen are fewer than two; else None.
    """
    if tags != {0.0} or 0 not in values or len(values - {0}) >= 2 or len(values) < 2:
        return None
    return 0, sorted(values)


def background_tag(paths: Sequence[str | Path], sample: int = 20) -> tuple[int, list[int]] | None:
    """The nodata tag of mask rasters that is really their background value, or None.

    A mask tagged nodata 0 whose own pixels are 0 and one other value (a 0/1 mask, as GDAL writes many) would,
    if the tag were honoured, leave one class with labelled pixels: 0 is its background. Read on an overview of
    at most 1,024 x 1,024 pixels of each of the first ``sample`` masks; the rule is :func:`hidden_background`.

    Args:
        paths: mask rasters.
        sample: how many of them to read.

    Returns:
        ``(tag, the values seen)``, or None.
    """
    from terraseg.io.raster import open_raster

    tags: set = set()
    values: set[int] = set()
    for p in list(paths)[:sample]:
        with open_raster(p) as ds:
            tags.add(ds.nodata)
            m = ds.read(1, out_shape=(min(ds.height, 1024), min(ds.width, 1024)))
            values |= {int(v) for v in np.unique(m)}
    return hidden_background(tags, values)


def background_tag_note(tag: int, values: list[int], restore: str) -> str:
    """The sentence that says a mask's nodata tag was counted as background, and how to restore the tag.

    Args:
        tag: the nodata tag.
        values: the mask values seen.
        restore: the setting that restores the tag, as words.
    """
    return (
        f"the mask's nodata tag {tag} is also its background value (its pixels are {', '.join(map(str, values))}): "
        f"honouring it would leave one class with labelled pixels, so {tag} is counted as class 'background' "
        f"(mask_nodata: none); {restore} to restore the tag"
    )


def tagged_background(scenes: Sequence[object], class_names: Sequence[str]) -> tuple[int, bool] | None:
    """The mask nodata value that hides a class value (``0`` of a 0/1 mask tagged nodata 0), or None.

    Args:
        scenes: the scenes whose labels were counted.
        class_names: K names.

    Returns:
        ``(value, from_tag)`` when a scene's mask nodata is a class id (0..K-1): from the mask's own tag, or set.
    """
    for s in scenes:
        value = getattr(s, "mask_nodata", None)
        if isinstance(value, int) and 0 <= value < len(class_names):
            return int(value), getattr(s, "mask_nodata_tag", None) == value
    return None


def require_two_classes(counts: np.ndarray, class_names: Sequence[str], scenes: Sequence[object], purpose: str) -> None:
    """Refuse training or scoring when fewer than two classes have labelled pixels.

    Args:
        counts: ``(K,)`` labelled pixels per class.
        class_names: K names.
        scenes: the scenes counted (their label files are named in the message).
        purpose: what would have run: ``"train"`` or ``"score"``.

    Raises:
        InputFileError: one sentence naming the label files, the classes with and without pixels, and what would work.
    """
    counts = np.asarray(counts)
    present = [class_names[k] for k in range(len(class_names)) if counts[k] > 0]
    if len(present) >= 2:
        return
    missing = [class_names[k] for k in range(len(class_names)) if counts[k] <= 0]
    files = _label_files(scenes)
    has = f"only class '{present[0]}' has labelled pixels" if present else "no class has a labelled pixel"
    why = (
        "a model cannot learn to tell classes apart from one"
        if purpose == "train"
        else "a score of one class alone says nothing of the map"
    )
    hidden = tagged_background(scenes, class_names)
    if hidden is not None:
        tag, from_tag = hidden
        what = f"the mask's nodata tag {tag}" if from_tag else f"mask_nodata {tag}"
        fix = (
            f"{what} is also the value of class '{class_names[tag]}': if {tag} is '{class_names[tag]}', set mask_nodata: "
            f"none in the source (or plan without a config, which does) to count it"
        )
    else:
        fix = "label at least two classes (e.g. background polygons, or a mask whose background pixels are not nodata)"
    raise InputFileError(f"{files}: {has} ({', '.join(missing)}: none), so {why}; {fix}.")


__all__ = ["background_tag", "background_tag_note", "hidden_background", "require_two_classes", "tagged_background"]
