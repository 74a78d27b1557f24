"""Data preparation on seeded synthetic data: chip, mosaic, rasterize, split, stats, vectorize, CVAT."""

from __future__ import annotations

import json
import time

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
from rasterio.transform import from_origin
from shapely.geometry import Polygon, box

from conftest import make_geotiff, write_mask_tif
from terraseg.config.prep import (
    ChipConfig,
    LabelOptions,
    MosaicConfig,
    RasterizeConfig,
    SplitConfig,
    StatsConfig,
    VectorizeConfig,
)
from terraseg.errors import ConfigError, InputFileError, OutputError
from terraseg.prediction.vectorize import vectorize
from terraseg.prepare.chip import chip, read_index
from terraseg.prepare.cvat import import_cvat
from terraseg.prepare.mosaic import merge_block, mosaic, stack_bands
from terraseg.prepare.rasterize import rasterize_labels
from terraseg.prepare.split import split_index
from terraseg.prepare.stats import class_weights, compute_statistics


def test_chip_geotiff_georeferencing_padding_and_index(tmp_path):
    img_path, img, truth = make_geotiff(tmp_path / "s.tif", 100, 130, bands=4, dtype="uint16", nodata=0, seed=3)
    mask_path = write_mask_tif(tmp_path / "m.tif", truth, img_path)
    res = chip(
        ChipConfig(
            images=[str(img_path)],
            labels=[LabelOptions(path=str(mask_path))],
            out_dir=str(tmp_path / "c"),
            size=64,
            max_nodata=1.0,
            index_format="parquet",
        )
    )
    assert res.written == 2 * 3 and res.skipped == 0  # 100x130 -> 2 rows x 3 cols with padding
    idx = read_index(res.index_path)
    assert idx.crs.to_epsg() == 32618
    with rasterio.open(img_path) as src:
        for rec in idx.itertuples():
            with rasterio.open(tmp_path / "c" / rec.chip) as c:
                assert c.crs == src.crs and c.transform == src.window_transform(
                    ((rec.row, rec.row + 64), (rec.col, rec.col + 64))
                )
                assert tuple(c.bounds) == pytest.approx((rec.minx, rec.miny, rec.maxx, rec.maxy))
                assert c.nodata == 0 and c.count == 4 and c.dtypes[0] == "uint16"
                data = c.read()
                h, w = min(64, 100 - rec.row), min(64, 130 - rec.col)
                np.testing.assert_array_equal(data[:, :h, :w], img[:, rec.row : rec.row + h, rec.col : rec.col + w])
                assert (data[:, h:, :] == 0).all() and (data[:, :, w:] == 0).all()  # padding = nodata
            with rasterio.open(tmp_path / "c" / rec.mask) as m:
                mk = m.read(1)
                assert m.transform == src.window_transform(((rec.row, rec.row + 64), (rec.col, rec.col + 64)))
                assert (mk[h:, :] == 255).all()  # padding = ignore_index
                region = truth[rec.row : rec.row + h, rec.col : rec.col + w]
                valid = (img[:, rec.row : rec.row + h, rec.col : rec.col + w] != 0).any(0)
                assert rec.px_c1 == int((region[valid] == 1).sum())


def test_chip_skips_nodata_and_empty_and_shift(tmp_path):
    img_path, _, truth = make_geotiff(tmp_path / "s.tif", 100, 100, seed=4)
    mask_path = write_mask_tif(tmp_path / "m.tif", np.zeros_like(truth), img_path)
    r = chip(
        ChipConfig(
            images=[str(img_path)],
            labels=[LabelOptions(path=str(mask_path))],
            out_dir=str(tmp_path / "a"),
            size=64,
            skip_empty=True,
        )
    )
    assert r.written == 0 and r.skipped == 4
    r = chip(ChipConfig(images=[str(img_path)], out_dir=str(tmp_path / "b"), size=64, max_nodata=0.3, index_format="csv"))
    assert r.written == 1  # the three edge chips are > 30 % padding
    r = chip(ChipConfig(images=[str(img_path)], out_dir=str(tmp_path / "c"), size=64, edge="shift", index_format="csv"))
    df = pd.read_csv(r.index_path)
    assert sorted(set(df["row"])) == [0, 36] and (df["nodata_fraction"] == 0).all()
    with pytest.raises(ConfigError, match="skip_empty needs labels"):
        chip(ChipConfig(images=[str(img_path)], out_dir=str(tmp_path / "d"), size=64, skip_empty=True))


