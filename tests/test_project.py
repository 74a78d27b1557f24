"""Projects: a folder of scenes + one labels file, indexed once, labels read once, memory bounded by a setting."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from conftest import make_geotiff, write_mask_tif
from terraseg.cli.main import app
from terraseg.config import DataConfig, ProjectSource
from terraseg.data import project as project_mod
from terraseg.data.sources import build_scenes
from terraseg.io.cache import ByteLRU


def _project(tmp_path, n=5):
    """n scenes in two UTM zones (the last far from every label) and one GeoPackage in EPSG:4326."""
    import geopandas as gpd
    from pyproj import Transformer
    from shapely.geometry import box

    (tmp_path / "scenes").mkdir()
    polys, kinds = [], []
    for i in range(n):
        crs = "EPSG:32618" if i % 2 else "EPSG:32617"
        x0 = 500000.0 + 200 * i if i < n - 1 else 800000.0
        path, _, _ = make_geotiff(
            tmp_path / "scenes" / f"s{i}.tif", 96, 96, seed=i, crs=crs, origin=(x0, 4500000.0), squares=False
        )
        if i == n - 1:
            continue  # no label reaches the last scene
        to4326 = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
        rng = np.random.default_rng(i)
        for _ in range(8):
            x, y = x0 + rng.uniform(5, 80), 4500000.0 + rng.uniform(5, 80)
            lon0, lat0 = to4326.transform(x, y)
            lon1, lat1 = to4326.transform(x + 8, y + 8)
            polys.append(box(lon0, lat0, lon1, lat1))
            kinds.append(1)
    gpd.GeoDataFrame({"cls": kinds}, geometry=polys, crs="EPSG:4326").to_file(tmp_path / "labels.gpkg")
    return tmp_path / "scenes", tmp_path / "labels.gpkg"


def test_project_source_reads_headers_once_and_labels_once(tmp_path, monkeypatch):
    from terraseg.io import vector

    scenes_dir, labels = _project(tmp_path)
    reads = {"vector": 0, "header": 0}
    real_read, real_header = vector.read_vector, project_mod._header
    monkeypatch.setattr(
        vector, "read_vector", lambda *a, **k: (reads.__setitem__("vector", reads["vector"] + 1), real_read(*a, **k))[1]
    )
    monkeypatch.setattr(project_mod, "_header", lambda p: (reads.__setitem__("header", reads["header"] + 1), real_header(p))[1])
    vector.SharedLabels._cache.clear()
    src = ProjectSource(images=[str(scenes_dir)], vector={"path": str(labels)}, index=str(tmp_path / "idx.parquet"))
    cfg = DataConfig(train=[src])
    scenes = build_scenes(cfg.train, cfg, 255, 2)
    assert len(scenes) == 4 and reads == {
        "vector": 1,
        "header": 5,
    }  # one read of the labels for all scenes; the far scene skipped
    assert {str(s.crs) for s in scenes} == {"EPSG:32617", "EPSG:32618"}  # labels reprojected per scene
    assert all((s.read(0, 0, 96, 96).mask == 1).sum() > 0 for s in scenes)
    build_scenes(cfg.train, cfg, 255, 2)
    assert reads["header"] == 5  # the index is reused: no header read again
    idx = project_mod.project_index([str(p) for p in sorted(scenes_dir.glob("*.tif"))], tmp_path / "idx.parquet")
    assert len(idx) == 5 and idx.crs.to_epsg() == 4326 and idx.geometry.notna().all()
    bg = ProjectSource(
        images=[str(scenes_dir)], vector={"path": str(labels)}, unlabelled="background", index=str(tmp_path / "idx.parquet")
    )
    all5 = build_scenes([bg], DataConfig(train=[bg]), 255, 2)
    assert len(all5) == 5 and (all5[-1].read(0, 0, 96, 96).mask == 0).all()


def test_one_config_trains_from_a_folder_of_scenes_and_one_geopackage(tmp_path):
    scenes_dir, labels = _project(tmp_path)
    cfg = {
        "name": "project",
        "classes": [{"name": "background"}, {"name": "roof"}],
        "data": {
            "train": [
                {
                    "kind": "project",
                    "images": [str(scenes_dir)],
                    "vector": {"path": str(labels)},
                    "index": str(tmp_path / "idx.parquet"),
                }
            ],
            "window": 64,
            "samples_per_epoch": 8,
            "batch_size": 4,
            "cache_mb": 8,
        },
        "model": {"arch": "plain_unet", "base_filters": 8, "encoder_depth": 3},
        "train": {"max_epochs": 1, "seed": 0, "export_onnx": False, "calibrate": False, "choose_tiling": False},
        "tracking": {"enabled": False},
        "output_dir": str(tmp_path / "run"),
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    res = CliRunner().invoke(app, ["train", str(tmp_path / "c.yaml")])
    assert res.exit_code == 0, res.output
    from terraseg.bundle import Bundle

    b = Bundle.load(tmp_path / "run" / "model.terraseg")
    cache = b.manifest.training["cache"]
    assert cache["limit_mb"] == 8 and cache["peak_mb"] <= 8 and cache["peak_rss_mb"] > 0
    assert b.manifest.split["pixels"]["roof"]["val"] > 0
    assert "memory: peak RSS" in res.output  # the run's summary reports its memory
    # the same config through evaluate (the recorded split) and cross-validation
    ev = CliRunner().invoke(
        app,
        [
            "evaluate",
            str(tmp_path / "run" / "model.terraseg"),
            str(tmp_path / "c.yaml"),
            "--split",
            "val",
            "--out",
            str(tmp_path / "ev"),
            "--overlays",
            "0",
        ],
    )
    assert ev.exit_code == 0, ev.output
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["pixels"] == b.manifest.metrics["validation"]["val/pixels"]
    cv = CliRunner().invoke(app, ["cv", str(tmp_path / "c.yaml"), "--folds", "2", "--no-random", "--out", str(tmp_path / "cv")])
    assert cv.exit_code == 0, cv.output
    cvj = json.loads((tmp_path / "cv" / "cv.json").read_text())
    assert cvj["folds"] == 2 and len(cvj["per_fold"]["spatial"]) == 2 and "spatial" in cvj["summary"]


def test_byte_lru_evicts_to_its_budget():
    lru = ByteLRU()
    lru.total_mb = 1.0
    for i in range(20):
        assert lru.put(i, np.zeros(100_000, np.uint8), 100_000)
    assert lru.bytes <= 2**20 and lru.get(0) is None and lru.get(19) is not None and lru.evictions > 0
    assert not lru.put("big", None, 2**19)  # over a quarter of the budget: not kept


def test_peak_rss_is_this_programs_own_not_a_large_parents():
    """``ru_maxrss`` carries a forking parent's peak across ``exec``; the run summary's peak must not."""
    import subprocess
    import sys

    from terraseg.io.cache import peak_rss_mb

    code = "from terraseg.io.cache import peak_rss_mb; print(peak_rss_mb())"
    big = np.ones(400 * 2**20 // 8)  # 400 MiB touched in this (parent) process
    assert peak_rss_mb() >= 400
    child = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    del big
    if sys.platform.startswith("linux"):
        assert 0 < child < 300  # the child's own peak: Python, NumPy and terraseg, not the parent's 400 MiB


def test_scene_reads_stay_within_the_cache_budget(tmp_path):
    from terraseg.data.rasters import RasterScene
    from terraseg.io.cache import CACHE

    old = CACHE.total_mb
    CACHE.clear()
    CACHE.total_mb = 0.2
    try:
        scenes = [RasterScene(make_geotiff(tmp_path / f"c{i}.tif", 64, 64, seed=i)[0]) for i in range(30)]
        for s in scenes:
            s.read(0, 0, 32, 32)
        assert CACHE.bytes <= 0.2 * 2**20 and CACHE.evictions > 0
        np.testing.assert_array_equal(scenes[0].read(0, 0, 64, 64).image, scenes[0]._read_direct(0, 0, 64, 64, False).image)
    finally:
        CACHE.total_mb = old
        CACHE.clear()


def test_burn_shapes_burns_the_pixels_shapely_geometries_burn():
    """Polygons (with holes), multipolygons and lines give the same mask as rasterio's own conversion."""
    import shapely
    from rasterio.features import rasterize
    from rasterio.transform import from_origin

    from terraseg.io.vector import burn_shapes

    rng = np.random.default_rng(3)
    x, y = rng.uniform(0, 90, 40), rng.uniform(10, 100, 40)
    polys = list(shapely.box(x, y - 8, x + 8, y))
    holed = shapely.Polygon([(20, 20), (60, 20), (60, 60), (20, 60)], [[(30, 30), (50, 30), (50, 50), (30, 50)]])
    multi = shapely.MultiPolygon([shapely.box(70, 70, 80, 80), shapely.box(85, 85, 95, 95)])
    line = shapely.LineString([(0, 0), (100, 100)])
    geoms = np.array(polys + [holed, multi, line, shapely.Polygon()], dtype=object)
    values = np.arange(1, len(geoms) + 1) % 5 + 1
    t = from_origin(0, 100, 0.5, 0.5)
    want = rasterize([(g, int(v)) for g, v in zip(geoms[:-1], values[:-1])], out_shape=(200, 200), transform=t)
    got = rasterize(burn_shapes(geoms, values), out_shape=(200, 200), transform=t)
    assert (got == want).all() and (got > 0).sum() > 1000
    assert burn_shapes(np.array([], dtype=object), np.array([])) == []


