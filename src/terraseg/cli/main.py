"""``terraseg``: thin Typer commands; each parses options and calls one API function.

User errors (:class:`terraseg.errors.TerrasegError`) are caught here once and printed as one line
on stderr with exit code 1, never as a traceback.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional

import typer

from terraseg.cli.app import (
    SetOpt,
    app,
    command_from,
    err,
    out,
    quiet_lightning,
    user_errors,
    version_callback,
)
from terraseg.config import CrossValidationOptions, TuneRunOptions
from terraseg.config.inference import EvaluateConfig

LayerOpt = Annotated[
    Optional[str], typer.Option(help="The layer of the labels in a multi-layer vector file (default: the first).")
]
AoiOpt = Annotated[
    Optional[str],
    typer.Option(
        help="Polygons of the labelled extent: pixels outside them are unknown "
        "(ignore_index) for training, hold-out and scores, not background."
    ),
]


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=version_callback, is_eager=True, help="Print the version and exit.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show debug logging.")] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bars (they are only drawn on a terminal anyway).")
    ] = False,
) -> None:
    """terraseg: imagery + labels -> trained, evaluated model -> georeferenced predictions."""
    from terraseg import progress

    progress.enable(not quiet and sys.stderr.isatty())
    progress.show_lines(not quiet and not sys.stderr.isatty())  # a file or pipe: epoch lines as they happen
    from terraseg.io.raster import quiet_gdal

    quiet_gdal(not verbose)  # GDAL's own ERROR/Warning lines only with --verbose: terraseg says what failed in one line
    if verbose:
        logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s: %(message)s")


@app.command()
@user_errors
def train(
    config: Annotated[
        Optional[Path],
        typer.Argument(
            help="Experiment config (YAML), validated against terraseg.config.ExperimentConfig; omitted: planned from --data."
        ),
    ] = None,
    set_: SetOpt = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run from its last checkpoint.")] = False,
    tracking_uri: Annotated[
        Optional[str], typer.Option("--tracking-uri", help="MLflow tracking URI (default: sqlite file in the run folder).")
    ] = None,
    data: Annotated[
        Optional[list[str]],
        typer.Option(
            "--data",
            help="Without a config: rasters (files, folders, globs, .txt "
            "lists) or one folder of image/mask pairs or class folders (repeatable).",
        ),
    ] = None,
    labels: Annotated[
        Optional[str], typer.Option(help="Without a config: polygons for all rasters, a mask raster, or a folder of masks.")
    ] = None,
    attribute: Annotated[
        Optional[str], typer.Option(help="Without a config: the vector attribute holding each polygon's class.")
    ] = None,
    layer: LayerOpt = None,
    aoi: AoiOpt = None,
    minutes: Annotated[float, typer.Option(help="Without a config: the wall budget of the planned run.")] = 10.0,
) -> None:
    """Train a model from a config (or from data alone: planned, see `terraseg plan`) and write <run folder>/model.terraseg."""
    import time

    started = time.monotonic()  # train.max_minutes counts from here: library imports and planning included
    from terraseg.config import load_config, with_aoi
    from terraseg.errors import ConfigError
    from terraseg.training.run import train as run_train

    quiet_lightning()
    if config is not None and (
        given := [f for f, v in (("--data", data), ("--labels", labels), ("--attribute", attribute), ("--layer", layer)) if v]
    ):
        raise ConfigError(
            f"{', '.join(given)} plan a run from data; {config} already names its data: set them in its sources "
            "or leave the config out."
        )
    if config is None:
        if not data:
            raise ConfigError("give a config YAML, or --data (and --labels) to plan one from the data.")
        from terraseg.plan import plan_run

        res_plan = plan_run(list(data), labels, attribute, minutes, out=None, aoi=aoi, layer=layer)
        config = Path(res_plan.plan.raw.get("output_dir", f"runs/{res_plan.plan.raw['name']}")) / "plan.yaml"
        config.parent.mkdir(parents=True, exist_ok=True)
        from terraseg.plan import write_plan

        write_plan(res_plan.plan, res_plan.fingerprint, config)
        out.print(f"plan: {config} (edit and rerun with `terraseg train {config}`)")
        for note in res_plan.fingerprint.notes:
            out.print(f"plan note: {note}")
    cfg = with_aoi(load_config(config, set_ or []), aoi if not data else None)  # a planned config holds the extent already
    res = run_train(cfg, resume=resume, tracking_uri=tracking_uri, started=started)
    if res.rank:  # another DDP rank: rank 0 reports
        return
    best = res.best
    out.print(f"bundle: {res.bundle_path}")
    if cfg.pixel_model or res.arch:
        out.print(f"train time: {res.train_seconds:.1f} s (sampling + fit)  fit: {res.chips_per_second:,.0f} training pixels/s")
        out.print(f"feature importance: {res.run_dir / 'feature_importance.csv'} (.png)")
    else:
        out.print(
            f"epochs: {res.epochs}  train time: {res.train_seconds:.0f} s  throughput: {res.chips_per_second:.1f} chips/s"
            f"  precision: {cfg.training_precision()}"
            + (f"  validation: {res.validation_share:.1%} of the time" if res.validation_share is not None else "")
        )
    if res.memory:
        m = res.memory
        out.print(
            f"memory: peak RSS {m['peak_rss_mb']:,.0f} MiB; decoded-scene cache {m['peak_mb']:,.0f} of {m['limit_mb']:,.0f} MiB "
            f"(hits {m['hits']:,}, misses {m['misses']:,})"
            + (
                f"; spilled {m['spill_regions']:,} regions ({m['spill_mb']:,.0f} MiB) to local disk, {m['spill_reads']:,} windows "
                "read back"
                if m.get("spill_regions")
                else ""
            )
            + " (main process; each loader worker holds its share)"
        )
    if res.wall_seconds is not None and cfg.train.max_minutes:
        budget = 60 * cfg.train.max_minutes
        over = res.wall_seconds > budget * 1.05
        line = f"wall time: {res.wall_seconds:.0f} s of a {budget:.0f} s budget (train.max_minutes {cfg.train.max_minutes:g})"
        (err if over else out).print(("warning: " if over else "") + line + (" - over budget" if over else ""))
    if res.stop_reason:
        out.print(f"stopped by {res.stop_reason}")
        if res.budget_skipped:
            err.print(
                f"warning: left out to stay within the budget: {', '.join(res.budget_skipped)}; raise train.max_minutes to run them."
            )
    _print_split(res.split)
    if best:
        from terraseg.evaluation.bootstrap import format_interval, width_warning
        from terraseg.tasks import task_named

        low, high = best.get("val/score_low"), best.get("val/score_high")
        interval = [low, high] if low is not None and high is not None else None
        units = int(best.get("val/units", 0))
        skip = {"val/score", "val/score_low", "val/score_high", "val/units", "val/pixels"}
        pixelwise = task_named(cfg.task).dense  # a classifier's validation is images, without block units
        head = (
            (
                f"val/score={format_interval(best['val/score'], interval)} (95% interval over {units} held-out units, "
                f"{best.get('val/pixels', 0):,.0f} labelled pixels), "
            )
            if "val/score" in best and pixelwise
            else ""
        )
        if res.kept:
            out.print(res.kept)
        label = "validation (the last epoch's network)" if res.kept_epoch == "last" else "best validation"
        out.print(
            f"{label}: " + head + ", ".join(f"{k}={v:.4f}" for k, v in best.items() if isinstance(v, float) and k not in skip)
        )
        if "val/score" in best and pixelwise and (wide := width_warning(interval, units, "validation")):
            err.print(f"warning: {wide}.")
    for line in res.candidates:
        out.print(line, highlight=False)
    if res.tracking_uri:
        out.print(f"mlflow: {res.tracking_uri}")


def _print_split(record: dict | None) -> None:
    """The hold-out in a few lines: what was held out, labelled pixels per class on each side, and its warnings."""
    if not record or "pixels" not in record:
        return
    units = record["units"]
    blocks = sum(u["region"] is not None for u in units)
    what = ", ".join(
        x
        for x in (
            f"{blocks} blocks of {record['block']} px (buffer {record['buffer']} px)" if blocks else "",
            f"{len(units) - blocks} images" if len(units) > blocks else "",
        )
        if x
    )
    out.print(
        f"hold-out: {what or 'nothing'}; labelled pixels train/val: "
        + ", ".join(f"{k} {v['train']:,}/{v['val']:,}" for k, v in record["pixels"].items())
    )
    for w in record.get("warnings", []):
        err.print(f"warning: {w}")


@command_from(EvaluateConfig, nested=("inference",))
def evaluate(
    make,
    bundle: Annotated[Path, typer.Argument(help="Model bundle (.terraseg).")],
    data: Annotated[Optional[Path], typer.Argument(help=EvaluateConfig.model_fields["data"].description)] = None,
    out_dir: Annotated[
        Optional[Path],
        typer.Option(
            "--out", help="Output folder for metrics.json, confusion_matrix.png, overlays/ (default: <bundle folder>/<split>)."
        ),
    ] = None,
    split: Annotated[
        str,
        typer.Option(
            help="With a config (or none): 'test' (data.test) or 'val' (the exact validation split "
            "the bundle records); with a class folder, its split subfolder."
        ),
    ] = "test",
    set_: SetOpt = None,
) -> None:
    """Evaluate a bundle on labelled data: per-class IoU, Dice/F1, precision, recall, mIoU (accuracy and F1 for classifiers)."""
    from terraseg.bundle import Bundle
    from terraseg.errors import ConfigError
    from terraseg.formats import is_config
    from terraseg.tasks import run_evaluate, task_for

    b = Bundle.load(bundle)
    if split not in ("test", "val"):
        raise ConfigError(f"--split {split!r}: use 'test' or 'val'.")
    cfg = make(
        out_dir=str(out_dir or Path(bundle).parent / split),
        data=str(data) if data else None,
        split=split,
        overrides=list(set_ or []),
    )
    m = run_evaluate(cfg, b, say=lambda line: err.print(line, highlight=False, soft_wrap=True))
    is_split = data is None or is_config(data)
    what = f"its {split} split" if is_split or data is None else data.name
    task_for(b).report(b, m, what, split if is_split else "test", out, err)
    out.print(f"metrics: {Path(cfg.out_dir) / 'metrics.json'}")
    if m.get("mlflow_run_id"):
        out.print(f"logged to MLflow run {m['mlflow_run_id']} ({cfg.split}/...)")


@app.command()
@user_errors
def compare(
    bundle_a: Annotated[Path, typer.Argument(help="First bundle (A).")],
    bundle_b: Annotated[Path, typer.Argument(help="Second bundle (B), with the same classes and bands.")],
    data: Annotated[
        Optional[Path],
        typer.Argument(help="An image (with --labels), an image/mask folder, or a config YAML; omitted: A's config."),
    ] = None,
    labels: Annotated[Optional[Path], typer.Option("--labels", help="Labels of an image: vector file or mask raster.")] = None,
    split: Annotated[
        str, typer.Option(help="With a config (or none): 'test' (data.test) or 'val' (A's recorded validation split).")
    ] = "test",
    attribute: Annotated[Optional[str], typer.Option(help="Vector attribute holding the class of each feature.")] = None,
    mapping: Annotated[Optional[str], typer.Option(help="Attribute value -> class id: 'a=1,b=2' or a JSON object.")] = None,
    burn_value: Annotated[int, typer.Option(help="Class id burnt for vector features without --attribute.")] = 1,
    mask_nodata: Annotated[
        Optional[int], typer.Option(help="Mask-raster value meaning unknown (default: the mask's nodata).")
    ] = None,
    layer: Annotated[Optional[str], typer.Option(help=EvaluateConfig.model_fields["layer"].description)] = None,
    aoi: Annotated[Optional[str], typer.Option(help=EvaluateConfig.model_fields["aoi"].description)] = None,
    set_: SetOpt = None,
) -> None:
    """Score two bundles on the same data: each score with its 95% interval, and the paired difference A - B with its own."""
    from terraseg.api import compare as compare_bundles
    from terraseg.errors import ConfigError
    from terraseg.evaluation.bootstrap import format_interval

    if split not in ("test", "val"):
        raise ConfigError(f"--split {split!r}: use 'test' or 'val'.")
    r = compare_bundles(
        bundle_a,
        bundle_b,
        data,
        split,
        lambda line: err.print(line, highlight=False, soft_wrap=True),
        labels=str(labels) if labels else None,
        burn_value=burn_value,
        attribute=attribute,
        mapping=mapping,
        mask_nodata=mask_nodata,
        layer=layer,
        aoi=aoi,
        overrides=list(set_ or []),
    )
    out.print(f"score: {r['score']}; 95% intervals over {r['units']} units ({r['unit']})")
    for key, name in (("a", "A"), ("b", "B")):
        side = r[key]
        out.print(f"{name} {side['bundle']}: {format_interval(side['score'], side['interval'])} ({side['pixels']:,} pixels)")
    d = r["difference"]
    verdict = "separates the two" if d["separates"] else "holds 0: this data cannot tell the two apart"
    out.print(f"A - B: {format_interval(d['difference'], d['interval'])} (paired bootstrap; the interval {verdict})")


@command_from(CrossValidationOptions)
def cv(
    make: Callable[..., CrossValidationOptions],
    config: Annotated[Path, typer.Argument(help="Segmentation experiment config (YAML).")],
    out_dir: Annotated[
        Optional[Path], typer.Option("--out", help="Folder for the fold runs and cv.json (default <run folder>/cv).")
    ] = None,
    aoi: AoiOpt = None,
    set_: SetOpt = None,
) -> None:
    """K-fold cross-validation with spatial blocks (and a random split beside it): mean and spread of every metric."""
    from terraseg.config import load_config, with_aoi
    from terraseg.training.cv import cross_validate

    opts = make()
    quiet_lightning()
    res = cross_validate(
        with_aoi(load_config(config, set_ or []), aoi), opts.folds, opts.block_size, opts.buffer, opts.random, out_dir
    )
    for method, summary in res.summary.items():
        out.print(f"{method:8s} " + "  ".join(f"{m} {v['mean']:.4f} +/- {v['std']:.4f}" for m, v in summary.items()))
    if res.gap:
        out.print("random - spatial: " + "  ".join(f"{m} {v:+.4f}" for m, v in res.gap.items()))
    out.print(f"folds: {res.path}")


@command_from(TuneRunOptions)
def tune(
    make: Callable[..., TuneRunOptions],
    config: Annotated[Path, typer.Argument(help="Experiment config (YAML) with a `tune:` section (tune.params: path -> range).")],
    set_: SetOpt = None,
) -> None:
    """Search hyper-parameters with Optuna (TPE, pruning after each validation epoch); resumable; best.yaml + best.terraseg."""
    from terraseg.training.tune import tune as run

    opts = make()
    quiet_lightning()
    res = run(config, opts.trials, opts.timeout, opts.storage, opts.n_jobs, set_ or [])
    out.print(f"study: {res.storage} ({res.trials} trials: {res.finished} finished, {res.pruned} pruned, {res.failed} failed)")
    if res.best_value is not None:
        out.print(f"best val/score {res.best_value:.4f} with {res.best_params}")
        out.print(f"best config: {res.best_config}  bundle: {res.best_bundle}")


from terraseg.cli import deploy as _deploy  # noqa: E402,F401  (registers the bundle commands after these)
from terraseg.cli import prep as _prep  # noqa: E402,F401  (registers the data-preparation commands after these)

if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())


config_app = typer.Typer(
    help="Config help: the JSON Schema, and a resolved config with every field described.", no_args_is_help=True
)
app.add_typer(config_app, name="config")


@config_app.command("schema")
@user_errors
def config_schema(
    out_file: Annotated[
        Optional[Path], typer.Option("--out", help="Write the schema to this file instead of printing it.")
    ] = None,
) -> None:
    """Print the JSON Schema of an experiment config (for editors: `# yaml-language-server: $schema=...`)."""
    from terraseg.config.describe import schema_text
    from terraseg.io.atomic import write_text_atomic

    text = schema_text()
    if out_file is None:
        sys.stdout.write(text)
    else:
        write_text_atomic(out_file, text)
        out.print(f"schema: {out_file}")


@config_app.command("show")
@user_errors
def config_show(
    config: Annotated[Path, typer.Argument(help="Experiment config (YAML).")],
    set_: SetOpt = None,
) -> None:
    """Print a config resolved: overrides applied, defaults filled in, each field with its description."""
    from terraseg.config import load_config
    from terraseg.config.describe import describe

    sys.stdout.write(describe(load_config(config, set_ or [])))


@app.command()
@user_errors
def plan(
    inputs: Annotated[
        list[str],
        typer.Argument(
            help="Rasters (files, folders, globs, .txt lists), or one folder of image/mask pairs or of class folders."
        ),
    ],
    labels: Annotated[
        Optional[str],
        typer.Option(
            help="Polygons for all rasters (shp/zip/geojson/gpkg), a mask raster, or a "
            "folder of mask rasters named after the rasters."
        ),
    ] = None,
    attribute: Annotated[Optional[str], typer.Option(help="The vector attribute holding each polygon's class.")] = None,
    layer: LayerOpt = None,
    aoi: AoiOpt = None,
    minutes: Annotated[float, typer.Option(help="Wall budget of the training run, in minutes.")] = 10.0,
    name: Annotated[Optional[str], typer.Option(help="Run name (default: the first input's stem).")] = None,
    out_file: Annotated[Path, typer.Option("--out", help="Where to write the planned config.")] = Path("plan.yaml"),
    measure: Annotated[
        bool, typer.Option("--measure/--no-measure", help="Time the planned network's training step here to size the epochs.")
    ] = True,
) -> None:
    """Plan a training config from the data alone: fingerprint, documented rules, plan.yaml with a reason per choice."""
    from terraseg.plan import plan_run

    res = plan_run(list(inputs), labels, attribute, minutes, name, out_file, measure, aoi, layer)
    fp = res.fingerprint
    out.print(
        f"fingerprint: {fp.task}, {fp.images} {'images' if fp.images != 1 else 'image'} ({fp.label_form}), "
        f"{fp.bands} bands {fp.dtype}, median side {fp.sizes[0]} px"
        + (f", {fp.resolution:g} CRS units/px" if fp.resolution else ", not georeferenced")
    )
    for n in fp.notes:
        err.print(f"note: {n}")
    for path in ("data.window", "data.normalization.method", "model.encoder", "data.samples_per_epoch"):
        node: object = res.plan.raw
        for k in path.split("."):
            node = node.get(k) if isinstance(node, dict) else None
        reason = res.plan.reasons.get(path) or res.plan.reasons.get(path.rsplit(".", 1)[0], "")
        out.print(f"{path} = {node}: {reason}")
    out.print(f"plan: {res.path}  (train it: terraseg train {res.path})")