def _tile(path, data, x0, y0, res=1.0, crs="EPSG:32618", nodata=None):
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=data.shape[2],
        height=data.shape[1],
        count=data.shape[0],
        dtype=data.dtype,
        crs=crs,
        transform=from_origin(x0, y0, res, res),
        nodata=nodata,
    ) as d:
        d.write(data)
    return str(path)


@pytest.mark.parametrize("rule,expect", [("first", 1), ("last", 2), ("min", 1), ("max", 2)])
def test_mosaic_overlap_rules_and_grid(tmp_path, rule, expect):
    a = _tile(tmp_path / "a.tif", np.full((2, 50, 60), 1, np.uint8), 1000, 2000)
    b = _tile(tmp_path / "b.tif", np.full((2, 50, 60), 2, np.uint8), 1030, 1980)  # 30 px right, 20 px down
    r = mosaic(MosaicConfig(inputs=[a, b], out=str(tmp_path / f"m_{rule}.tif"), rule=rule, block=32))
    with rasterio.open(r.path) as m:
        assert (m.width, m.height) == (90, 70) and m.transform == from_origin(1000, 2000, 1, 1)
        d = m.read()
    assert (d[:, 20:50, 30:60] == expect).all()  # overlap
    assert (d[:, :20, :30] == 1).all() and (d[:, 50:, 60:] == 2).all()
    assert (d[:, 55:, :20] == 0).all()  # covered by no tile: nodata 0


def test_mosaic_bad_tiles_leave_nothing(tmp_path):
    a = _tile(tmp_path / "a.tif", np.ones((3, 20, 20), np.uint8), 0, 100)
    b = _tile(tmp_path / "b.tif", np.ones((1, 20, 20), np.uint8), 10, 100)
    with pytest.raises(InputFileError, match="b.tif: tile has 1 bands"):
        mosaic(MosaicConfig(inputs=[a, b], out=str(tmp_path / "m.tif")))
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"not a tiff")
    with pytest.raises(InputFileError, match="junk.tif"):
        mosaic(MosaicConfig(inputs=[a, str(junk)], out=str(tmp_path / "m.tif")))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif", "b.tif", "junk.tif"]


def test_mosaic_too_large_is_refused_up_front(tmp_path, monkeypatch):
    """Regression: a resolution that implies a huge mosaic is refused with the figure and the override."""
    from terraseg.errors import OutputError

    a = _tile(tmp_path / "a.tif", np.ones((3, 20, 20), np.uint8), 0, 100, res=10.0)
    b = _tile(tmp_path / "b.tif", np.ones((3, 20, 20), np.uint8), 500_000, 100, res=10.0)  # 500 km east
    t0 = time.perf_counter()
    with pytest.raises(
        OutputError,
        match=r"5,002,000 x 2,000 pixels x 3 band\(s\) of uint8 = 30.0 GB uncompressed, over the limit of 0.5 GB.*--max-output-gb",
    ):
        mosaic(MosaicConfig(inputs=[a, b], out=str(tmp_path / "m.tif"), resolution=(0.1, 0.1), max_output_gb=0.5))
    assert time.perf_counter() - t0 < 5 and not (tmp_path / "m.tif").exists()
    monkeypatch.setenv("TERRASEG_MAX_OUTPUT_GB", "0.000001")  # the environment limit applies to every writer
    with pytest.raises(OutputError, match="over the limit"):
        mosaic(MosaicConfig(inputs=[a], out=str(tmp_path / "m.tif")))
    r = mosaic(MosaicConfig(inputs=[a], out=str(tmp_path / "m.tif"), max_output_gb=1))  # the flag overrides it
    assert r.path.exists()


def test_merge_block_min_max():
    out = np.array([[[5, 0]]], np.int16)
    filled = np.array([[True, False]])
    merge_block(out, filled, np.array([[[3, 7]]], np.int16), np.array([[True, True]]), "min")
    assert out.tolist() == [[[3, 7]]] and filled.all()


def test_stack_bands_checks_grid(tmp_path):
    r = _tile(tmp_path / "r.tif", np.full((1, 10, 10), 1, np.uint8), 0, 10)
    g = _tile(tmp_path / "g.tif", np.full((1, 10, 10), 2, np.uint8), 0, 10)
    out = stack_bands([r, g], str(tmp_path / "rg.tif"))
    with rasterio.open(out) as s:
        assert s.count == 2 and s.read(2).max() == 2 and s.descriptions == ("r", "g")
    off = _tile(tmp_path / "o.tif", np.ones((1, 10, 10), np.uint8), 5, 10)
    with pytest.raises(InputFileError, match="not on the grid"):
        stack_bands([r, off], str(tmp_path / "x.tif"))


