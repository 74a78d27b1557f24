"""All of terraseg's MLflow: the stores, training runs, tuning studies, evaluations and the model registry.

* A store is an MLflow tracking URI; a run folder's default is the sqlite file ``mlflow.db`` in it
  (:func:`store_uri`), with artifacts in ``mlartifacts/`` beside it.
* A :class:`Tracker` creates a training run up front; networks hand Lightning an ``MLFlowLogger``
  bound to that run (per-epoch metrics), and every trainer logs its parameters, final metrics and
  artifacts (the bundle, plots) through the same methods, so runs of every kind look alike in the UI.
* A tuning study is a parent run (:func:`study_run`) its trials nest under (``mlflow.parentRunId``).
* ``evaluate`` logs to the run that trained the bundle (:func:`log_evaluation`).
* The registry: :func:`register_bundle` makes a run's bundle a model version with an alias, and
  :func:`resolve_model_uri` turns ``models:/name@alias`` back into a local bundle file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from terraseg.bundle import Bundle
from terraseg.config import ExperimentConfig
from terraseg.errors import BundleError


def store_uri(folder: str | Path) -> str:
    """A run or study folder's own MLflow store: ``sqlite:///<folder>/mlflow.db`` (absolute).

    Args:
        folder: the run or study folder.
    """
    return f"sqlite:///{(Path(folder) / 'mlflow.db').resolve()}"


def artifact_location(uri: str, folder: str | Path) -> str | None:
    """Where a new experiment of a folder's own store keeps artifacts (``<folder>/mlartifacts``); None for other stores.

    Args:
        uri: the tracking URI.
        folder: the run or study folder.
    """
    return (Path(folder) / "mlartifacts").resolve().as_uri() if uri.startswith("sqlite") else None


def experiment_id(client: Any, name: str, artifacts: str | None = None) -> str:
    """The id of experiment ``name`` in ``client``'s store, created when missing.

    Args:
        client: an ``mlflow.MlflowClient``.
        name: the experiment.
        artifacts: its artifact location when created.
    """
    exp = client.get_experiment_by_name(name)
    return exp.experiment_id if exp else client.create_experiment(name, artifact_location=artifacts)


def tracking_uri_for(cfg: ExperimentConfig, run_dir: Path, override: str | None = None) -> str:
    """The MLflow tracking URI of a run: ``override``, else the config's, else the run folder's store (:func:`store_uri`).

    Args:
        cfg: the run's config.
        run_dir: its folder.
        override: a URI given on the command line.
    """
    return override or cfg.tracking.tracking_uri or store_uri(run_dir)


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

    def __init__(
        self, cfg: ExperimentConfig, run_dir: Path, tracking_uri: str | None = None, parent_run_id: str | None = None
    ) -> None:
        import mlflow

        self.uri = tracking_uri_for(cfg, run_dir, tracking_uri)
        self.client = mlflow.MlflowClient(tracking_uri=self.uri)
        self.experiment = cfg.tracking.experiment or cfg.name
        exp_id = experiment_id(self.client, self.experiment, artifact_location(self.uri, run_dir))
        tags = {"mlflow.parentRunId": parent_run_id} if parent_run_id else None  # a nested run (tuning trial)
        self.run_id = self.client.create_run(exp_id, run_name=cfg.name, tags=tags).info.run_id

    def log_params(self, params: dict[str, Any]) -> None:
        """Log flat parameters (values as text, at most 500 characters)."""
        from mlflow.entities import Param

        items = [Param(k, str(v)[:500]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100])

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


def log_evaluation(
    bundle: Any, metrics: dict[str, Any], files: list[Path], tracking_uri: str | None = None, prefix: str = "test"
) -> str | None:
    """Log an evaluation to the MLflow run that trained ``bundle`` (``<prefix>/<metric>`` and the files).

    The run is the one the bundle records (``training.mlflow_run_id``); the store is ``tracking_uri``,
    else the ``mlflow.db`` beside the bundle (the run folder's default store). Nothing is logged, and
    no error raised, when the bundle records no run or no store is found: evaluation never fails on
    tracking.

    Args:
        bundle: the loaded bundle (``path``, ``manifest``).
        metrics: the evaluation's figures.
        files: artifacts (metrics.json, confusion_matrix.png).
        tracking_uri: the store.
        prefix: metric name prefix.

    Returns:
        The run id logged to, or None.
    """
    import logging

    run_id = (bundle.manifest.training or {}).get("mlflow_run_id")
    folder = Path(bundle.path).parent if getattr(bundle, "path", None) else None
    uri = tracking_uri or (store_uri(folder) if folder is not None and (folder / "mlflow.db").is_file() else None)
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
        for k, iv in (metrics.get("intervals") or {}).items():  # the 95% intervals (terraseg.evaluation.bootstrap)
            if isinstance(iv, list) and len(iv) == 2:
                flat[f"{prefix}/{k}_low"], flat[f"{prefix}/{k}_high"] = iv
        for k, v in flat.items():
            client.log_metric(run_id, k, float(v))
        for f in files:
            if Path(f).exists():
                client.log_artifact(run_id, str(f), artifact_path=prefix)
        return run_id
    except Exception as e:  # a tracking problem must not fail the evaluation
        logging.getLogger(__name__).warning("evaluation not logged to MLflow run %s: %s", run_id, e)
        return None


# -- tuning studies ----------------------------------------------------------------------------------
def study_run(cfg: ExperimentConfig, study_dir: Path, study: str) -> tuple[str, str] | None:
    """The study's MLflow run ``(run id, tracking URI)``, created once and reused when the search resumes."""
    if not cfg.tracking.enabled:
        return None
    import mlflow

    uri = cfg.tracking.tracking_uri or store_uri(study_dir)
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp_id = experiment_id(client, cfg.tracking.experiment or cfg.name, artifact_location(uri, study_dir))
    found = client.search_runs([exp_id], filter_string=f"tags.terraseg_study = '{study}'", max_results=1)
    if found:
        return found[0].info.run_id, uri
    run = client.create_run(exp_id, run_name=f"{study} (tune)", tags={"terraseg_study": study})
    for path, p in cfg.tune.params.items():
        client.log_param(run.info.run_id, f"space.{path}", json.dumps(p.model_dump(exclude_none=True))[:500])
    return run.info.run_id, uri


def finish_study_run(parent: tuple[str, str], best_value, best_params: dict, n: int) -> None:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=parent[1])
    if best_value is not None:
        client.log_metric(parent[0], "best/val_score", float(best_value), step=n)
        for k, v in best_params.items():
            client.set_tag(parent[0], f"best.{k}", str(v))