def test_spill_store_gives_back_every_window_it_was_given(tmp_path):
    """Tiles on disk: windows inside, across tile edges and over the border (padded) match the decoded arrays."""
    from terraseg.io.cache import SpillStore

    rng = np.random.default_rng(0)
    image = rng.integers(0, 60000, (3, 150, 97)).astype(np.uint16)
    valid = rng.random((150, 97)) > 0.1
    mask = rng.integers(0, 5, (150, 97)).astype(np.uint8)
    store = SpillStore()
    store.open(1, str(tmp_path))
    try:
        assert store.read("k", 0, 0, 8, 8, {}) is None  # never written
        assert store.put("k", {"image": image, "valid": valid.view(np.uint8), "mask": mask})
        for row, col, h, w in [(0, 0, 150, 97), (60, 60, 70, 30), (-5, 90, 40, 40), (140, -3, 20, 20), (200, 0, 4, 4)]:
            got = store.read("k", row, col, h, w, {"image": 0, "valid": 0, "mask": 255})
            pad = np.zeros((3, 150 + 400, 97 + 400), np.uint16)
            pad[:, 200:350, 200:297] = image
            np.testing.assert_array_equal(got["image"], pad[:, 200 + row : 200 + row + h, 200 + col : 200 + col + w])
            m = np.full((550, 497), 255, np.uint8)
            m[200:350, 200:297] = mask
            np.testing.assert_array_equal(got["mask"][0], m[200 + row : 200 + row + h, 200 + col : 200 + col + w])
        assert store.read("k", 10, 10, 5, 5, {})["valid"][0].view(bool).tolist() == valid[10:15, 10:15].tolist()
        # a plane of one value (every pixel valid) is not written, and comes back padded like the others
        first = store.bytes
        assert store.put("one", {"image": image, "valid": np.ones((150, 97), np.uint8), "mask": mask})
        padded = 150 * -(-97 // store.STRIP) * store.STRIP
        assert first - (store.bytes - first) == padded  # one byte per (padded) pixel less: the validity plane
        for row, col, h, w in [(60, 60, 70, 30), (-5, 90, 40, 40), (200, 0, 4, 4)]:
            got = store.read("one", row, col, h, w, {"image": 0, "valid": 0, "mask": 255})
            ones = np.zeros((550, 497), np.uint8)
            ones[200:350, 200:297] = 1
            np.testing.assert_array_equal(got["valid"][0], ones[200 + row : 200 + row + h, 200 + col : 200 + col + w])
            assert got["valid"].shape == (1, h, w) and got["image"].shape == (3, h, w)
        assert not store.put("big", {"image": np.zeros((4, 1024, 1024), np.uint8)})  # over the 1 MiB budget: not written
        assert store.full and not store.enabled
        root = store.root
    finally:
        store.close()
    assert not root.exists()  # the run's folder goes with the run


@pytest.fixture
def past_budget(tmp_path):
    """Twelve labelled 64 px scenes, a memory cache holding ten of them (20 KiB each with validity and mask),
    and a spill store for the run; the cache and store are put back afterwards."""
    from terraseg.data.rasters import RasterScene
    from terraseg.io.cache import CACHE, SPILL

    old = CACHE.total_mb
    CACHE.clear()
    CACHE.total_mb = 0.2
    CACHE.reset()
    SPILL.open(64, str(tmp_path))
    try:
        scenes = []
        for i in range(12):
            path, _, truth = make_geotiff(tmp_path / f"c{i}.tif", 64, 64, seed=i)
            scenes.append(RasterScene(path, mask_path=write_mask_tif(tmp_path / f"m{i}.tif", truth, path)))
        yield scenes
    finally:
        CACHE.total_mb = old
        CACHE.clear()
        SPILL.close()


def test_scenes_past_the_cache_budget_are_decoded_once_then_read_from_the_spill_store(past_budget, monkeypatch):
    from terraseg.data.rasters import RasterScene
    from terraseg.io.cache import CACHE, SPILL

    scenes = past_budget
    for _ in range(3):
        for s in scenes:
            s.read(5, 7, 32, 32)
    assert CACHE.thrashing() and SPILL.writes > 0 and SPILL.hits > 0
    decodes = []
    real = RasterScene._read_direct
    monkeypatch.setattr(RasterScene, "_read_direct", lambda self, *a: (decodes.append(a), real(self, *a))[1])
    for s in scenes:
        got, want = s.read(-4, 40, 32, 32), real(s, -4, 40, 32, 32, True)
        np.testing.assert_array_equal(got.image, want.image)
        np.testing.assert_array_equal(got.valid, want.valid)
        np.testing.assert_array_equal(got.mask, want.mask)
    assert len(decodes) < len(scenes)  # most windows came from the store, not from GDAL


def test_a_project_past_the_budget_is_decoded_once_before_the_first_epoch(past_budget, monkeypatch):
    from terraseg.data.datasets import RandomWindowDataset
    from terraseg.data.rasters import RasterScene
    from terraseg.io.cache import SPILL

    ds = RandomWindowDataset(past_budget, 32, 64, None, 0.5, 0)
    assert ds.stage() == 12 and SPILL.writes == 12
    assert ds.stage() == 0  # staged already
    monkeypatch.setattr(RasterScene, "_read_direct", lambda *a: (_ for _ in ()).throw(AssertionError("decoded again")))
    assert all(ds[i]["image"].shape == (3, 32, 32) for i in range(64))  # every window from the store
