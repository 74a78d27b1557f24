"""The one tracking writer: every training run (network or pixel baseline) logs to MLflow through it.

A :class:`Tracker` creates the MLflow run up front; networks hand Lightning an ``MLFlowLogger`` bound
to that run (per-epoch metrics), and every trainer logs its parameters, final metrics and artifacts
(the bundle, plots) through the same methods, so runs of every kind look alike in the MLflow UI.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from terraseg.config import ExperimentConfig


def tracking_uri_for(cfg: ExperimentConfig, run_dir: Path, override: str | None = None) -> str:
    """The MLflow tracking URI: ``override``, else the config's, else ``sqlite:///<run_dir>/mlflow.db``."""
    return override or cfg.tracking.tracking_uri or f"sqlite:///{(run_dir / 'mlflow.db').resolve()}"


def flatten_params(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists become JSON text (at most 500 characters)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out |= flatten_params(v, key + ".")
        elif isinstance(v, list):
            out[key] = json.dumps(v)[:500]
        else:
            out[key] = v
    return out


class Tracker:
    """One MLflow run of a training config.

    Args:
        cfg: the experiment config (experiment name, tracking settings).
        run_dir: the run folder (default sqlite store and artifact location).
        tracking_uri: overrides the config's URI.
        parent_run_id: the run this one nests under (``mlflow.parentRunId``), e.g. a tuning study's run.
    """

    def __init__(self, cfg: ExperimentConfig, run_dir: Path, tracking_uri: str | None = None, parent_run_id: str | None = None) -> None:
        import mlflow

        self.uri = tracking_uri_for(cfg, run_dir, tracking_uri)
        self.client = mlflow.MlflowClient(tracking_uri=self.uri)
        self.experiment = cfg.tracking.experiment or cfg.name
        exp = self.client.get_experiment_by_name(self.experiment)
        artifacts = (run_dir / "mlartifacts").resolve().as_uri() if self.uri.startswith("sqlite") else None
        exp_id = exp.experiment_id if exp else self.client.create_experiment(self.experiment, artifact_location=artifacts)
        tags = {"mlflow.parentRunId": parent_run_id} if parent_run_id else None  # a nested run (tuning trial)
        self.run_id = self.client.create_run(exp_id, run_name=cfg.name, tags=tags).info.run_id

    def log_params(self, params: dict[str, Any]) -> None:
        """Log flat parameters (values as text, at most 500 characters)."""
        from mlflow.entities import Param

        items = [Param(k, str(v)[:500]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        """Log the float and int values of ``metrics`` (others are skipped)."""
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                self.client.log_metric(self.run_id, k, float(v), step=step or 0)

    def log_artifacts(self, *paths: Path) -> None:
        """Upload files that exist to the run's artifact store."""
        for p in paths:
            if Path(p).exists():
                self.client.log_artifact(self.run_id, str(p))

    def lightning_logger(self):
        """A Lightning ``MLFlowLogger`` writing into this run (per-epoch metrics)."""
        from lightning.pytorch.loggers import MLFlowLogger

        return MLFlowLogger(experiment_name=self.experiment, tracking_uri=self.uri, run_id=self.run_id)

    def finish(self, status: str = "FINISHED") -> None:
        """Mark the run ended (FINISHED or FAILED)."""
        self.client.set_terminated(self.run_id, status=status)


def plot_learning_curve(history: list[dict[str, Any]], path: Path) -> Path | None:
    """Write ``learning_curve.png``: training loss, validation score and learning rate per epoch.

    Args:
        history: per-epoch entries (``epoch``, ``val/score``, ``train/loss``, ``lr``).
        path: the PNG to write.

    Returns:
        ``path``, or None without history.
    """
    if not history:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from terraseg.io.atomic import atomic_path

    epochs = [h["epoch"] + 1 for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for ax, key, title in zip(axes, ("train/loss", "val/score", "lr"), ("training loss", "validation score", "learning rate")):
        vals = [h.get(key) for h in history]
        pts = [(e, v) for e, v in zip(epochs, vals) if v is not None]
        if pts:
            ax.plot(*zip(*pts), marker="o", ms=3)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path


def write_history(history: list[dict[str, Any]], path: Path) -> Path | None:
    """Write the per-epoch history as CSV (``epoch`` from 1, then every logged figure), for DVC plots and spreadsheets.

    Args:
        history: per-epoch entries (``epoch`` 0-based, ``val/...``, ``train/loss``, ``lr``).
        path: the CSV file.

    Returns:
        ``path``, or None without history.
    """
    if not history:
        return None
    import csv
    import io

    from terraseg.io.atomic import write_text_atomic

    keys = ["epoch"] + sorted({k for h in history for k in h if k != "epoch" and isinstance(h[k], (int, float))})
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(keys)
    for h in history:
        w.writerow([h["epoch"] + 1] + [h.get(k, "") for k in keys[1:]])
    return write_text_atomic(path, buf.getvalue())


def log_evaluation(bundle: Any, metrics: dict[str, Any], files: list[Path], tracking_uri: str | None = None,
                   prefix: str = "test") -> str | None:
    """Log an evaluation to the MLflow run that trained ``bundle`` (``<prefix>/<metric>`` and the files).

    The run is the one the bundle records (``training.mlflow_run_id``); the store is ``tracking_uri``,
    else the ``mlflow.db`` beside the bundle (the run folder's default store). Nothing is logged, and
    no error raised, when the bundle records no run or no store is found: evaluation never fails on
    tracking.

    Args:
        bundle: the loaded bundle (``path``, ``manifest``). metrics: the evaluation's figures.
        files: artifacts (metrics.json, confusion_matrix.png). tracking_uri: the store.
        prefix: metric name prefix.

    Returns:
        The run id logged to, or None.
    """
    import logging

    run_id = (bundle.manifest.training or {}).get("mlflow_run_id")
    db = Path(bundle.path).parent / "mlflow.db" if getattr(bundle, "path", None) else None
    uri = tracking_uri or (f"sqlite:///{db.resolve()}" if db is not None and db.is_file() else None)
    if not run_id or not uri:
        return None
    try:
        import mlflow

        client = mlflow.MlflowClient(tracking_uri=uri)
        client.get_run(run_id)
        flat = {f"{prefix}/{k}": v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        for name, per in (metrics.get("per_class") or {}).items():
            for k in ("iou", "dice"):
                if isinstance(per.get(k), (int, float)):
                    flat[f"{prefix}/{k}_{name}"] = per[k]
        for k, v in flat.items():
            client.log_metric(run_id, k, float(v))
        for f in files:
            if Path(f).exists():
                client.log_artifact(run_id, str(f), artifact_path=prefix)
        return run_id
    except Exception as e:  # a tracking problem must not fail the evaluation
        logging.getLogger(__name__).warning("evaluation not logged to MLflow run %s: %s", run_id, e)
        return None


__all__ = ["Tracker", "flatten_params", "log_evaluation", "plot_learning_curve", "tracking_uri_for", "write_history"]