# -- the model registry ------------------------------------------------------------------------------
def resolve_model_uri(ref: str, tracking_uri: str | None = None) -> Path:
    """A local bundle path for ``ref`` (a path, or ``models:/name/version|alias`` from an MLflow registry).

    Args:
        ref: bundle path, ``models:/name/version`` or ``models:/name@alias``.
        tracking_uri: the MLflow tracking/registry URI (None: MLflow's default).

    Returns:
        Path of a local ``.terraseg`` file (downloaded from the registry when needed).

    Raises:
        BundleError: the registry has no such model/version/alias, or its artifact holds no bundle.
    """
    if not ref.startswith("models:/"):
        return Path(ref)
    import mlflow
    from mlflow.exceptions import MlflowException

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
    client = mlflow.MlflowClient()
    body = ref[len("models:/") :]
    name, _, sel = body.replace("@", "/").partition("/")
    try:
        mv = client.get_model_version(name, sel) if sel.isdigit() else client.get_model_version_by_alias(name, sel or "champion")
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=mv.source))
    except MlflowException as e:
        raise BundleError(f"{ref}: not found in the MLflow registry ({str(e).splitlines()[0]}).") from None
    if local.is_file():
        return local
    found = sorted(local.rglob("*.terraseg"))
    if not found:
        raise BundleError(f"{ref}: the registered artifact holds no .terraseg bundle.")
    return found[0]