def _grid(tmp_path, nodata=None):
    path, _, _ = make_geotiff(tmp_path / "ref.tif", 40, 50, squares=False, nodata=nodata, origin=(500000.0, 4500000.0))
    return path  # x 500000..500050, y 4500000..4500040, 1 m pixels


def test_rasterize_classes_boundary_ignore_and_reprojection(tmp_path):
    ref = _grid(tmp_path, nodata=None)
    polys = gpd.GeoDataFrame(
        {"kind": ["roof", "road"]},
        geometry=[box(500010, 4500010, 500020, 4500020), box(500030, 4500000, 500040, 4500040)],
        crs="EPSG:32618",
    )
    polys.to_crs("EPSG:4326").to_file(tmp_path / "p.geojson")  # labels in another CRS
    gpd.GeoDataFrame(geometry=[box(500035, 4500030, 500040, 4500040)], crs="EPSG:32618").to_file(tmp_path / "ign.gpkg")
    out = rasterize_labels(
        RasterizeConfig(
            vector=LabelOptions(path=str(tmp_path / "p.geojson"), attribute="kind", mapping={"roof": 1, "road": 2}),
            reference=str(ref),
            out=str(tmp_path / "m.tif"),
            ignore=str(tmp_path / "ign.gpkg"),
            block=16,
        )
    )
    with rasterio.open(out) as m, rasterio.open(ref) as r:
        assert m.crs == r.crs and m.transform == r.transform and m.nodata == 255
        a = m.read(1)
    assert (a[20:30, 10:20] == 1).sum() >= 98  # 10x10 m roof, rows 20-30 from the top; reprojection moves edges < 1 px
    assert (a[:, 30:40] == 2).sum() + (a[:, 30:40] == 255).sum() >= 395
    assert (a[0:10, 35:40] == 255).all()  # ignore zone wins
    out = rasterize_labels(
        RasterizeConfig(
            vector=LabelOptions(path=str(tmp_path / "p.geojson")),
            reference=str(ref),
            out=str(tmp_path / "b.tif"),
            boundary_width=2,
            boundary_class=9,
        )
    )
    with rasterio.open(out) as m:
        b = m.read(1)
    assert b[24, 10] == 9 and b[25, 15] == 1 and b[5, 5] == 0  # outline, interior, background


def test_rasterize_bad_labels(tmp_path):
    ref = _grid(tmp_path)
    far = gpd.GeoDataFrame({"k": ["a"]}, geometry=[box(0, 0, 1, 1)], crs="EPSG:4326")
    far.to_file(tmp_path / "far.geojson")
    with pytest.raises(InputFileError, match="no overlap"):
        rasterize_labels(
            RasterizeConfig(
                vector=LabelOptions(path=str(tmp_path / "far.geojson")), reference=str(ref), out=str(tmp_path / "o.tif")
            )
        )
    near = gpd.GeoDataFrame({"k": ["a", "zzz"]}, geometry=[box(500001, 4500001, 500005, 4500005)] * 2, crs="EPSG:32618")
    near.to_file(tmp_path / "near.geojson")
    with pytest.raises(InputFileError, match="with no class: zzz"):
        rasterize_labels(
            RasterizeConfig(
                vector=LabelOptions(path=str(tmp_path / "near.geojson"), attribute="k", mapping={"a": 1}),
                reference=str(ref),
                out=str(tmp_path / "o.tif"),
            )
        )
    (tmp_path / "empty.geojson").write_text('{"type": "FeatureCollection", "features": []}')
    with pytest.raises(InputFileError, match="no features"):
        rasterize_labels(
            RasterizeConfig(
                vector=LabelOptions(path=str(tmp_path / "empty.geojson")), reference=str(ref), out=str(tmp_path / "o.tif")
            )
        )
    bow = Polygon([(500001, 4500001), (500009, 4500009), (500009, 4500001), (500001, 4500009)])  # self-intersecting
    gpd.GeoDataFrame(geometry=[bow], crs="EPSG:32618").to_file(tmp_path / "bow.geojson")
    out = rasterize_labels(
        RasterizeConfig(vector=LabelOptions(path=str(tmp_path / "bow.geojson")), reference=str(ref), out=str(tmp_path / "o.tif"))
    )
    with rasterio.open(out) as m:
        assert 20 < (m.read(1) == 1).sum() < 64  # repaired into two triangles, burnt
    assert not list(tmp_path.glob(".*part*"))


