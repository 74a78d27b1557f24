"""Labels as users have them: class names as text or codes, scored as the bundle was trained."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import make_geotiff, short_run
from terraseg.cli.main import app

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
    res = runner.invoke(
        app,
        [
            "plan",
            str(scene),
            "--labels",
            str(labels),
            "--attribute",
            attribute,
            "--minutes",
            "0.5",
            "--no-measure",
            "--out",
            str(tmp_path / "plan.yaml"),
            "--name",
            "own",
        ],
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(
        app,
        [
            "train",
            str(tmp_path / "plan.yaml"),
            *short_run(tmp_path),
            *extra,
        ],
    )
    assert res.exit_code == 0, res.output
    return tmp_path / "run" / "model.terraseg"


def _scores(bundle, scene, labels, out, *options):
    res = runner.invoke(
        app,
        [
            "evaluate",
            str(bundle),
            str(scene),
            "--labels",
            str(labels),
            "--out",
            str(out),
            "--overlays",
            "0",
            "--no-log-to-run",
            *("--backend", "torch", "--precision", "32", "--no-channels-last"),  # the labels' mapping is under test
            *options,
        ],
    )
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "metrics.json").read_text())
    return {k: metrics[k] for k in ("pixels", "miou", "per_class", "confusion_matrix")}, res.output


@pytest.mark.parametrize(
    ("attribute", "values", "extra"),
    [
        ("Niveau_3", ["Building", "Forest", "Hydro"], ()),  # class names as text, a network
        ("code", [10, 20, 30], ("--set", "model.arch=random_forest")),  # codes, the pixel forest
    ],
)
def test_evaluate_scores_with_the_mapping_training_used(tmp_path, attribute, values, extra):
    one, _, _ = make_geotiff(tmp_path / "scene1.tif", 96, 96, seed=1)
    two, _, _ = make_geotiff(tmp_path / "scene2.tif", 96, 96, seed=2)
    bundle = _train(tmp_path, one, _polygons(tmp_path / "l1.gpkg", one, values, attribute, 1), attribute, *extra)
    labels = _polygons(tmp_path / "l2.gpkg", two, values, attribute, 2)
    as_trained, printed = _scores(bundle, two, labels, tmp_path / "e1", "--attribute", attribute)
    explicit, _ = _scores(
        bundle,
        two,
        labels,
        tmp_path / "e2",
        "--attribute",
        attribute,
        "--mapping",
        ",".join(f"{v}={i + 1}" for i, v in enumerate(values)),
    )
    assert as_trained == explicit and as_trained["pixels"] == 96 * 96, as_trained
    assert (
        len(as_trained["confusion_matrix"]) == 4 and sum(map(sum, as_trained["confusion_matrix"][1:])) > 0
    )  # classes 1..3 scored
    # without --attribute the bundle's one trained attribute is read (said), not every polygon burnt as class 1
    implied, printed = _scores(bundle, two, labels, tmp_path / "e3")
    assert implied == explicit and f"attribute '{attribute}'" in printed
    # a value the bundle does not know: one line naming it and the known ones
    strange = _polygons(tmp_path / "l3.gpkg", two, [*values, 99 if isinstance(values[0], int) else "Road"], attribute, 3)
    res = runner.invoke(
        app,
        [
            "evaluate",
            str(bundle),
            str(two),
            "--labels",
            str(strange),
            "--attribute",
            attribute,
            "--out",
            str(tmp_path / "e4"),
            "--no-log-to-run",
        ],
    )
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 1 and len(lines) == 1 and "Traceback" not in res.output, res.output
    assert ("99" in lines[0] or "Road" in lines[0]) and all(str(v) in lines[0] for v in values)


def test_a_labelled_extent_keeps_unlabelled_pixels_out_of_training_holdout_and_scores(tmp_path):
    import geopandas as gpd
    import rasterio
    from shapely.geometry import box

    from terraseg.bundle import Bundle
    from terraseg.config import load_config
    from terraseg.data.sources import build_scenes

    scene, _, truth = make_geotiff(tmp_path / "scene.tif", 128, 128, seed=4)
    with rasterio.open(scene) as ds:
        left, bottom, right, top = ds.bounds
        crs = ds.crs
    middle = (left + right) / 2  # the left half was digitised: squares there, the extent is that half
    squares = [box(x, y, x + 8, y + 8) for x in np.arange(left + 4, middle - 10, 14) for y in np.arange(bottom + 4, top - 10, 20)]
    gpd.GeoDataFrame({"kind": ["house"] * len(squares)}, geometry=squares, crs=crs).to_file(tmp_path / "labels.gpkg")
    gpd.GeoDataFrame(geometry=[box(left, bottom, middle, top)], crs=crs).to_file(tmp_path / "extent.geojson")
    inside = 128 * 64  # pixels of the left half

    # without the extent the plan says the polygons span little of the scene and names --aoi
    res = runner.invoke(
        app,
        [
            "plan",
            str(scene),
            "--labels",
            str(tmp_path / "labels.gpkg"),
            "--minutes",
            "0.5",
            "--no-measure",
            "--out",
            str(tmp_path / "no-extent.yaml"),
        ],
    )
    assert res.exit_code == 0 and "--aoi" in res.output and "background" in res.output, res.output
    res = runner.invoke(
        app,
        [
            "plan",
            str(scene),
            "--labels",
            str(tmp_path / "labels.gpkg"),
            "--aoi",
            str(tmp_path / "extent.geojson"),
            "--minutes",
            "0.5",
            "--no-measure",
            "--out",
            str(tmp_path / "plan.yaml"),
            "--name",
            "extent",
        ],
    )
    assert res.exit_code == 0 and "--aoi" not in res.output, res.output

    cfg = load_config(tmp_path / "plan.yaml")
    (s,) = build_scenes(cfg.data.train, cfg.data, cfg.ignore_index, len(cfg.classes))
    mask = s.read(0, 0, 128, 128).mask
    assert (mask[:, 64:] == cfg.ignore_index).all() and (mask[:, :64] != cfg.ignore_index).sum() == inside  # counted

    res = runner.invoke(
        app,
        [
            "train",
            str(tmp_path / "plan.yaml"),
            *short_run(tmp_path),
        ],
    )
    assert res.exit_code == 0, res.output
    manifest = Bundle.load(tmp_path / "run" / "model.terraseg").manifest
    assert manifest.drift and manifest.drift["seconds"] >= 0  # fitted before the epochs: no budget leaves it out
    split = manifest.split
    held = sum(v["train"] + v["val"] for v in split["pixels"].values())  # labelled pixels on both sides of the hold-out
    assert 0 < held <= inside and split["pixels"]["background"]["val"] > 0, split["pixels"]
    res = runner.invoke(
        app,
        [
            "evaluate",
            str(tmp_path / "run" / "model.terraseg"),
            str(scene),
            "--labels",
            str(tmp_path / "labels.gpkg"),
            "--aoi",
            str(tmp_path / "extent.geojson"),
            "--out",
            str(tmp_path / "e"),
            "--overlays",
            "0",
            "--no-log-to-run",
            *("--backend", "torch", "--precision", "32", "--no-channels-last"),  # the extent is under test
        ],
    )
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "e" / "metrics.json").read_text())["pixels"] == inside


def _multispectral(tmp_path, side=112, bands=13, seed=5):
    """A float32 13-band reflectance scene whose four classes (patches around random seeds) differ by their spectra,
    and its mask raster: what a per-pixel forest separates well."""
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, side, size=(24, 2))
    rr, cc = np.mgrid[:side, :side]
    nearest = np.argmin((rr[..., None] - centres[:, 0]) ** 2 + (cc[..., None] - centres[:, 1]) ** 2, axis=-1)
    mask = (nearest % 4).astype(np.uint8)
    spectra = rng.uniform(0.05, 0.4, size=(4, bands)).astype(np.float32)
    image = spectra[mask].transpose(2, 0, 1) + rng.normal(0, 0.03, size=(bands, side, side)).astype(np.float32)
    profile = dict(driver="GTiff", height=side, width=side, crs="EPSG:32633", transform=from_origin(500000, 5000000, 10, 10))
    with rasterio.open(tmp_path / "patch.tif", "w", count=bands, dtype="float32", **profile) as dst:
        dst.write(image.astype(np.float32))
    with rasterio.open(tmp_path / "lulc.tif", "w", count=1, dtype="uint8", **profile) as dst:
        dst.write(mask[None])
    return tmp_path / "patch.tif", tmp_path / "lulc.tif"


@pytest.mark.serial
def test_the_plan_keeps_the_forest_where_validation_prefers_it_and_prints_both(tmp_path, monkeypatch):
    from terraseg.bundle import Bundle

    monkeypatch.chdir(tmp_path)
    scene, mask = _multispectral(tmp_path)
    res = runner.invoke(
        app,
        [
            "train",
            "--data",
            str(scene),
            "--labels",
            str(mask),
            "--minutes",
            "0.25",
            "--set",
            "tracking.enabled=false",
            "--set",
            "train.export_onnx=false",
        ],
    )
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert any(ln.startswith("candidate network") for ln in lines) and any(
        ln.startswith("candidate random_forest") for ln in lines
    )
    assert any(ln.startswith("kept random_forest") for ln in lines), res.output
    bundle = Bundle.load(tmp_path / "runs" / "patch" / "model.terraseg")
    assert bundle.manifest.model.arch == "random_forest" and bundle.manifest.training["candidates"]["kept"] == "random_forest"
    assert (tmp_path / "runs" / "patch" / "candidates" / "network.terraseg").is_file()
    (row,) = bundle.manifest.training["candidates"]["comparisons"]
    assert row["difference_interval"][0] > 0 and row["units"] >= 5  # small blocks: an interval, not one block


def test_mask_codes_become_the_classes_they_hold_and_are_scored_as_trained(tmp_path):
    """A land-cover mask tagged nodata 0 holding codes 1, 2, 3, 8 and a stray 255: four classes named by value."""
    import rasterio

    from terraseg.config import load_config
    from terraseg.data.sources import build_scenes

    def scene(name, seed):
        img, _, _ = make_geotiff(tmp_path / f"{name}.tif", 96, 96, seed=seed)
        rng = np.random.default_rng(seed)
        codes = np.array([1, 2, 3, 8], dtype=np.uint8)[rng.integers(0, 4, size=(12, 12))].repeat(8, 0).repeat(8, 1)
        codes[:8, :8] = 0  # nodata
        codes[50, 50:53] = 255  # three stray 'no data' pixels
        with rasterio.open(img) as ds:
            prof = ds.profile | dict(count=1, dtype="uint8", nodata=0)
        with rasterio.open(tmp_path / f"{name}_mask.tif", "w", **prof) as dst:
            dst.write(codes[None])
        return img, tmp_path / f"{name}_mask.tif", codes

    img, mask, codes = scene("one", 7)
    res = runner.invoke(
        app,
        [
            "plan",
            str(img),
            "--labels",
            str(mask),
            "--minutes",
            "0.5",
            "--no-measure",
            "--out",
            str(tmp_path / "plan.yaml"),
            "--name",
            "codes",
        ],
    )
    assert res.exit_code == 0 and "mask value 255" in res.output, res.output
    cfg = load_config(tmp_path / "plan.yaml")
    assert [c.name for c in cfg.classes] == ["class_1", "class_2", "class_3", "class_8"]  # no class_4..7, no background
    assert cfg.data.train[0].mask_values == {"1": 0, "2": 1, "3": 2, "8": 3, "255": 255}
    (s,) = build_scenes(cfg.data.train, cfg.data, cfg.ignore_index, len(cfg.classes))
    read = s.read(0, 0, 96, 96).mask
    lut = {0: 255, 1: 0, 2: 1, 3: 2, 8: 3, 255: 255}
    assert (read == np.vectorize(lut.get)(codes)).all()
    res = runner.invoke(
        app,
        [
            "train",
            str(tmp_path / "plan.yaml"),
            "--set",
            "model.arch=random_forest",
            "--set",
            f"output_dir={tmp_path / 'run'}",
            "--set",
            "tracking.enabled=false",
        ],
    )
    assert res.exit_code == 0, res.output
    img2, mask2, codes2 = scene("two", 8)
    scores, _ = _scores(tmp_path / "run" / "model.terraseg", img2, mask2, tmp_path / "e")
    assert scores["pixels"] == int(((codes2 != 0) & (codes2 != 255)).sum()) and len(scores["confusion_matrix"]) == 4