def register_bundle(
    run_dir: str | Path,
    name: str | None = None,
    alias: str = "champion",
    tracking_uri: str | None = None,
    run_id: str | None = None,
) -> tuple[str, int]:
    """Register a training run's bundle as a new version of MLflow model ``name`` and set ``alias``.

    The run is ``run_id``, else the one recorded in ``<run_dir>/model.terraseg`` at training time
    (never simply the newest run of a shared store). The bundle file is uploaded to that run as it
    is now (with any graph ``terraseg export`` added since training) before the version is created.

    When the recorded run is not in ``tracking_uri``'s store (a model trained against the run folder's
    sqlite store, registered in a team's tracking server, as ``compose.yaml`` does), the run is carried
    over: a new run in experiment ``<bundle name>`` gets the bundle, its validation metrics, a few
    parameters and the tag ``terraseg.source_run_id``, and that run is registered. A ``run_id`` given
    explicitly must exist.

    Args:
        run_dir: the run folder (holds ``model.terraseg`` and, by default, ``mlflow.db``).
        name: registered model name (default: the bundle's own name).
        alias: alias pointing at the new version.
        tracking_uri: MLflow tracking/registry URI (default: the run folder's sqlite store).
        run_id: the MLflow run to register (default: the bundle's).

    Returns:
        ``(models:/name@alias, version)``.

    Raises:
        BundleError: no bundle in ``run_dir``, a bundle without a recorded run and no ``run_id``, or a
            run the store does not hold.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    run_dir = Path(run_dir)
    bundle_file = run_dir / "model.terraseg"
    b = Bundle.load(bundle_file)
    name = name or b.manifest.name
    explicit = run_id is not None
    run_id = run_id or b.manifest.training.get("mlflow_run_id")
    uri = tracking_uri or store_uri(run_dir)
    if uri.startswith("sqlite:///"):  # a store that cannot be written: refused now, not after MLflow's minutes of retries
        from urllib.parse import unquote

        from terraseg.io.atomic import check_writable

        check_writable(Path(unquote(uri.removeprefix("sqlite:///"))))
    if not run_id:
        raise BundleError(f"{bundle_file}: the bundle records no MLflow run (trained with tracking off?); give --run-id.")
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = mlflow.MlflowClient()
    try:
        try:
            client.get_run(run_id)
        except MlflowException as e:
            if explicit or e.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            run_id = _carry_over(client, b, run_id)
        client.log_artifact(run_id, str(bundle_file))  # the bundle as it is now
        try:
            client.create_registered_model(name)
        except MlflowException:  # already registered: add a version
            pass
        mv = client.create_model_version(name, f"runs:/{run_id}/model.terraseg", run_id=run_id)
        client.set_registered_model_alias(name, alias, mv.version)
    except MlflowException as e:
        raise BundleError(f"{run_dir}: cannot register run {run_id} of {uri} ({str(e).splitlines()[0]}).") from None
    return f"models:/{name}@{alias}", int(mv.version)


def _carry_over(client: Any, b: Bundle, source_run_id: str) -> str:
    """Create a run holding ``b``'s provenance in ``client``'s store (which lacks ``source_run_id``); its id."""
    exp_id = experiment_id(client, b.manifest.name)
    run = client.create_run(
        exp_id,
        run_name=f"{b.manifest.name} (registered)",
        tags={"terraseg.source_run_id": source_run_id, "terraseg.task": b.manifest.task},
    )
    rid = run.info.run_id
    model = b.manifest.model
    params = {
        "arch": model.arch,
        "encoder": getattr(model, "encoder", None),
        "bands": b.manifest.input.bands,
        "classes": len(b.manifest.classes),
        "epochs": b.manifest.training.get("epochs"),
        "precision": b.manifest.training.get("precision"),
    }
    for k, v in params.items():
        if v is not None:
            client.log_param(rid, k, v)
    for k, v in (b.manifest.metrics.get("validation") or {}).items():
        if isinstance(v, (int, float)):
            client.log_metric(rid, k, float(v))
    client.set_terminated(rid)
    return rid


__all__ = [
    "Tracker",
    "artifact_location",
    "experiment_id",
    "finish_study_run",
    "flatten_params",
    "log_evaluation",
    "register_bundle",
    "resolve_model_uri",
    "store_uri",
    "study_run",
    "tracking_uri_for",
]
