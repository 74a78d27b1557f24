"""Every ``predict`` and ``evaluate`` option against a segmentation and a classification bundle: for each pair, a
correct output or a one-line refusal (exit 1, no traceback, nothing written). The expectations come from the one
table of :mod:`terraseg.tasks.options`, so the table, the refusals and this test cannot drift apart."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from typer.testing import CliRunner

from conftest import make_bundle, make_geotiff, write_mask_tif
from terraseg.cli.main import app
from terraseg.tasks.options import EVALUATE, PREDICT, WAYS, Refused, flag

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def _classifier(path: Path, classes=("dark", "bright")) -> Path:
    import torch

    from terraseg.bundle import Bundle, BundleManifest, InputSpec
    from terraseg.config import ClassSpec, ModelConfig
    from terraseg.data.normalize import NormStats
    from terraseg.models.factory import build_model

    mc = ModelConfig(arch="classifier", encoder="resnet10t")
    torch.manual_seed(0)
    model = build_model(mc, 3, len(classes))
    spec = InputSpec(
        bands=3,
        dtype="uint8",
        normalization=NormStats("meanstd", [90.0] * 3, [60.0] * 3),
        train_window=32,
        predict_window=32,
        input_size=32,
    )
    return Bundle(
        BundleManifest(name="cls", task="classification", model=mc, classes=[ClassSpec(name=c) for c in classes], input=spec),
        model,
        {},
    ).save(path)


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    from terraseg.data.normalize import NormStats

    tmp = tmp_path_factory.mktemp("options")
    a, _, truth = make_geotiff(tmp / "a.tif", 80, 96, seed=1)
    b, _, _ = make_geotiff(tmp / "b.tif", 70, 90, seed=2)
    three = truth.copy()
    three[:8] = 2  # a third class, so that --mask-nodata 2 leaves two
    mask = write_mask_tif(tmp / "a_mask.tif", three, a)
    with rasterio.open(a) as ds:
        x0, y0, x1, y1 = ds.bounds
    poly = [[[x0 + 10, y1 - 10], [x0 + 40, y1 - 10], [x0 + 40, y1 - 40], [x0 + 10, y1 - 40], [x0 + 10, y1 - 10]]]
    (tmp / "a.geojson").write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "crs": {"type": "name", "properties": {"name": "EPSG:32618"}},
                "features": [
                    {
                        "type": "Feature",
                        "properties": {"cls": "house", "id": 2},
                        "geometry": {"type": "Polygon", "coordinates": poly},
                    }
                ],
            }
        )
    )
    (tmp / "items.json").write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "stac_version": "1.0.0",
                        "id": f"item-{n}",
                        "geometry": None,
                        "properties": {},
                        "assets": {"image": {"href": str(p), "type": "image/tiff; application=geotiff", "roles": ["data"]}},
                    }
                    for n, p in (("a", a), ("b", b))
                ],
            }
        )
    )
    root = tmp / "classes"
    rng = np.random.default_rng(0)
    for k, name in enumerate(("dark", "bright")):
        (root / name).mkdir(parents=True)
        for i in range(4):
            with rasterio.open(root / name / f"{i}.tif", "w", driver="GTiff", width=24, height=24, count=3, dtype="uint8") as d:
                d.write((rng.integers(0, 60, (3, 24, 24)) + 150 * k).astype(np.uint8))
    stats = NormStats("meanstd", [90.0] * 3, [60.0] * 3)
    seg = make_bundle(3, ("background", "object", "other"), stats=stats, window=64, path=tmp / "seg.terraseg")
    return {
        "tmp": tmp,
        "images": [a, b],
        "mask": mask,
        "vector": tmp / "a.geojson",
        "stac": tmp / "items.json",
        "classes": root,
        "segmentation": seg,
        "classification": _classifier(tmp / "cls.terraseg"),
    }


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("TERRASEG_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


# a value for each option (set away from its default), and extra options it needs
PREDICT_ARGS = {
    "asset": ["--asset", "image"],
    "engine": ["--engine", "ray", "--num-workers", "1"],
    "resume": ["--resume"],
    "bands": ["--bands", "3,2,1"],
    "input_range": ["--input-range", "0,127"],
    "probabilities": ["--probabilities"],
    "uncertainty": ["--uncertainty"],
    "overlay": ["--overlay"],
    "compress": ["--compress", "zstd"],
    "level": ["--level", "1"],
    "cog": ["--cog"],
    "grid": ["--grid"],
    "inference.window": ["--window", "64"],
    "inference.overlap": ["--overlap", "0.5"],
    "inference.fit_max": ["--fit-max", "0"],
    "inference.readers": ["--readers", "2"],
    "inference.batch_size": ["--batch-size", "1"],
    "inference.device": ["--device", "cpu"],
    "inference.precision": ["--precision", "32"],
    "inference.channels_last": ["--no-channels-last"],
    "inference.backend": ["--backend", "torch"],
    "inference.threads": ["--threads", "1"],
    "inference.tta": ["--tta", "flips"],
}
CHANGES_VALUES = {"bands", "input_range", "inference.tta"}  # options whose results must differ from the default's
CASES = [
    pytest.param(f, w, id=f"{f}-{w}", marks=[pytest.mark.slow] if f == "engine" else [])
    for f in PREDICT
    for w in WAYS
    if not (f == "grid" and w == "files")
]


def _predict(kit, way, out, extra=()):
    bundle = kit["segmentation" if way == "segmentation" else "classification"]
    return run("predict", bundle, *kit["images"], "--out", out, *(["--grid"] if way == "grid" else []), *extra)


def _values(way: str, out: Path) -> np.ndarray:
    """The run's numbers: probabilities (segmentation, grid) or the CSV's p_ columns (files)."""
    if way == "files":
        rows = list(csv.DictReader(open(out / "predictions.csv")))
        return np.array([[float(r[k]) for k in r if k.startswith("p_")] for r in rows])
    with rasterio.open(out / "a_probs.tif") as ds:
        return ds.read()


def _refused(res, out: Path, field: str) -> None:
    lines = [x for x in res.output.splitlines() if x.strip()]
    assert res.exit_code == 1 and len(lines) == 1 and "Traceback" not in res.output, res.output
    assert flag(field) in lines[0] and "applies to" in lines[0], lines[0]
    assert not out.exists() or not any(out.iterdir())


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray for the three ``--engine ray`` cases: predict joins a running Ray, as on a cluster."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=256 * 2**20, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.parametrize("field,way", CASES)
def test_every_predict_option_is_honoured_or_refused(kit, field, way, tmp_path, request):
    entry = PREDICT[field][WAYS.index(way)]
    if field == "engine":
        request.getfixturevalue("ray_local")
    out = tmp_path / "out"
    extra = list(PREDICT_ARGS[field])
    if (field in CHANGES_VALUES or field == "engine") and way != "files":
        extra.append("--probabilities")
    if field == "asset":
        res = run(
            "predict",
            kit["segmentation" if way == "segmentation" else "classification"],
            kit["stac"],
            "--out",
            out,
            *(["--grid"] if way == "grid" else []),
            *extra,
        )
    elif field == "inference.window" and way == "grid":
        res = _predict(kit, way, out, ["--window", "16"])
    else:
        res = _predict(kit, way, out, [x for x in extra if not (way == "grid" and x == "--grid")])
    if isinstance(entry, Refused):
        _refused(res, out, field)
        return
    assert res.exit_code == 0, res.output
    stem = "item-a" if field == "asset" else "a"
    main = {"segmentation": out / f"{stem}.tif", "files": out / "predictions.csv", "grid": out / f"{stem}_classes.tif"}[way]
    assert main.is_file(), sorted(p.name for p in out.iterdir())
    extras = {"probabilities": "_probs.tif", "uncertainty": "_confidence.tif", "overlay": "_overlay.png"}
    if field in extras and way != "files":
        assert (out / f"a{extras[field]}").is_file()
    if field == "uncertainty" and way == "files":
        assert "margin" in open(main).readline()
    if field in ("compress", "cog"):
        with rasterio.open(main) as ds:
            assert (ds.compression.value.lower() == "zstd") if field == "compress" else ds.profile.get("tiled")
    if field == "inference.window" and way == "grid":
        with rasterio.open(main) as ds:
            assert ds.shape == (5, 6)  # 80 x 96 pixels in 16-pixel windows
    if field == "resume":
        again = _predict(kit, way, out, extra)
        assert again.exit_code == 0 and "already complete: skipped" in again.output, again.output
    if field in CHANGES_VALUES or field == "engine":
        ref = tmp_path / "ref"
        r = _predict(kit, way, ref, ["--probabilities"] if way != "files" else [])
        assert r.exit_code == 0, r.output
        same = np.allclose(_values(way, out), _values(way, ref), atol=1e-5, equal_nan=True)
        assert same == (field == "engine"), f"{field}: values {'differ' if field == 'engine' else 'unchanged'}"


EVALUATE_ARGS = {
    "labels": ["--labels", "MASK"],
    "burn_value": ["--labels", "VECTOR", "--burn-value", "2"],
    "attribute": ["--labels", "VECTOR", "--attribute", "id"],
    "mapping": ["--labels", "VECTOR", "--attribute", "cls", "--mapping", "house=1"],
    "mask_nodata": ["--labels", "MASK", "--mask-nodata", "2"],
    "overlays": ["--overlays", "1"],
    "overlay_size": ["--overlay-size", "64"],
    "log_to_run": ["--no-log-to-run"],
    "tracking_uri": ["--tracking-uri", "sqlite:///TMP/t.db"],
    "inference.window": ["--window", "64"],
    "inference.overlap": ["--overlap", "0.5"],
    "inference.fit_max": ["--fit-max", "0"],
    "inference.readers": ["--readers", "2"],
    "inference.batch_size": ["--batch-size", "1"],
    "inference.device": ["--device", "cpu"],
    "inference.precision": ["--precision", "32"],
    "inference.channels_last": ["--no-channels-last"],
    "inference.backend": ["--backend", "torch"],
    "inference.threads": ["--threads", "1"],
    "inference.tta": ["--tta", "flips"],
}
TASKS = ("segmentation", "classification")


@pytest.mark.parametrize("field,task", [(f, t) for f in EVALUATE_ARGS for t in TASKS])
def test_every_evaluate_option_is_honoured_or_refused(kit, field, task, tmp_path):
    entry = EVALUATE[field][TASKS.index(task)]
    out = tmp_path / "ev"
    subs = {"MASK": str(kit["mask"]), "VECTOR": str(kit["vector"]), "TMP": str(tmp_path)}
    extra = [next((x.replace(k, v) for k, v in subs.items() if k in x), x) for x in EVALUATE_ARGS[field]]
    if task == "segmentation":
        base = ["--labels", str(kit["mask"])] if "--labels" not in extra else []
        res = run("evaluate", kit["segmentation"], kit["images"][0], *base, *extra, "--out", out)
    else:  # each option alone (--labels would be refused first)
        for other in ("--labels", "--attribute"):
            if other in extra and flag(field) != other:
                i = extra.index(other)
                extra = extra[:i] + extra[i + 2 :]
        res = run("evaluate", kit["classification"], kit["classes"], *extra, "--out", out)
    if isinstance(entry, Refused):
        _refused(res, out, field)
        return
    assert res.exit_code == 0, res.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["task"] == task and ("miou" in m if task == "segmentation" else "accuracy" in m)
    if field == "overlays":
        assert len(list((out / "overlays").glob("*.png"))) == 1
    if field == "mask_nodata":
        assert m["per_class"]["other"]["support"] == 0  # the value 2 is unknown, not a class
    if field in ("burn_value", "attribute"):
        assert m["per_class"]["other"]["support"] > 0  # polygons burnt as class 2
    if field == "mapping":
        assert m["per_class"]["other"]["support"] == 0 and m["per_class"]["object"]["support"] > 0


def test_the_option_table_is_in_the_docs():
    from terraseg.tasks.options import options_markdown

    assert options_markdown() in (Path(__file__).resolve().parents[1] / "docs" / "commands.md").read_text()


def test_python_api_refuses_the_other_task_and_options_alike(kit, tmp_path):
    from terraseg import evaluate, predict
    from terraseg.config.inference import PredictConfig
    from terraseg.errors import BundleError, ConfigError
    from terraseg.infer.sliding import predictor_for
    from terraseg.prediction.run import predict_segmentation

    with pytest.raises(ConfigError, match="--overlay applies to segmentation bundles and classification with --grid"):
        predict(kit["classification"], kit["images"], tmp_path / "o", overlay=True)
    res = predict(kit["classification"], kit["images"], tmp_path / "o", uncertainty=True, tta="flips")
    assert res.rows == 2 and Path(res.table).is_file()
    with pytest.raises(BundleError, match="this bundle classifies scenes"):
        predict_segmentation(
            PredictConfig(inputs=[str(p) for p in kit["images"]], out_dir=str(tmp_path / "p")), kit["classification"]
        )
    from terraseg.bundle import Bundle

    with pytest.raises(BundleError, match="this bundle classifies scenes"):
        predictor_for(Bundle.load(kit["classification"]))
    with pytest.raises(ConfigError, match="--labels applies to segmentation bundles"):
        evaluate(kit["classification"], kit["classes"], tmp_path / "e", labels=str(kit["mask"]))
    m = evaluate(kit["classification"], kit["classes"], tmp_path / "e2", tta="d4")
    assert m["n"] == 8 and m["intervals"]["units"] == 8
