"""Area estimation and accuracy from a stratified sample: Olofsson et al. 2014's numerical example,
allocation, and the sample/area commands on a generated map."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from typer.testing import CliRunner

from terraseg.cli.main import app
from terraseg.evaluation.area import allocate, stratified_estimates

# Olofsson et al., Remote Sensing of Environment 148 (2014) 42-57, section 5: sample counts (rows: map
# deforestation, forest gain, stable forest, stable non-forest; columns: reference) and mapped pixels (30 m).
COUNTS = np.array([[66, 0, 5, 4], [0, 55, 8, 12], [1, 0, 153, 11], [2, 1, 9, 313]])
MAPPED = np.array([200_000, 150_000, 3_200_000, 6_450_000])


def test_olofsson_2014_numerical_example():
    e = stratified_estimates(COUNTS, MAPPED, unit_area=0.09, unit="ha")  # 30 m pixels = 0.09 ha
    # the paper's area estimates and 95% intervals (ha)
    np.testing.assert_allclose(e.area, [21_158, 11_686, 285_770, 581_386], atol=1)
    np.testing.assert_allclose(e.area_ci, [6_158, 3_756, 15_510, 16_282], atol=1.5)
    # user's, producer's and overall accuracy
    np.testing.assert_allclose(e.users, [0.88, 0.73, 0.93, 0.96], atol=0.005)
    np.testing.assert_allclose(e.producers, [0.75, 0.85, 0.93, 0.96], atol=0.005)
    assert e.overall == pytest.approx(0.947, abs=0.0005) and e.overall_ci == pytest.approx(0.018, abs=0.001)
    np.testing.assert_allclose(e.users_ci, [0.07, 0.10, 0.04, 0.02], atol=0.006)
    assert e.producers_ci[0] == pytest.approx(0.21, abs=0.006)
    assert e.proportions.sum() == pytest.approx(1.0)


def test_allocation():
    N = np.array([9000, 900, 100])
    assert allocate(N, 100).tolist() == [90, 9, 1]
    assert allocate(N, 100, "equal").tolist() == [34, 33, 33]
    assert allocate(N, 100, min_per_class=20).tolist() == [56, 24, 20]  # 20 each, the other 40 proportionally
    assert allocate(N, 100, "neyman", expected_accuracy=[0.99, 0.6, 0.6]).sum() == 100


def test_sample_then_area_on_a_generated_map(tmp_path):
    """Reference labels = the truth map: the estimate's interval holds the true area, accuracy is 1 where labels agree."""
    rng = np.random.default_rng(0)
    truth = (rng.random((300, 400)) < 0.1).astype(np.uint8)
    truth[100:160, 200:300] = 1
    pred = truth.copy()
    flip = rng.random(truth.shape) < 0.05  # 5% of pixels mislabelled in the map
    pred[flip] = 1 - pred[flip]
    prof = dict(
        driver="GTiff",
        width=400,
        height=300,
        count=1,
        dtype="uint8",
        crs="EPSG:32618",
        transform=from_origin(500000, 4500000, 10, 10),
        nodata=255,
    )
    for name, arr in (("map.tif", pred), ("truth.tif", truth)):
        with rasterio.open(tmp_path / name, "w", **prof) as d:
            d.write(arr, 1)
    r = CliRunner().invoke(
        app, ["sample", str(tmp_path / "map.tif"), "--n", "400", "--min-per-class", "100", "--out", str(tmp_path / "p.gpkg")]
    )
    assert r.exit_code == 0, r.output
    import geopandas as gpd

    pts = gpd.read_file(tmp_path / "p.gpkg")
    assert len(pts) == 400 and (pts["map_class"] == pred[pts["row"], pts["col"]]).all()
    pts["reference"] = truth[pts["row"], pts["col"]].astype(int)  # a person would label these
    pts.to_file(tmp_path / "labelled.gpkg", driver="GPKG")
    r = CliRunner().invoke(
        app,
        [
            "area",
            str(tmp_path / "map.tif"),
            "--reference",
            str(tmp_path / "labelled.gpkg"),
            "--out",
            str(tmp_path / "area.json"),
            "--class-names",
            "background,building",
        ],
    )
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "area.json").read_text())
    true_ha = truth.sum() * 100 / 1e4  # 10 m pixels
    b = rep["classes"]["building"]
    assert abs(b["area"] - true_ha) <= b["area_ci95"] * 1.5 and rep["unit"] == "ha"
    assert rep["overall_accuracy"] == pytest.approx(0.95, abs=0.03)