def _index(tmp_path, n_side=10, size=10.0, with_classes=True):
    rng = np.random.default_rng(0)
    recs = []
    for i in range(n_side):
        for j in range(n_side):
            recs.append(
                {
                    "chip": f"images/c{i}_{j}.tif",
                    "mask": None,
                    "scene": "s",
                    "row": i,
                    "col": j,
                    "height": 10,
                    "width": 10,
                    "minx": j * size,
                    "miny": i * size,
                    "maxx": (j + 1) * size,
                    "maxy": (i + 1) * size,
                    "crs": "EPSG:32618",
                    "nodata_fraction": 0.0,
                    "px_c0": 50,
                    "px_c1": int(rng.random() < 0.2) * 10,
                }
            )
    path = tmp_path / "index.csv"
    pd.DataFrame(recs).to_csv(path, index=False)
    return path


def test_split_random_reproducible_and_stratified(tmp_path):
    idx = _index(tmp_path)
    a = split_index(SplitConfig(index=str(idx), out_dir=str(tmp_path / "a"), seed=3))
    b = split_index(SplitConfig(index=str(idx), out_dir=str(tmp_path / "b"), seed=3))
    ta, tb = pd.read_csv(a["train"]), pd.read_csv(b["train"])
    assert ta["chip"].tolist() == tb["chip"].tolist() and len(ta) == 70
    assert sum(len(pd.read_csv(a[s])) for s in ("train", "val", "test")) == 100
    s = split_index(SplitConfig(index=str(idx), out_dir=str(tmp_path / "s"), method="stratified", seed=1))
    full = pd.read_csv(idx)
    share = (full["px_c1"] > 0).mean()
    for name in ("train", "val", "test"):
        part = pd.read_csv(s[name])
        assert abs((part["px_c1"] > 0).mean() - share) < 0.08  # each split keeps the positive share


