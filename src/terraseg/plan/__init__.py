"""``terraseg plan``: a training config derived from the data by fixed rules, each choice with its reason.

Inputs, as a user has them:

* rasters (files, folders, globs, ``.txt`` lists) with one labels file: a vector file (polygons;
  ``attribute`` names the class column, else every polygon is one class) shared by all rasters, a
  mask raster for a single raster, or a folder of mask rasters matched by file stem;
* a folder of image/mask pairs (layouts of :func:`terraseg.data.sources.detect_layout`);
* a folder of class folders (scene classification).

Steps: the sources (:func:`sources_from_inputs`), the fingerprint (:mod:`terraseg.plan.fingerprint`),
the rules (:mod:`terraseg.plan.rules`), and ``plan.yaml``: an ordinary config, validated, with the
reason for every choice above it as a comment (:func:`write_plan`). ``terraseg train plan.yaml``
trains it; ``terraseg train --data ... --minutes M`` plans and trains in one go.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from terraseg.errors import ConfigError, InputFileError
from terraseg.formats import is_mask_raster
from terraseg.plan.fingerprint import Fingerprint, classification_fingerprint, segmentation_fingerprint
from terraseg.plan.rules import Plan, plan_config
from terraseg.tasks import task_named

PALETTE = [
    "#000000",
    "#e6194b",
    "#3cb44b",
    "#4363d8",
    "#f58231",
    "#911eb4",
    "#46f0f0",
    "#f032e6",
    "#bcf60c",
    "#fabebe",
    "#008080",
    "#e6beff",
    "#9a6324",
    "#fffac8",
    "#800000",
    "#aaffc3",
]


@dataclass
class PlanResult:
    """What planning produced: the fingerprint, the plan (mapping + reasons) and the written file."""

    fingerprint: Fingerprint
    plan: Plan
    path: Path | None


def _classes(names: list[str]) -> list[dict[str, str]]:
    return [{"name": n, "color": PALETTE[i % len(PALETTE)]} for i, n in enumerate(names)]


def _is_class_folders(root: Path) -> bool:
    from terraseg.formats import IMAGE_SUFFIXES

    subs = [d for d in root.iterdir() if d.is_dir()]
    if len(subs) < 2 or any(d.name.lower() in {"images", "masks", "imgs", "labels"} for d in subs):
        return False
    return all(any(p.suffix.lower() in IMAGE_SUFFIXES for p in d.iterdir() if p.is_file()) for d in subs)


def _is_split_layout(root: Path) -> bool:
    """Class folders under split folders: Intel's ``seg_train/<class>``, SAT-6's ``trn/<class>``."""
    return root.is_dir() and any((root / d).is_dir() and _is_class_folders(root / d) for d in ("seg_train", "trn"))


def _vector_classes(path: str, attribute: str | None, layer: str | None = None) -> tuple[list[str], dict[str, int] | None]:
    """Class names from a vector file: background + the attribute's values (sorted, numerically when all are numbers), or background + one class."""
    if attribute is None:
        layer = Path(path).stem
        return ["background", layer if layer.isidentifier() and len(layer) <= 24 else "object"], None
    import pyogrio

    try:
        df = pyogrio.read_dataframe(path, layer=layer, columns=[attribute], read_geometry=False)
    except Exception as e:  # noqa: BLE001 - pyogrio raises several types for a bad file or column
        raise InputFileError(f"{path}: cannot read attribute '{attribute}' ({str(e).splitlines()[0]}).") from None
    if attribute not in df.columns:
        raise InputFileError(f"{path}: no attribute '{attribute}' (columns: {', '.join(map(str, df.columns))}).")
    from terraseg.io.vector import value_text

    values = sorted({value_text(v) for v in df[attribute].dropna()})
    try:  # codes 1, 2, ..., 10, 255 in their numeric order, not as text ('10' < '2')
        values = sorted(values, key=float)
    except ValueError:
        pass
    if not values:
        raise InputFileError(f"{path}: attribute '{attribute}' holds no value; nothing to learn.")
    return ["background", *values], {v: i + 1 for i, v in enumerate(values)}


NODATA_CODES = ("255", "-1", "65535", "-9999")  # attribute values that conventionally mean 'no data' in labels
NODATA_SHARE = 0.001  # such a value is 'none', not a class, when it holds under this share of the labelled pixels


