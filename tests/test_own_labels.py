"""Labels as users have them: class names as text or codes, scored as the bundle was trained."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from terraseg.cli.main import app

from conftest import make_geotiff

runner = CliRunner()


def _polygons(path, raster, values, attribute, seed):
    """Squares over ``raster`` in its CRS, the class of each in ``attribute``, cycling through ``values``."""
    import geopandas as gpd
    import rasterio
    from shapely.geometry import box

    rng = np.random.default_rng(seed)
    with rasterio.open(raster) as ds:
        left, bottom, right, top = ds.bounds
        crs = ds.crs
    geoms = []
    for _ in range(3 * len(values)):
        x, y = rng.uniform(left, right - 16), rng.uniform(bottom, top - 16)
        geoms.append(box(x, y, x + rng.uniform(6, 14), y + rng.uniform(6, 14)))
    gpd.GeoDataFrame({attribute: [values[i % len(values)] for i in range(len(geoms))]}, geometry=geoms, crs=crs).to_file(path)
    return path


def _train(tmp_path, scene, labels, attribute, *extra):
    res = runner.invoke(app, ["plan", str(scene), "--labels", str(labels), "--attribute", attribute, "--minutes", "0.5",
                              "--no-measure", "--out", str(tmp_path / "plan.yaml"), "--name", "own"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["train", str(tmp_path / "plan.yaml"), "--set", "train.max_epochs=1", "--set", "data.samples_per_epoch=4",
                              "--set", f"output_dir={tmp_path / 'run'}", "--set", "tracking.enabled=false",
                              "--set", "train.export_onnx=false", *extra])
    assert res.exit_code == 0, res.output
    return tmp_path / "run" / "model.terraseg"


def _scores(bundle, scene, labels, out, *options):
    res = runner.invoke(app, ["evaluate", str(bundle), str(scene), "--labels", str(labels), "--out", str(out), "--overlays", "0",
                              "--no-log-to-run", *options])
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "metrics.json").read_text())
    return {k: metrics[k] for k in ("pixels", "miou", "per_class", "confusion_matrix")}, res.output


@pytest.mark.parametrize(("attribute", "values", "extra"), [
    ("Niveau_3", ["Building", "Forest", "Hydro"], ()),  # class names as text, a network
    ("code", [10, 20, 30], ("--set", "model.arch=random_forest")),  # codes, the pixel forest
])
def test_evaluate_scores_with_the_mapping_training_used(tmp_path, attribute, values, extra):
    one, _, _ = make_geotiff(tmp_path / "scene1.tif", 96, 96, seed=1)
    two, _, _ = make_geotiff(tmp_path / "scene2.tif", 96, 96, seed=2)
    bundle = _train(tmp_path, one, _polygons(tmp_path / "l1.gpkg", one, values, attribute, 1), attribute, *extra)
    labels = _polygons(tmp_path / "l2.gpkg", two, values, attribute, 2)
    as_trained, printed = _scores(bundle, two, labels, tmp_path / "e1", "--attribute", attribute)
    explicit, _ = _scores(bundle, two, labels, tmp_path / "e2", "--attribute", attribute,
                          "--mapping", ",".join(f"{v}={i + 1}" for i, v in enumerate(values)))
    assert as_trained == explicit and as_trained["pixels"] == 96 * 96, as_trained
    assert len(as_trained["confusion_matrix"]) == 4 and sum(map(sum, as_trained["confusion_matrix"][1:])) > 0  # classes 1..3 scored
    # without --attribute the bundle's one trained attribute is read (said), not every polygon burnt as class 1
    implied, printed = _scores(bundle, two, labels, tmp_path / "e3")
    assert implied == explicit and f"attribute '{attribute}'" in printed
    # a value the bundle does not know: one line naming it and the known ones
    strange = _polygons(tmp_path / "l3.gpkg", two, [*values, 99 if isinstance(values[0], int) else "Road"], attribute, 3)
    res = runner.invoke(app, ["evaluate", str(bundle), str(two), "--labels", str(strange), "--attribute", attribute,
                              "--out", str(tmp_path / "e4"), "--no-log-to-run"])
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 1 and len(lines) == 1 and "Traceback" not in res.output, res.output
    assert ("99" in lines[0] or "Road" in lines[0]) and all(str(v) in lines[0] for v in values)