def test_split_spatial_blocks_never_straddle(tmp_path):
    idx = _index(tmp_path)
    paths = split_index(SplitConfig(index=str(idx), out_dir=str(tmp_path / "sp"), method="spatial", block_size=30.0, seed=0))
    block_split = {}
    for name, p in paths.items():
        for r in pd.read_csv(p).itertuples():
            key = (int((r.minx + r.maxx) / 2 // 30), int((r.miny + r.maxy) / 2 // 30))
            assert block_split.setdefault(key, name) == name
    assert len(set(block_split.values())) == 3
    assert json.loads((tmp_path / "sp" / "split.json").read_text())["method"] == "spatial"


@pytest.mark.parametrize("mode", ["drop", "assign"])
def test_split_spatial_straddling_chips_dropped_or_assigned_never_leak(tmp_path, mode):
    """Overlapping chips (stride 7, size 10) straddle block borders: dropped (no leak), or kept by their centre's block."""
    from shapely.geometry import box

    recs = [
        {
            "chip": f"c{i}_{j}.tif",
            "mask": None,
            "scene": "s",
            "minx": j * 7.0,
            "miny": i * 7.0,
            "maxx": j * 7.0 + 10,
            "maxy": i * 7.0 + 10,
            "crs": "EPSG:32618",
            "px_c0": 50,
            "px_c1": 0,
        }
        for i in range(8)
        for j in range(8)
    ]
    pd.DataFrame(recs).to_csv(tmp_path / "index.csv", index=False)
    paths = split_index(
        SplitConfig(
            index=str(tmp_path / "index.csv"),
            out_dir=str(tmp_path / mode),
            method="spatial",
            block_size=20.0,
            seed=0,
            straddling=mode,
        )
    )
    parts = {k: pd.read_csv(v) for k, v in paths.items()}
    summary = json.loads((tmp_path / mode / "split.json").read_text())
    total = sum(len(p) for p in parts.values())
    if mode == "drop":
        assert summary["dropped_straddling"] > 0 and total == 64 - summary["dropped_straddling"]
    else:
        assert summary["dropped_straddling"] == 0 and summary["assigned_straddling"] > 0 and total == 64
    train = [box(r.minx, r.miny, r.maxx, r.maxy) for r in parts["train"].itertuples()]
    held = [box(r.minx, r.miny, r.maxx, r.maxy) for k in ("val", "test") for r in parts[k].itertuples()]
    overlapping = sum(any(a.intersection(b).area > 0 for b in held) for a in train)
    assert train and held
    assert overlapping == (0 if mode == "drop" else summary["assigned_straddling"])  # dropped: no training pixel leaks


@pytest.mark.parametrize("buffer", [0.0, 15.0])
def test_spatial_kfold_with_buffer(tmp_path, buffer):
    """K folds of whole blocks; no training chip within `buffer` of its fold's test chips; every chip tested once."""
    from shapely.geometry import box

    idx = _index(tmp_path)  # 10 x 10 abutting 10 m chips
    paths = split_index(
        SplitConfig(
            index=str(idx),
            out_dir=str(tmp_path / f"k{buffer}"),
            method="spatial-kfold",
            folds=4,
            block_size=30.0,
            buffer=buffer,
            seed=0,
        )
    )
    tested = []
    for k in range(4):
        train, test = pd.read_csv(paths[f"fold{k}/train"]), pd.read_csv(paths[f"fold{k}/test"])
        tested += test["chip"].tolist()
        tg = [box(r.minx, r.miny, r.maxx, r.maxy) for r in test.itertuples()]
        for r in train.itertuples():
            g = box(r.minx, r.miny, r.maxx, r.maxy)
            d = min(g.distance(t) for t in tg)
            assert d >= buffer and all(g.intersection(t).area == 0 for t in tg)
        assert set(train["chip"]).isdisjoint(test["chip"]) and 10 <= len(test) <= 40
    assert sorted(tested) == sorted(pd.read_csv(idx)["chip"].map(lambda c: str(tmp_path / c)))  # each chip tested once
    summary = json.loads((tmp_path / f"k{buffer}" / "split.json").read_text())
    left = sum(f["left_out_by_buffer"] for f in summary["per_fold"])
    assert (left > 0) == (buffer > 0)  # abutting chips touch but do not overlap; a 15 m buffer leaves neighbours out


def test_split_cli_says_what_it_dropped(tmp_path):
    from typer.testing import CliRunner

    from terraseg.cli.main import app

    recs = [
        {
            "chip": f"c{i}_{j}.tif",
            "mask": None,
            "scene": "s",
            "minx": j * 7.0,
            "miny": i * 7.0,
            "maxx": j * 7.0 + 10,
            "maxy": i * 7.0 + 10,
            "crs": "EPSG:32618",
        }
        for i in range(8)
        for j in range(8)
    ]
    pd.DataFrame(recs).to_csv(tmp_path / "index.csv", index=False)
    r = CliRunner().invoke(
        app, ["split", str(tmp_path / "index.csv"), "--out", str(tmp_path / "o"), "--method", "spatial", "--block-size", "20"]
    )
    assert r.exit_code == 0 and "--straddling assign" in r.output and "left out" in r.output


def test_stats_moments_percentiles_and_flat_table(tmp_path):
    img_path, img, truth = make_geotiff(tmp_path / "s.tif", 60, 70, bands=2, nodata=0, seed=5)
    mask_path = write_mask_tif(tmp_path / "m.tif", truth, img_path)
    r = compute_statistics(
        StatsConfig(
            images=[str(img_path)],
            labels=[LabelOptions(path=str(mask_path))],
            out_dir=str(tmp_path / "st"),
            band_names=["red", "nir"],
            flatten=str(tmp_path / "t.parquet"),
            block=16,
            percentiles=[2, 50, 98],
        )
    )
    valid = (img != 0).any(0)
    for k, b in enumerate(r.stats["bands"]):
        x = img[k][valid].astype(float)
        assert b["mean"] == pytest.approx(x.mean()) and b["std"] == pytest.approx(x.std()) and b["min"] == x.min()
        assert b["percentiles"]["50"] == pytest.approx(np.percentile(x, 50, method="lower"), abs=1)
    assert r.stats["nodata_fraction"] == pytest.approx(1 - valid.mean())
    assert r.stats["classes"]["pixels"] == [int((truth[valid] == 0).sum()), int((truth[valid] == 1).sum())]
    assert [p.name for p in r.histograms] == ["bands.png"] and r.histograms[0].stat().st_size > 1000  # one figure
    t = pd.read_parquet(tmp_path / "t.parquet")
    assert len(t) == valid.sum() and {"x", "y", "lon", "lat", "red", "nir", "label"} <= set(t.columns)
    row = t.iloc[123]
    with rasterio.open(img_path) as ds:
        assert (row.x, row.y) == pytest.approx(ds.xy(int(row.row), int(row.col)))  # pixel centre in the CRS
        assert row.red == img[0, int(row.row), int(row.col)]
    assert -76 < t["lon"].mean() < -74  # EPSG:32618 easting 500000 is the zone's central meridian, 75 W


def test_class_weights():
    w = class_weights(np.array([900, 100, 0]))
    assert w["median_frequency"][2] == 0 and w["median_frequency"][1] > w["median_frequency"][0]
    assert np.mean(w["inverse_frequency"][:2]) == pytest.approx(1.0)


def test_vectorize_regions_cross_blocks(tmp_path):
    ids = np.zeros((64, 64), np.uint8)
    ids[5:40, 10:20] = 1  # crosses the block seams at rows 16 and 32
    ids[50:60, 50:60] = 2
    probs = np.zeros((3, 64, 64), np.float32)
    probs[1][ids == 1] = 0.8
    probs[2][ids == 2] = 0.6
    t = from_origin(1000, 2000, 2, 2)
    for name, arr, n in (("ids.tif", ids[None], 1), ("p.tif", probs, 3)):
        with rasterio.open(
            tmp_path / name, "w", driver="GTiff", width=64, height=64, count=n, dtype=arr.dtype, crs="EPSG:3857", transform=t
        ) as d:
            d.write(arr)
    out = vectorize(
        VectorizeConfig(
            raster=str(tmp_path / "ids.tif"),
            probabilities=str(tmp_path / "p.tif"),
            out=str(tmp_path / "v.gpkg"),
            block=16,
            class_names=["bg", "building", "water"],
        )
    )
    g = gpd.read_file(out)
    assert g.crs.to_epsg() == 3857 and len(g) == 2
    b = g[g.class_id == 1].iloc[0]
    assert b.pixels == 350 and b.area == pytest.approx(350 * 4) and b.geometry.area == pytest.approx(1400)
    assert b.confidence == pytest.approx(0.8) and b.class_name == "building"
    assert b.geometry.bounds == pytest.approx((1020, 2000 - 80, 1040, 2000 - 10))
    g2 = gpd.read_file(
        vectorize(VectorizeConfig(raster=str(tmp_path / "ids.tif"), out=str(tmp_path / "v.geojson"), min_area=500))
    )
    assert g2.class_id.tolist() == [1]


CVAT = """<?xml version="1.0" encoding="utf-8"?>
<annotations><version>1.1</version>
<meta><task><labels><label><name>heracleum</name></label><label><name>water</name></label></labels></task></meta>
<image id="0" name="{name}" width="{w}" height="{h}">
  <box label="water" occluded="0" xtl="0" ytl="0" xbr="20" ybr="10" z_order="0"/>
  <polygon label="heracleum" occluded="0" points="5,5;15,5;15,15;5,15" z_order="1"/>
  <mask label="water" rle="3,2,3" left="30" top="30" width="4" height="2" z_order="0"/>
</image></annotations>"""


def test_cvat_import_polygons_boxes_masks(tmp_path):
    (tmp_path / "a.xml").write_text(CVAT.format(name="img.png", w=40, h=40))
    (p,) = import_cvat(tmp_path / "a.xml", tmp_path / "out")
    from PIL import Image

    m = np.asarray(Image.open(p))
    assert m.shape == (40, 40)
    assert (m[5:15, 5:15] == 1).all()  # polygon on top of the box (z_order 1)
    assert m[2, 18] == 2 and m[12, 18] == 0
    assert m[30].tolist()[30:34] == [0, 0, 0, 2] and m[31].tolist()[30:34] == [2, 0, 0, 0]
    geo, _, _ = make_geotiff(tmp_path / "g.tif", 40, 40, squares=False)
    (tmp_path / "b.xml").write_text(CVAT.format(name="g.tif", w=40, h=40))
    (q,) = import_cvat(tmp_path / "b.xml", tmp_path / "out2", mapping={"heracleum": 1, "water": 3}, images_dir=tmp_path)
    with rasterio.open(q) as d, rasterio.open(geo) as g:
        assert d.crs == g.crs and d.transform == g.transform and d.read(1)[2, 18] == 3


def test_cvat_bad_inputs(tmp_path):
    (tmp_path / "u.xml").write_text(
        CVAT.format(name="x.png", w=40, h=40).replace('label="water" occluded="0" xtl', 'label="cloud" occluded="0" xtl')
    )
    with pytest.raises(InputFileError, match="label 'cloud' has no class id"):
        import_cvat(tmp_path / "u.xml", tmp_path / "o")
    bomb = '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "xxxxxxxx"><!ENTITY y "&x;&x;&x;&x;">]><annotations>&y;</annotations>'
    (tmp_path / "bomb.xml").write_text(bomb)
    with pytest.raises(InputFileError, match="not a valid CVAT XML"):
        import_cvat(tmp_path / "bomb.xml", tmp_path / "o")
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())


def test_failed_multi_output_commands_leave_nothing(tmp_path, monkeypatch):
    """CVAT import with a bad second image, and a split failing at its second manifest, leave no output."""
    two = (
        CVAT.format(name="a.png", w=40, h=40).replace("</image></annotations>", "</image>")
        + '<image id="1" name="b.png" width="40" height="40"><box label="cloud" xtl="0" ytl="0" xbr="2" ybr="2"/></image></annotations>'
    )
    (tmp_path / "two.xml").write_text(two)
    with pytest.raises(InputFileError, match="'b.png'.*cloud"):
        import_cvat(tmp_path / "two.xml", tmp_path / "masks")
    assert list((tmp_path / "masks").iterdir()) == []  # a.png's mask was staged, never moved into place
    idx = _index(tmp_path)
    calls = {"n": 0}
    real = pd.DataFrame.to_csv

    def failing(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        return real(self, *a, **k)

    monkeypatch.setattr(pd.DataFrame, "to_csv", failing)
    with pytest.raises(OutputError, match="sp: cannot write the outputs here .No space left on device"):
        split_index(SplitConfig(index=str(idx), out_dir=str(tmp_path / "sp"), seed=0))
    assert list((tmp_path / "sp").iterdir()) == []  # no train.csv without its val/test and split.json


def test_relative_paths_are_the_users_not_the_data_root(tmp_path, monkeypatch):
    make_geotiff(tmp_path / "s.tif", 40, 40, squares=False)
    monkeypatch.chdir(tmp_path)
    r = chip(ChipConfig(images=["s.tif"], out_dir="c", size=32, max_nodata=1.0, index_format="csv"))
    assert r.written == 4 and (tmp_path / "c" / "index.csv").exists()
    st = compute_statistics(StatsConfig(images=["s.tif"], out_dir="st"))
    assert st.stats["bands"][0]["valid_pixels"] == 1600


def test_stacked_and_chipped_nir_is_never_alpha(tmp_path):
    """R, G, B, NIR bands keep colour interpretation red, green, blue, undefined; 4-band PNG chips are refused."""
    from rasterio.enums import ColorInterp

    bands = [
        _tile(tmp_path / f"{n}.tif", np.full((1, 10, 10), i, np.uint8), 0, 10)
        for i, n in enumerate(["red", "green", "blue", "nir"])
    ]
    out = stack_bands(bands, str(tmp_path / "rgbn.tif"))
    with rasterio.open(out) as s:
        assert s.colorinterp == (ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.undefined)
    img, _, _ = make_geotiff(tmp_path / "four.tif", 64, 64, bands=4)
    r = chip(ChipConfig(images=[str(img)], out_dir=str(tmp_path / "c"), size=32))
    first = sorted((tmp_path / "c" / "images").glob("*.tif"))[0]
    with rasterio.open(first) as s:
        assert ColorInterp.alpha not in s.colorinterp and r.written == 4
    with pytest.raises(ConfigError, match="transparency"):
        chip(ChipConfig(images=[str(img)], out_dir=str(tmp_path / "p"), size=32, format="png"))


def test_stats_into_a_folder_under_a_file_is_one_line(tmp_path):
    from typer.testing import CliRunner

    from conftest import make_geotiff
    from terraseg.cli.main import app

    img, _, _ = make_geotiff(tmp_path / "s.tif", 64, 64)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = CliRunner().invoke(app, ["stats", str(img), "--out", str(blocker / "sub")])
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    lines = [x for x in res.output.splitlines() if x.strip()]
    assert len(lines) == 1 and str(blocker / "sub") in lines[0]
    assert blocker.read_text() == "x"
