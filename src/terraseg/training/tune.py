"""Hyper-parameter search with Optuna over a config's ``tune:`` section (``terraseg tune``).

Each trial samples the declared parameters (TPE sampler, Bergstra et al., "Algorithms for
Hyper-Parameter Optimization", NeurIPS 2011), trains the config with them into its own folder, and
scores it by the validation score the training loop reports (``val/score``: positive-class IoU,
mIoU, or accuracy). After every validation epoch the score is reported to Optuna and the pruner
(median, or Hyperband: Li et al., JMLR 2018) may stop the trial. The study lives in a database
(sqlite under the run folder by default), so an interrupted search resumes where it stopped. With
tracking on, the study is one MLflow run and every trial a nested run under it (params, curves,
score). The best trial's config is written as ``best.yaml`` beside a copy of its bundle.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from terraseg.config import ExperimentConfig, TuneParam, apply_overrides
from terraseg.errors import ConfigError
from terraseg.io.atomic import output_folder
from terraseg.tracking import finish_study_run, study_run

log = logging.getLogger(__name__)


@dataclass
class TuneResult:
    """Outcome of a search.

    Attributes:
        study_dir: folder of the study (trials, database, best files).
        storage: Optuna storage URL.
        trials: trials in the study (all sessions).
        finished: counts by state.
        pruned: counts by state.
        failed: counts by state.
        best_value: best validation score.
        best_params: its sampled values.
        best_config: written files.
        best_bundle: written files.
    """

    study_dir: Path
    storage: str
    trials: int
    finished: int
    pruned: int
    failed: int
    best_value: float | None
    best_params: dict[str, Any]
    best_config: Path | None
    best_bundle: Path | None


def check_space(cfg: ExperimentConfig, raw: dict[str, Any]) -> None:
    """Refuse a search space that cannot run, before any trial: an empty one, or a path that is not a config field.

    Each parameter is set to a value from its range on a copy of the raw config, which must then validate.

    Args:
        cfg: the validated base config (``tune.params``).
        raw: the same config as a mapping, before validation.

    Raises:
        ConfigError: one sentence naming the parameter and the problem.
    """
    if not cfg.tune.params:
        raise ConfigError(
            f"{cfg.name}: the config has no `tune.params` to search; add e.g. `optimizer.lr: "
            "{type: float, low: 1e-4, high: 1e-2, log: true}`."
        )
    fields = cfg.model_dump(mode="json")  # the validated config: explicit fields and defaults
    for path, p in cfg.tune.params.items():
        trial_raw = copy.deepcopy(raw)
        value = (p.choices or [None])[0] if p.type == "categorical" else (int(p.low or 0) if p.type == "int" else p.low)
        try:
            apply_overrides(trial_raw, [f"{path}={json.dumps(value)}"])
            ExperimentConfig.model_validate(trial_raw)
        except Exception as e:
            from pydantic import ValidationError

            if isinstance(e, ValidationError):  # say which rule the value breaks, not just that one did
                msg = "; ".join(f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in e.errors()[:2])
            else:
                msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ConfigError(f"tune.params.{path}: not a usable config field ({msg}).") from None
        if not _exists(fields, path):
            raise ConfigError(f"tune.params.{path}: no such field in the config (set a default for it first, or check the path).")


def _exists(fields: dict[str, Any], path: str) -> bool:
    """Whether ``path`` names a field of the validated config dump ``fields`` (explicit in the YAML, or a default)."""
    node: Any = fields
    for k in path.split("."):
        if isinstance(node, list) and k.isdigit() and int(k) < len(node):
            node = node[int(k)]
        elif isinstance(node, dict) and k in node:
            node = node[k]
        else:
            return False
    return True


def _suggest(trial, path: str, p: TuneParam) -> Any:
    if p.type == "categorical":
        return trial.suggest_categorical(path, p.choices)
    assert p.low is not None and p.high is not None  # TuneParam checks the range of numeric parameters
    if p.type == "int":
        return trial.suggest_int(path, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
    return trial.suggest_float(path, p.low, p.high, step=p.step, log=p.log)


def _pruning_callback(trial):
    """A Lightning callback reporting ``val/score`` after each validation epoch; raises TrialPruned when told."""
    import lightning as L
    import optuna

    class _Prune(L.Callback):
        def on_validation_end(self, trainer, pl_module) -> None:
            if trainer.sanity_checking:
                return
            score = trainer.callback_metrics.get("val/score")
            if score is None:
                return
            trial.report(float(score), step=trainer.current_epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {trainer.current_epoch + 1} (val/score {float(score):.4f})")

    return _Prune()


def tune(
    config: str | Path,
    trials: int,
    timeout_minutes: float | None = None,
    storage: str | None = None,
    n_jobs: int = 1,
    overrides: list[str] | None = None,
    study_name: str | None = None,
) -> TuneResult:
    """Run (or resume) a hyper-parameter search over the config's ``tune.params``.

    Args:
        config: experiment config YAML with a ``tune:`` section.
        trials: trials to run in this session.
        timeout_minutes: stop starting trials after this long.
        storage: Optuna storage URL (default ``sqlite:///<output_dir>/tune/optuna.db``).
        n_jobs: trials in parallel (threads).
        overrides: ``key=value`` overrides applied before the search (as ``train --set``).
        study_name: default the config's name.

    Returns:
        :class:`TuneResult`.

    Raises:
        ConfigError: no search space, an unknown parameter path, an empty range (before any trial).
    """
    import optuna

    from terraseg.config import load_config
    from terraseg.training.run import train

    base = load_config(config, overrides)
    raw = yaml.safe_load(Path(config).read_text(encoding="utf-8")) or {}
    apply_overrides(raw, overrides or [])
    check_space(base, raw)
    study_dir = Path(base.output_dir.replace("${name}", base.name)) / "tune"
    output_folder(study_dir)
    storage = storage or f"sqlite:///{(study_dir / 'optuna.db').resolve()}"
    t = base.tune
    pruner = {
        "median": optuna.pruners.MedianPruner(n_startup_trials=t.startup_trials, n_warmup_steps=1),
        "hyperband": optuna.pruners.HyperbandPruner(),
        "none": optuna.pruners.NopPruner(),
    }[t.pruner]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=study_name or base.name,
        storage=storage,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=t.seed),
        pruner=pruner,
        load_if_exists=True,
    )
    parent = study_run(base, study_dir, study.study_name)
    if t.include_config and not study.trials and (start := _config_point(base)) is not None:
        study.enqueue_trial(start)  # trial 0: the config as it is, the baseline every trial is compared with

    def objective(trial) -> float:
        values = {path: _suggest(trial, path, p) for path, p in t.params.items()}
        trial_raw = copy.deepcopy(raw)
        run_dir = study_dir / f"trial-{trial.number:03d}"
        apply_overrides(
            trial_raw,
            [f"{k}={json.dumps(v)}" for k, v in values.items()]
            + [f"output_dir={json.dumps(str(run_dir))}", f"name={json.dumps(f'{base.name}-trial-{trial.number}')}"],
        )
        if base.tracking.enabled and not base.tracking.tracking_uri:  # trials share the study's store, nested under it
            trial_raw.setdefault("tracking", {})["tracking_uri"] = parent[1] if parent else None
            trial_raw["tracking"]["experiment"] = base.tracking.experiment or base.name
        cfg = ExperimentConfig.model_validate(trial_raw)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(trial_raw, sort_keys=False))
        res = train(cfg, callbacks=[_pruning_callback(trial)], parent_run_id=parent[0] if parent else None)
        score = (res.best or {}).get("val/score")
        if score is None:
            raise optuna.TrialPruned("no validation score (no validation data?)")
        trial.set_user_attr("bundle", str(res.bundle_path))
        return float(score)

    study.optimize(
        objective,
        n_trials=trials,
        timeout=timeout_minutes * 60 if timeout_minutes else None,
        n_jobs=n_jobs,
        catch=(RuntimeError, ValueError),
        gc_after_trial=True,
    )
    return _result(study, study_dir, storage, parent)


def _config_point(base: ExperimentConfig) -> dict[str, Any] | None:
    """The config's own values of the searched parameters, when every one lies inside its range (else None)."""
    current = base.model_dump(mode="json")
    start = {}
    for path, p in base.tune.params.items():
        node: Any = current
        for k in path.split("."):
            node = node[int(k)] if isinstance(node, list) else node[k]
        if node in (p.choices or []) if p.type == "categorical" else (p.low <= node <= p.high):
            start[path] = node
    return start if len(start) == len(base.tune.params) else None


def _result(study: Any, study_dir: Path, storage: str, parent: tuple[str, str] | None) -> TuneResult:
    """The study's outcome: counts by state, and the best trial's config and bundle copied to ``best.*``."""
    import optuna

    states = [tr.state for tr in study.trials]
    S = optuna.trial.TrialState
    best_config = best_bundle = None
    best_value, best_params = None, {}
    if any(tr.state == S.COMPLETE for tr in study.trials):
        best = study.best_trial
        best_value, best_params = best.value, best.params
        src_dir = study_dir / f"trial-{best.number:03d}"
        best_config = study_dir / "best.yaml"
        shutil.copy(src_dir / "config.yaml", best_config)
        bundle = Path(best.user_attrs.get("bundle", src_dir / "model.terraseg"))
        if bundle.is_file():
            best_bundle = study_dir / "best.terraseg"
            shutil.copy(bundle, best_bundle)
    if parent:
        finish_study_run(parent, best_value, best_params, len(study.trials))
    return TuneResult(
        study_dir,
        storage,
        len(study.trials),
        states.count(S.COMPLETE),
        states.count(S.PRUNED),
        states.count(S.FAIL),
        best_value,
        best_params,
        best_config,
        best_bundle,
    )


__all__ = ["TuneResult", "check_space", "tune"]
