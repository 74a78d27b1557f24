"""Scene-classification outputs: ``predictions.csv`` for image files, a class grid per georeferenced scene.

The engine (:mod:`terraseg.infer.classify`) computes class probabilities; this module writes them, every
output under a temporary name renamed when whole. :mod:`terraseg.prediction.classify` drives the work.

Outputs:

* image files: ``<out>/predictions.csv``, one row per image: ``file``, ``predicted``, ``probability``
  (of the predicted class), ``p_<class>`` for every class, and with ``uncertainty`` ``margin`` and
  ``normalized_entropy`` (:func:`terraseg.infer.sliding.confidence_bands`).
* ``grid``: per scene ``<stem>_classes.tif`` (one pixel per window, the scene's CRS, its transform
  scaled by the window side), ``<stem>_windows.geojson`` (one polygon per classified window) and,
  when asked, ``<stem>_probs.tif``, ``<stem>_confidence.tif`` and ``<stem>_overlay.png``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from terraseg.bundle import Bundle
from terraseg.config.inference import PredictConfig
from terraseg.data.scenes import Scene
from terraseg.errors import ConfigError
from terraseg.infer.classify import ImageClassifier, classify_grid, grid_geometry
from terraseg.infer.inputs import open_input
from terraseg.infer.sliding import confidence_bands
from terraseg.io.atomic import atomic_path, write_text_atomic
from terraseg.io.predictions import PredictionWriter

TABLE = "predictions.csv"


def table_columns(class_names: list[str], uncertainty: bool) -> list[str]:
    """The columns of ``predictions.csv``.

    Args:
        class_names: the bundle's classes.
        uncertainty: add ``margin`` and ``normalized_entropy``.
    """
    return (
        ["file", "predicted", "probability"]
        + [f"p_{n}" for n in class_names]
        + (["margin", "normalized_entropy"] if uncertainty else [])
    )


def table_row(path: str, probs: np.ndarray, class_names: list[str], uncertainty: bool) -> dict[str, Any]:
    """One row of ``predictions.csv`` from an image's ``(K,)`` probabilities.

    Args:
        path: the image.
        probs: ``(K,)`` float32 summing to 1.
        class_names: the K names.
        uncertainty: add the margin over the second class and the entropy divided by ``log K``.
    """
    row: dict[str, Any] = {
        "file": path,
        "predicted": class_names[int(probs.argmax())],
        "probability": round(float(probs.max()), 6),
    }
    row |= {f"p_{n}": round(float(v), 6) for n, v in zip(class_names, probs)}
    if uncertainty:
        conf = confidence_bands(torch.from_numpy(np.asarray(probs, np.float32))[:, None, None])[:, 0, 0].tolist()
        row |= {"margin": round(conf[1], 6), "normalized_entropy": round(conf[2], 6)}
    return row


def kept_rows(table: Path, columns: list[str]) -> dict[str, dict[str, str]]:
    """The rows of an existing ``predictions.csv`` (``--resume``), keyed by file.

    Args:
        table: the CSV.
        columns: the header this run writes.

    Raises:
        ConfigError: the table was written with other columns (other options).
    """
    if not table.is_file():
        return {}
    with open(table, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames != columns:
            raise ConfigError(
                f"{table}: written with other columns ({', '.join(reader.fieldnames or [])}); predict into "
                "another --out folder, or run without --resume."
            )
        return {r["file"]: r for r in reader}


def write_table(table: Path, columns: list[str], rows: list[dict[str, Any]]) -> Path:
    """Write ``predictions.csv`` whole under a temporary name, then rename it.

    Args:
        table: the CSV path.
        columns: its header.
        rows: one dict per image.

    Raises:
        OutputError: the folder cannot be written.
    """
    with atomic_path(table) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        w.writerows(rows)
    return table


def grid_outputs(out_dir: Path, stem: str, cfg: PredictConfig) -> dict[str, Path]:
    """The files a grid classification of ``stem`` writes under ``cfg``'s options.

    Args:
        out_dir: output folder.
        stem: output name.
        cfg: the predict options (probabilities, uncertainty, overlay).
    """
    paths = {"classes": out_dir / f"{stem}_classes.tif", "windows": out_dir / f"{stem}_windows.geojson"}
    if cfg.probabilities:
        paths["probabilities"] = out_dir / f"{stem}_probs.tif"
    if cfg.uncertainty:
        paths["confidence"] = out_dir / f"{stem}_confidence.tif"
    if cfg.overlay:
        paths["overlay"] = out_dir / f"{stem}_overlay.png"
    return paths


def classify_scene_to_files(
    clf: ImageClassifier, bundle: Bundle, path: str, stem: str, cfg: PredictConfig, scene: Scene | None = None
) -> dict[str, str]:
    """Classify one georeferenced scene on a grid of windows and write its outputs (module docstring).

    A window without a valid pixel is nodata in the rasters and left out of the GeoJSON. Memory holds one
    row of windows.

    Args:
        clf: the classifier.
        bundle: its bundle.
        path: the scene.
        stem: output name.
        cfg: the predict options (``inference.window``: the window side, default the classifier's input size; bands,
            input_range, probabilities, uncertainty, overlay, compress, level, cog).
        scene: ``path`` already opened for the bundle (:func:`terraseg.infer.inputs.open_input`), or None.

    Returns:
        ``{output kind: path}``.

    Raises:
        BundleError: band count or bit depth.
        InputFileError: unreadable scene.
        OutputError: unwritable folder.
    """
    from terraseg.prediction.outputs import write_grid_overlay

    win = cfg.inference.window or clf.size
    scene = scene if scene is not None else open_input(bundle, path, bands=cfg.bands, input_range=cfg.input_range)
    out = Path(cfg.out_dir)
    paths = grid_outputs(out, stem, cfg)
    rows, cols, grid = grid_geometry(scene, win)
    names, colors = bundle.class_names, [c.color for c in bundle.manifest.classes]
    features: list[dict] = []
    ids_grid = np.full((rows, cols), -1, np.int64)
    with PredictionWriter(
        paths["classes"],
        grid,
        names,
        colors,
        paths.get("probabilities"),
        compress=cfg.compress,
        level=cfg.level,
        cog=cfg.cog,
        confidence=paths.get("confidence"),
    ) as writer:
        for g in classify_grid(clf, scene, win):
            ids = g.class_ids
            ids_grid[g.row] = ids
            conf = confidence_bands(torch.from_numpy(g.probabilities.T[:, None, :].copy())).numpy() if cfg.uncertainty else None
            if conf is not None:
                conf[:, :, g.empty] = np.nan
            writer.write(g.row, 0, ids[None, :], g.probabilities.T[:, None, :], confidence=conf)
            for c in np.flatnonzero(~g.empty):
                x0, y0 = grid.transform * (c, g.row)
                x1, y1 = grid.transform * (c + 1, g.row + 1)
                features.append(
                    {
                        "type": "Feature",
                        "properties": {
                            "row": g.row,
                            "col": int(c),
                            "class_id": int(ids[c]),
                            "class": names[ids[c]],
                            "probability": round(float(g.probabilities[c].max()), 6),
                        },
                        "geometry": {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]},
                    }
                )
    crs = {"type": "name", "properties": {"name": scene.crs.to_string()}} if scene.crs else None
    write_text_atomic(
        paths["windows"], json.dumps({"type": "FeatureCollection", **({"crs": crs} if crs else {}), "features": features})
    )
    if cfg.overlay:
        write_grid_overlay(scene, ids_grid, win, paths["overlay"], colors)
    return {k: str(v) for k, v in paths.items()}


__all__ = ["TABLE", "classify_scene_to_files", "grid_outputs", "kept_rows", "table_columns", "table_row", "write_table"]