def _drop_nodata_codes(sources: dict[str, Any], names: list[str], class_pixels: list[int]) -> tuple[list[str], list[str]]:
    """Attribute values that mean 'no data' (255, -1, 65535, -9999) and hold (almost) no labelled pixel become unknown.

    Such a value (255 is the usual no-data value of 8-bit labels) would otherwise be a class of its own, listed in
    every table with no pixel to learn from. Its polygons are burnt as ``ignore_index`` (the mapping sends the value
    there) and a note says how to keep it as a class.

    Args:
        sources: the planned sources (their vector mappings are edited in place).
        names: the class names.
        class_pixels: the fingerprint's labelled pixels per class.

    Returns:
        ``(class names without those values, notes)``.
    """
    total = max(sum(class_pixels), 1)
    drop = [k for k, n in enumerate(names) if k and n in NODATA_CODES and class_pixels[k] < NODATA_SHARE * total]
    if not drop or len(names) - len(drop) < 2:
        return names, []
    keep = [n for k, n in enumerate(names) if k not in drop]
    ids = {n: i for i, n in enumerate(keep)}
    for src in sources["train"]:
        vec = src.get("vector")
        if vec and vec.get("mapping"):
            vec["mapping"] = {v: (ids[v] if v in ids else 255) for v in vec["mapping"]}
    notes = [
        f"attribute value {names[k]} holds {class_pixels[k]:,} labelled pixels and conventionally means 'no data': "
        f"its polygons are unknown pixels (ignore_index 255), not a class; map it to a class id in the source's "
        f"vector.mapping to keep it"
        for k in drop
    ]
    return keep, notes


MASK_FULL_READ = 4096 * 4096  # masks up to this many pixels are read whole for their values; larger ones on an overview


def _mask_classes(paths: list[Path]) -> tuple[list[int], int | str | None, list[str], list[int]]:
    """(the class values, mask_nodata, notes, values read as unknown) of mask rasters: the values their pixels hold (the
    first 20 masks).

    Values that mean no data (255, -1, 65535, -9999) and hold under :data:`NODATA_SHARE` of the labelled pixels are
    unknown, not classes, as for vector attributes; a negative value in an untagged mask is its nodata (Sen1Floods11's
    -1). A nodata tag that is also the background value of the mask's own pixels (0 in a 0/1 mask tagged nodata 0, as
    GDAL writes many masks) is not honoured when honouring it would leave fewer than two classes with labelled pixels:
    ``mask_nodata`` is then ``"none"`` and a note says so and how to restore the tag. Masks up to
    :data:`MASK_FULL_READ` pixels are read whole, so a rare class is not missed; a value an overview of a larger mask
    missed is refused in one line when training reads it (:meth:`terraseg.data.rasters.RasterScene.set_mask_values`).
    """
    import numpy as np

    from terraseg.data.census import background_tag_note, hidden_background
    from terraseg.io.raster import open_raster

    counts: dict[int, int] = {}
    nodata, tags = None, set()
    for p in paths[:20]:
        with open_raster(p) as ds:
            nodata = ds.nodata if ds.nodata is not None else nodata
            tags.add(ds.nodata)
            shape = None if ds.width * ds.height <= MASK_FULL_READ else (2048, 2048)
            found, n = np.unique(ds.read(1, out_shape=shape), return_counts=True)
        for v, c in zip(found.tolist(), n.tolist()):
            counts[int(v)] = counts.get(int(v), 0) + int(c)
    seen = set(counts)
    if (hidden := hidden_background(tags, seen)) is not None:
        tag, values = hidden
        return values, "none", [background_tag_note(tag, values, f"set mask_nodata: {tag} in the source")], []
    if nodata is None and seen and min(seen) < 0:  # e.g. Sen1Floods11's -1 for 'no label'
        nodata = min(seen)
    classes = sorted(v for v in seen if v != nodata) or [0, 1]
    total = max(sum(counts[v] for v in classes), 1)
    rare = [v for v in classes if str(v) in NODATA_CODES and counts[v] < NODATA_SHARE * total]
    notes = (
        [
            f"mask value {v} holds {counts[v]:,} labelled pixels and conventionally means 'no data': unknown (ignore_index), "
            "not a class; list it in the source's mask_values to keep it"
            for v in rare
        ]
        if len(classes) - len(rare) >= 2
        else []
    )
    unknown = rare if notes else []
    return [v for v in classes if v not in unknown], (int(nodata) if nodata is not None else None), notes, unknown


