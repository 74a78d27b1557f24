"""The commands of a trained bundle's life after training: describe it (with the measured backends), export its graph,
register it in MLflow, serve it over HTTP."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from terraseg.cli.app import app, build, command_from, err, out, user_errors
from terraseg.config.inference import InferenceConfig, PredictConfig, ServeConfig


@app.command()
@user_errors
def info(
    bundle: Annotated[Path, typer.Argument(help="Model bundle (.terraseg).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the full description as JSON.")] = False,
    backends: Annotated[
        bool,
        typer.Option(
            "--backends",
            help="Measure (or read from the cache) how fast and how faithfully "
            "each backend runs this bundle here, and which one `auto` picks.",
        ),
    ] = False,
    remeasure: Annotated[bool, typer.Option("--remeasure", help="With --backends: measure again, ignoring the cache.")] = False,
    window: Annotated[
        Optional[int], typer.Option(help="With --backends: the window side measured (default: the bundle's prediction window).")
    ] = None,
) -> None:
    """Describe a bundle: architecture, input spec, classes, metrics, version (--backends: the measured backend table)."""
    from terraseg.bundle import Bundle

    if backends:
        _print_backends(Bundle.load(bundle), remeasure, window)
        return
    s = Bundle.load(bundle).summary()
    if as_json:
        print(json.dumps(s, indent=2))
        return
    m = s["model"]
    out.print(f"[bold]{s['name']}[/]  ({s['task']}, terraseg {s['terraseg_version']}, created {s['created']})")
    if s.get("baseline"):
        out.print(
            f"model: {m['arch']} (scikit-learn) on {len(s['baseline']['feature_names'])} features: {', '.join(s['baseline']['feature_names'])}"
        )
    else:
        out.print(f"model: {m['arch']} / {m['encoder']}  parameters: {s['parameters']:,}")
    i = s["input"]
    out.print(
        f"input: {i['bands']} bands {i['band_indexes'] or ''} dtype {i['dtype']} nodata {i['nodata']} "
        f"training window {i['train_window']} prediction window {i['predict_window']}"
        + (f" input size {i['input_size']}" if i.get("input_size") else "")
    )
    n = i["normalization"]
    out.print(f"normalisation: {n['method']} mean {[round(v, 3) for v in n['mean']]} std {[round(v, 3) for v in n['std']]}")
    out.print(
        "classes: "
        + ", ".join(f"{k}={c['name']} ({c['color']})" for k, c in enumerate(s["classes"]))
        + f"; ignore_index {s['ignore_index']}"
    )
    best = s["metrics"].get("validation", {})
    if best:
        from terraseg.evaluation.bootstrap import format_interval

        iv = [best["val/score_low"], best["val/score_high"]] if "val/score_low" in best else None
        head = (
            (
                f"val/score={format_interval(best['val/score'], iv)} (95% interval over {int(best.get('val/units', 0))} "
                "held-out units), "
            )
            if "val/score" in best
            else ""
        )
        skip = {"per_class", "val/score", "val/score_low", "val/score_high", "val/units"}
        out.print(
            "validation (best epoch): "
            + head
            + ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in best.items() if k not in skip)
        )
    if s.get("split", {}).get("pixels"):
        out.print(
            "hold-out (labelled pixels train/val): "
            + ", ".join(f"{k} {v['train']:,}/{v['val']:,}" for k, v in s["split"]["pixels"].items())
        )
    if s.get("drift"):
        d = s["drift"]
        rate = (
            "not measured"
            if d.get("false_alarm_rate") is None
            else f"{d['false_alarm_rate']:.1%} of {d['validation_windows']} validation windows"
        )
        out.print("drift thresholds: " + ", ".join(f"{k} {v:g}" for k, v in d["thresholds"].items()) + f"; false alarms {rate}")


@command_from(PredictConfig, skip=("ray.replicas", "ray.max_replicas"), nested=("inference", "ray"))
def predict(
    make,
    bundle: Annotated[Path, typer.Argument(help="Model bundle (.terraseg).")],
    inputs: Annotated[
        list[str],
        typer.Argument(
            help="Images (GeoTIFF of any size, band count, dtype; PNG; JPEG), folders, globs, "
            "a .txt list, or a STAC ItemCollection JSON (remote hrefs via /vsicurl/)."
        ),
    ],
    out_dir: Annotated[Path, typer.Option("--out", help="Output folder; one output per input with the same stem.")],
    window: Annotated[Optional[int], typer.Option(help=InferenceConfig.model_fields["window"].description)] = None,
) -> None:
    """Predict images of any size; GeoTIFF outputs keep the input's CRS, transform and nodata.

    Classification bundles write predictions.csv (file, predicted class, one probability per class) for
    image files or folders of images, or with --grid a class raster and window polygons per scene.
    """
    from terraseg.bundle import Bundle
    from terraseg.tasks import run_predict

    b = Bundle.load(bundle)
    cfg = make(inputs=list(inputs), out_dir=str(out_dir), inference={"window": window})
    res = run_predict(cfg, b)
    if res.skipped:
        out.print(f"{res.skipped} inputs already complete: skipped (--resume)")
    for warning in res.drift.values():
        err.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    for src, outs in res.outputs.items():
        out.print(f"{src} -> " + ", ".join(outs.values()))
    if res.table:
        out.print(f"{res.rows} images -> {res.table}")
    for _src, why in res.failures.items():
        err.print(f"[bold red]error:[/] {why}", highlight=False, soft_wrap=True)
    if res.failures:
        raise typer.Exit(1)


def _print_backends(b, remeasure: bool, window: Optional[int]) -> None:
    from terraseg.devices import cpu_model, inference_batch_size, resolve_device
    from terraseg.infer.runtime import choose_runtime
    from terraseg.tasks import task_for

    device = resolve_device("auto")
    win = window or task_for(b).input_size(b)
    batch = inference_batch_size(device, win, b.in_channels)
    rt = choose_runtime(b, device, window=win, batch_size=batch, remeasure=remeasure)
    where = cpu_model() if device == "cpu" else device
    if not rt.table:
        out.print(f"{where}: {rt.name} ({rt.reason}); nothing to rank")
        return
    table = Table(title=f"{b.manifest.name} on {where}: batches of {batch} windows of {win} px ({rt.reason})")
    table.add_column("candidate", no_wrap=True)
    for col in ("seconds per batch", "windows/s", "pixels changing class", "used by auto"):
        table.add_column(col)
    for name, r in sorted(rt.table.items(), key=lambda kv: kv[1]["seconds"] or float("inf")):
        sec = r["seconds"]
        table.add_row(
            name,
            "-" if sec is None else f"{sec:.4f}",
            "-" if not sec else f"{batch / sec:.1f}",
            "not checked (a faster one passed)"
            if r["disagreement"] is None
            else f"{r['disagreement']:.3%}" + ("" if r["correct"] else " (too many: left out)"),
            "yes" if name == rt.name else "",
        )
    out.print(table)


@app.command()
@user_errors
def export(
    bundle: Annotated[Path, typer.Argument(help="Model bundle (.terraseg).")],
    fmt: Annotated[str, typer.Option("--format", help="Export format: onnx.")] = "onnx",
    out_path: Annotated[
        Optional[Path], typer.Option("--out", help="Write the bundle with the graph here (default: in place).")
    ] = None,
    opset: Annotated[int, typer.Option(help="ONNX opset (>= 17).")] = 17,
    check: Annotated[
        Optional[list[Path]], typer.Option("--check", help="Real images whose windows check ONNX Runtime against PyTorch.")
    ] = None,
    window: Annotated[int, typer.Option(help="Check window size (multiple of 32).")] = 256,
    quantize: Annotated[
        str, typer.Option(help="none | int8: also add an INT8 graph (ONNX Runtime static quantization).")
    ] = "none",
    max_disagreement: Annotated[
        float, typer.Option(help="INT8: largest share of calibration pixels allowed to change class.")
    ] = 0.01,
) -> None:
    """Add an ONNX graph (dynamic batch/height/width) to a bundle, checked against PyTorch."""
    from terraseg.config.inference import ExportConfig
    from terraseg.prediction.export import export_onnx

    cfg = build(
        ExportConfig,
        format=fmt,
        out=str(out_path) if out_path else None,
        opset=opset,
        check_images=[str(c) for c in check or []],
        window=window,
        quantize=quantize,
        max_disagreement=max_disagreement,
    )
    r = export_onnx(bundle, cfg)
    out.print(
        f"{r.path}: ONNX opset {r.opset} added; ONNX Runtime vs PyTorch max abs logit difference {r.max_abs_diff:.2e} "
        f"on {r.windows_checked} windows of {r.checked_on}"
    )
    if cfg.quantize == "int8":
        from terraseg.prediction.quantize import quantize_int8

        q = quantize_int8(r.path, cfg.check_images, None, cfg.max_disagreement, cfg.window)
        out.print(
            f"{q.path}: INT8 graph added; classes differ from float32 on {q.disagreement:.3%} of the pixels of "
            f"{q.windows} calibration windows ({q.calibrated_on})"
        )


@command_from(ServeConfig, skip=("ray.num_workers",), nested=("inference", "ray"))
def serve(
    make,
    models: Annotated[list[str], typer.Argument(help="Bundles to serve: paths or MLflow URIs models:/name@alias.")],
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes (each loads the models).")] = 1,
    quiet: Annotated[bool, typer.Option("--quiet", help="No access log line per request (warnings and errors only).")] = False,
    api_key: Annotated[
        Optional[str], typer.Option(envvar="TERRASEG_API_KEY", help="Require header X-API-Key (off by default).")
    ] = None,
) -> None:
    """Serve bundles: REST API (/v1/segment, /v1/models, /healthz, /readyz) and the web page at /."""
    import uvicorn

    from terraseg.errors import ConfigError
    from terraseg.serve.app import create_app

    cfg = make(models=list(models), api_key=api_key)
    if workers > 1 and cfg.engine == "ray":
        raise ConfigError(
            "--workers and --engine ray: Ray Serve replicas scale the model; run one gateway process "
            "(or several gateways, each with --address of one cluster)."
        )
    level = "warning" if quiet else "info"  # info: uvicorn's start-up lines and one access-log line per request
    if workers > 1:
        os.environ["TERRASEG_SERVE"] = cfg.model_dump_json()
        out.print(f"serving {', '.join(models)} on http://{host}:{port} ({workers} workers; page at /, API docs at /docs)")
        uvicorn.run(
            "terraseg.serve.app:app_from_env",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=level,
            access_log=not quiet,
        )
    else:
        application = create_app(cfg)
        out.print(f"serving {', '.join(models)} on http://{host}:{port} (page at /, API docs at /docs)")
        uvicorn.run(application, host=host, port=port, log_level=level, access_log=not quiet)


@app.command()
@user_errors
def register(
    run_dir: Annotated[Path, typer.Argument(help="Training run folder (holds model.terraseg and mlflow.db).")],
    name: Annotated[Optional[str], typer.Option(help="Registered model name (default: the bundle's own name).")] = None,
    alias: Annotated[str, typer.Option(help="Alias to point at the new version.")] = "champion",
    tracking_uri: Annotated[
        Optional[str], typer.Option("--tracking-uri", help="MLflow URI (default: the run's sqlite store).")
    ] = None,
    run_id: Annotated[
        Optional[str], typer.Option("--run-id", help="MLflow run to register (default: the one the bundle records).")
    ] = None,
) -> None:
    """Register a tracked run's bundle in the MLflow model registry, so `serve models:/NAME@ALIAS` serves it."""
    from terraseg.tracking import register_bundle

    uri, version = register_bundle(run_dir, name, alias, tracking_uri, run_id)
    out.print(f"{uri} -> version {version}")
