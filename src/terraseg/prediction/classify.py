"""``terraseg predict`` with a scene-classification bundle: inputs expanded (files, folders, globs, lists, STAC, as
segmentation does), resumed, classified here or on Ray actors, written by :mod:`terraseg.prediction.class_outputs`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from terraseg.bundle import Bundle
from terraseg.config.inference import PredictConfig
from terraseg.errors import TerrasegError
from terraseg.infer.classify import ImageClassifier
from terraseg.infer.inputs import expand_inputs, open_input
from terraseg.prediction.class_outputs import (
    TABLE,
    classify_scene_to_files,
    grid_outputs,
    kept_rows,
    table_columns,
    table_row,
    write_table,
)


def _classify_files(
    clf: ImageClassifier, bundle: Bundle, paths: list[str], cfg: PredictConfig, result: Any
) -> list[dict[str, Any]]:
    rows = []
    for p, pr in clf.classify_paths(paths, bands=cfg.bands, input_range=cfg.input_range):
        if isinstance(pr, TerrasegError):
            result.failures[p] = str(pr)
        else:
            rows.append(table_row(p, pr, bundle.class_names, cfg.uncertainty))
    return rows


def predict_classes(cfg: PredictConfig, bundle: Bundle, result: Any) -> Any:
    """Classify every input of ``cfg``: image files into ``predictions.csv``, or with ``cfg.grid`` each scene on a grid.

    A bad input is reported in ``result.failures`` and skipped; the others still run. With ``cfg.resume`` the rows
    of an existing ``predictions.csv`` (or a scene's complete grid outputs) are kept and only the rest is classified.
    ``cfg.engine == 'ray'`` runs the same work on Ray actors (:func:`classify_on_ray`), with the same files.
    With ``cfg.grid``, each scene's input drift is checked against the bundle's training statistics
    (:func:`terraseg.infer.drift.bundle_drift`).

    Args:
        cfg: the predict config (options a classifier does not apply are refused before: :mod:`terraseg.tasks`).
        bundle: a classification bundle.
        result: a :class:`terraseg.prediction.run.PredictResult` to fill in.

    Returns:
        ``result``: ``outputs`` per input (grid), ``table`` and ``rows`` (files), ``failures``, ``drift``, ``skipped``.

    Raises:
        InputFileError: inputs naming no image.
        ConfigError: colliding output names, a resumed table with other columns.
    """
    from terraseg.prediction.run import check_output_names

    items = expand_inputs(cfg.inputs, cfg.asset)
    out = Path(cfg.out_dir)
    if cfg.grid:
        check_output_names(items)
        todo = []
        for path, stem in items:
            written = grid_outputs(out, stem, cfg)
            if cfg.resume and all(p.is_file() for p in written.values()):
                result.outputs[path], result.skipped = {k: str(v) for k, v in written.items()}, result.skipped + 1
            else:
                todo.append((path, stem))
        if cfg.engine == "ray":
            from terraseg.prediction.classify_ray import classify_on_ray

            return classify_on_ray(cfg, bundle, todo, result)
        clf = ImageClassifier(bundle, options=cfg.inference)
        for path, stem in todo:
            try:
                scene = open_input(bundle, path, bands=cfg.bands, input_range=cfg.input_range)
                result.outputs[path] = classify_scene_to_files(clf, bundle, path, stem, cfg, scene)
                _drift(bundle, path, scene, result)
            except TerrasegError as e:
                result.failures[path] = str(e)
        return result
    columns = table_columns(bundle.class_names, cfg.uncertainty)
    table = out / TABLE
    kept = kept_rows(table, columns) if cfg.resume else {}
    paths = [p for p, _ in items if p not in kept]
    result.skipped = len(items) - len(paths)
    if cfg.engine == "ray":
        from terraseg.prediction.classify_ray import classify_on_ray

        rows = classify_on_ray(cfg, bundle, [(p, Path(p).stem) for p in paths], result)
    else:
        rows = _classify_files(ImageClassifier(bundle, options=cfg.inference), bundle, paths, cfg, result)
    done = {r["file"]: r for r in rows}
    ordered = [kept.get(p) or done[p] for p, _ in items if p in kept or p in done]
    if ordered:
        out.mkdir(parents=True, exist_ok=True)
        result.table = str(write_table(table, columns, ordered))
        result.rows = len(ordered)
    return result


def _drift(bundle: Bundle, path: str, scene: Any, result: Any) -> None:
    from terraseg.infer.drift import bundle_drift

    report = bundle_drift(bundle, scene)
    if report is not None and report.drifted:
        result.drift[path] = report.message(path)


__all__ = ["predict_classes"]