def _mask_source(classes: list[int], nodata: int | str | None, unknown: list[int]) -> tuple[dict[str, Any], list[str]]:
    """A mask source's ``mask_nodata`` and ``mask_values`` (when the values are not the ids 0..K-1, or some values are
    unknown: mapped to ignore_index 255), and the class names: ``background`` for 0, ``class_<value>`` for the others
    (named by value, only the values the masks hold)."""
    src: dict[str, Any] = {"mask_nodata": nodata} if nodata is not None else {}
    if classes != list(range(len(classes))) or unknown:
        src["mask_values"] = {str(v): i for i, v in enumerate(classes)} | {str(v): 255 for v in unknown}
    return src, ["background" if v == 0 else f"class_{v}" for v in classes]


EXTENT_SHARE = 0.5  # polygons whose convex hull spans less of the rasters than this: likely a partly labelled scene


def _extent_notes(sources: dict[str, Any], sample: int = 20) -> list[str]:
    """A note when the polygons span little of the rasters they label (their convex hull, up to ``sample`` rasters).

    Users' polygons often cover the part someone digitised; without ``--aoi`` every pixel outside them is trained as
    background. The convex hull of a raster's polygons against its footprint tells a partly digitised scene (a hull over
    a corner) from sparse objects labelled everywhere (a hull over the whole raster).
    """
    import shapely

    from terraseg.io.listing import expand_inputs
    from terraseg.io.raster import open_raster
    from terraseg.io.vector import SharedLabels

    spanned = total = 0.0
    for src in sources["train"]:
        vec = src.get("vector")
        if not vec:
            continue
        images = [src["image"]] if src["kind"] == "scene" else [p for p, _ in expand_inputs(src["images"])][:sample]
        shared = SharedLabels.get(vec["path"], vec.get("layer"))
        for image in images[:sample]:
            with open_raster(image) as ds:
                crs, footprint = ds.crs, shapely.box(*ds.bounds)
            if crs is None:
                continue
            _, geoms = shared.within(crs, footprint.bounds, str(image))
            if len(geoms):
                hull = shapely.union_all(shapely.convex_hull(geoms)).convex_hull
                spanned += shapely.intersection(hull, footprint).area
                total += footprint.area
    if not total or spanned >= EXTENT_SHARE * total:
        return []
    return [
        f"the polygons span {spanned / total:.0%} of the rasters they label (their convex hull): every pixel outside them "
        "is trained and scored as background. If only part was labelled, give --aoi EXTENT.gpkg (polygons of the labelled "
        "extent), so that the rest is unknown, not background."
    ]


def sources_from_inputs(
    inputs: list[str], labels: str | None = None, attribute: str | None = None, aoi: str | None = None, layer: str | None = None
) -> tuple[dict[str, Any], list[str]]:
    """The config's source part and class names for what a user names.

    Args:
        inputs: rasters (files, folders of rasters, globs, ``.txt`` lists), or one folder of image/mask
            pairs or of class folders (then ``labels`` is None).
        labels: a vector file for all rasters, a mask raster (one raster), or a folder of mask rasters
            matched by stem.
        attribute: the vector attribute holding class names or ids.
        aoi: polygons of the labelled extent (:attr:`terraseg.config.SceneSource.aoi`), or None: the whole rasters.
        layer: the layer of ``labels`` in a multi-layer vector file.

    Returns:
        ``({"train": [...], "test": [...], "ignore_index"?: v}, class names)``.

    Raises:
        InputFileError: nothing found, labels that match no raster, an unreadable attribute, an extent or layer given
            where no georeferenced raster or vector file takes it.
    """
    sources, names = _sources(inputs, labels, attribute, layer)
    if layer is not None and not any("vector" in src for src in sources["train"]):
        raise InputFileError(f"--layer {layer}: the labels are not a vector file; leave it out.")
    if aoi is not None:
        if any(src["kind"] not in ("scene", "project") for src in sources["train"]):
            raise InputFileError(
                f"--aoi {aoi}: a labelled extent applies to georeferenced rasters with labels, not to a folder "
                "of image/mask pairs or class folders; leave it out."
            )
        for src in sources["train"]:
            src["aoi"] = str(Path(aoi).resolve())
    return sources, names


def _sources(inputs: list[str], labels: str | None, attribute: str | None, layer: str | None) -> tuple[dict[str, Any], list[str]]:
    """:func:`sources_from_inputs` without the extent."""
    if labels is None:
        if len(inputs) != 1 or not (Path(inputs[0]).is_dir() or Path(inputs[0]).suffix.lower() == ".zip"):
            raise InputFileError(
                "give the labels (--labels POLYGONS.gpkg | MASK.tif | MASK_FOLDER), or one folder of image/mask "
                "pairs or of class folders."
            )
        root = Path(inputs[0]).resolve()
        if root.suffix.lower() == ".zip" or _is_class_folders(root) or _is_split_layout(root):
            from terraseg.config import ClassFolderSource
            from terraseg.data.classes import class_folders

            _, by_class = class_folders(ClassFolderSource(root=str(root)))
            return {"train": [{"kind": "classes", "root": str(root)}]}, sorted(by_class)
        from terraseg.config import FolderSource
        from terraseg.data.sources import folder_pairs

        pairs, layout = folder_pairs(FolderSource(root=str(root)), root)
        n = max(_mask_classes([m for _, m in pairs])[0]) + 1  # folder masks are read as class ids
        if layout == "loveda":
            names = ["background", "building", "road", "water", "barren", "forest", "agriculture"]
        elif layout == "magnetic_tiles":
            names = ["background", "defect"]
        else:
            names = ["background"] + [f"class_{k}" for k in range(1, n)]
        return {"train": [{"kind": "folder", "root": str(root), "layout": layout}]}, names
    from terraseg.io.listing import expand_inputs

    rasters = [p for p, _ in expand_inputs(inputs)]
    if not rasters:
        raise InputFileError(f"{', '.join(inputs)}: no raster found.")
    lab = Path(labels)
    if lab.is_dir():
        masks = {p.stem: p for p in lab.iterdir() if is_mask_raster(p)}
        matched = [(r, masks.get(Path(r).stem)) for r in rasters]
        missing = [r for r, m in matched if m is None]
        if len(missing) == len(matched):
            raise InputFileError(f"{lab}: no mask named after any raster (e.g. {Path(rasters[0]).stem}.tif).")
        classes, nodata, notes, unknown = _mask_classes([m for _, m in matched if m is not None])
        extra, names = _mask_source(classes, nodata, unknown)
        train = [
            {"kind": "scene", "image": str(Path(r).resolve()), "mask": str(m.resolve())} | extra
            for r, m in matched
            if m is not None
        ]
        return {"train": train} | ({"notes": notes} if notes else {}), names
    if is_mask_raster(lab):
        if len(rasters) != 1:
            raise InputFileError(
                f"{lab}: one mask raster labels one raster; for {len(rasters)} rasters give a folder of masks named after them."
            )
        classes, nodata, notes, unknown = _mask_classes([lab])
        extra, names = _mask_source(classes, nodata, unknown)
        src = {"kind": "scene", "image": str(Path(rasters[0]).resolve()), "mask": str(lab.resolve())} | extra
        return {"train": [src]} | ({"notes": notes} if notes else {}), names
    names, mapping = _vector_classes(str(lab), attribute, layer)
    vec: dict[str, Any] = {"path": str(lab.resolve())} | ({"layer": layer} if layer else {})
    if attribute:
        vec |= {"attribute": attribute, "mapping": mapping}
    if len(rasters) > 1:  # a project: rasters indexed once, the labels file read once (terraseg.data.project)
        images = [str(i) if str(i).startswith("/vsi") or "://" in str(i) else os.path.abspath(i) for i in inputs]
        return {"train": [{"kind": "project", "images": images, "vector": vec}]}, names
    return {"train": [{"kind": "scene", "image": str(Path(rasters[0]).resolve()), "vector": vec}]}, names


def fingerprint_sources(sources: dict[str, Any], names: list[str]) -> Fingerprint:
    """Fingerprint the data a source part names (see :mod:`terraseg.plan.fingerprint`).

    Raises:
        InputFileError: unreadable data, labels that do not fit.
    """
    from terraseg.config import ExperimentConfig

    probe = ExperimentConfig.model_validate(
        {
            "name": "plan",
            "task": "classification" if sources["train"][0]["kind"] == "classes" else "segmentation",
            "classes": _classes(names),
            "data": {"train": sources["train"]},
            "model": {"arch": "classifier" if sources["train"][0]["kind"] == "classes" else "unet"},
        }
    )
    if not task_named(probe.task).dense:
        from terraseg.data.classes import class_items_of

        return classification_fingerprint(class_items_of(probe, "train"), len(names))
    from terraseg.data.sources import build_scenes

    scenes = build_scenes(probe.data.train, probe.data, probe.ignore_index, len(names))
    kind = sources["train"][0]["kind"]
    form = "image/mask folder" if kind == "folder" else ("vector" if "vector" in sources["train"][0] else "mask raster")
    if kind == "project":
        form = "vector"
    return segmentation_fingerprint(scenes, len(names), form)


def write_plan(plan: Plan, fp: Fingerprint, path: str | Path) -> Path:
    """Write ``plan.yaml``: the schema line, the fingerprint as a comment, every choice with its reason above it.

    The file is an ordinary config (validated before writing): ``terraseg train plan.yaml`` runs it.

    Raises:
        ConfigError: the planned config does not validate (a planner bug, said in one sentence).
    """
    from pydantic import ValidationError

    from terraseg.config import ExperimentConfig, format_validation_error
    from terraseg.config.describe import SCHEMA_LINE
    from terraseg.io.atomic import write_text_atomic

    try:
        ExperimentConfig.model_validate(plan.raw)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, "the plan")) from None
    schema = Path(__file__).resolve().parents[3] / "configs" / "schema.json"
    lines = [
        SCHEMA_LINE.replace("schema.json", str(schema)) if schema.is_file() else SCHEMA_LINE,
        "# Planned by `terraseg plan` from the data's fingerprint (rules: docs/plan.md):",
    ]
    lines += [f"#   {k}: {json.dumps(v)}" for k, v in fp.to_dict().items() if k != "notes"]
    lines += [f"#   note: {n}" for n in fp.notes]

    def emit(node: dict[str, Any], prefix: str, indent: str) -> None:
        for k, v in node.items():
            key = f"{prefix}{k}"
            if key in plan.reasons:
                lines.append(f"{indent}# {plan.reasons[key]}")
            if isinstance(v, dict) and any(f"{key}.{kk}" in plan.reasons for kk in v):
                lines.append(f"{indent}{k}:")
                emit(v, key + ".", indent + "  ")
            elif isinstance(v, (dict, list)) and v:
                lines.append(f"{indent}{k}:")
                text = yaml.safe_dump(v, default_flow_style=None, sort_keys=False, width=120).rstrip().splitlines()
                lines.extend(indent + "  " + t for t in text)
            else:
                lines.append(
                    f"{indent}{k}: {yaml.safe_dump(v, default_flow_style=True, width=10_000).strip().removesuffix('...').strip()}"
                )

    emit(plan.raw, "", "")
    return write_text_atomic(Path(path), "\n".join(lines) + "\n")


def plan_run(
    inputs: list[str],
    labels: str | None = None,
    attribute: str | None = None,
    minutes: float = 10.0,
    name: str | None = None,
    out: str | Path | None = "plan.yaml",
    measure: bool = True,
    aoi: str | None = None,
    layer: str | None = None,
) -> PlanResult:
    """Plan a training run from data alone (module docstring): fingerprint, rules, ``plan.yaml``.

    Args:
        inputs: see :func:`sources_from_inputs`.
        labels: the labels and their class attribute.
        attribute: the labels and their class attribute.
        minutes: the wall budget of the run.
        name: run name (default: the first input's stem).
        out: where to write the plan (None: not written).
        measure: time the planned network's step on this machine.
        aoi: polygons of the labelled extent (None: every pixel of the rasters is labelled).
        layer: the layer of ``labels``.

    Returns:
        :class:`PlanResult`.

    Raises:
        InputFileError: data that cannot be read or labels that do not fit.
        ConfigError: a bad budget.
    """
    if minutes <= 0:
        raise ConfigError(f"--minutes {minutes:g}: the budget must be positive.")
    sources, names = sources_from_inputs(inputs, labels, attribute, aoi, layer)
    label_notes = sources.pop("notes", [])
    fp = fingerprint_sources(sources, names)
    names, none_notes = _drop_nodata_codes(sources, names, fp.class_pixels)
    if none_notes:
        fp = fingerprint_sources(sources, names)
    fp.notes[:0] = label_notes + none_notes + (_extent_notes(sources) if aoi is None else [])
    from terraseg.devices import training_device

    device = training_device()
    run_name = name or Path(inputs[0].rstrip("/")).stem.replace(" ", "-") or "plan"
    plan = plan_config(fp, run_name, _classes(names), sources, minutes, device, measure=measure)
    path = write_plan(plan, fp, out) if out is not None else None
    return PlanResult(fp, plan, path)


__all__ = ["PlanResult", "fingerprint_sources", "plan_run", "sources_from_inputs", "write_plan"]
