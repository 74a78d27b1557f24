"""Data preparation on the real data sets under the data root (../shared/datasets), through the CLI."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
from rasterio.warp import Resampling, calculate_default_transform, reproject
from rasterio.windows import Window, from_bounds
from typer.testing import CliRunner

from conftest import DATA, needs_data
from terraseg.cli.main import app

pytestmark = pytest.mark.integration
run = CliRunner().invoke
MB = DATA / "massachusetts-buildings"
NB = DATA / "new-brunswick-landcover"
SN = DATA / "spacenet"


def ok(args):
    r = run(app, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    return r.output


def fails(args, *words):
    r = run(app, [str(a) for a in args])
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output and all(w in r.output for w in words), r.output
    return r.output


@needs_data("massachusetts-buildings")
def test_chip_massachusetts_uint16_nodata_zipped_shapefile(tmp_path):
    tile = MB / "23429155_15.tif"
    ok(
        [
            "chip",
            tile,
            "--labels",
            MB / "massachusetts_buildings.zip",
            "--out",
            tmp_path,
            "--size",
            "256",
            "--max-nodata",
            "1",
            "--class-names",
            "background,building",
        ]
    )
    idx = gpd.read_parquet(tmp_path / "index.parquet")
    with rasterio.open(tile) as src:
        assert len(idx) == 3 * 5  # 751 x 1046 -> 3 x 5 chips of 256, edge chips padded
        assert idx.crs == src.crs and idx.total_bounds[0] == pytest.approx(src.bounds.left)
        rec = idx[(idx.row == 512) & (idx.col == 768)].iloc[0]
        with rasterio.open(tmp_path / rec.chip) as c:
            assert c.dtypes[0] == "uint16" and c.nodata == 255 and c.crs == src.crs
            assert c.transform == src.window_transform(Window(768, 512, 256, 256))
            np.testing.assert_array_equal(c.read()[:, :239, :], src.read(window=Window(768, 512, 256, 239)))
            assert (c.read()[:, 239:, :] == 255).all()  # padded with the nodata value
    assert idx["px_building"].sum() > 0.05 * idx[["px_background", "px_building"]].to_numpy().sum()


@needs_data("spacenet")
def test_spacenet_four_crs_rasterize_agree(tmp_path):
    """SN7 labels in EPSG:3857 and EPSG:4326 over a 3857 raster burn the same mask; SN4 32616; SN2 26911 stacked RGBN."""
    sn7 = SN / "sn7"
    ras = next(sn7.glob("*_clipped.tif"))
    masks = []
    for vec in (next(sn7.glob("*_clipped.gpkg")), next(sn7.glob("*_4326.gpkg"))):
        out = tmp_path / f"{vec.stem}.tif"
        ok(["rasterize", vec, "--reference", ras, "--out", out])
        with rasterio.open(out) as m, rasterio.open(ras) as r:
            assert m.crs == r.crs and m.transform == r.transform and (m.width, m.height) == (r.width, r.height)
            masks.append(m.read(1))
    assert (masks[0] == 1).sum() > 100
    assert (masks[0] == masks[1]).mean() > 0.99
    sn4 = SN / "sn4-atlanta"
    out = tmp_path / "sn4.tif"
    ok(
        [
            "rasterize",
            next(sn4.glob("*.geojson")),
            "--reference",
            next(sn4.glob("*.tif")),
            "--out",
            out,
            "--boundary-width",
            "2",
            "--boundary-class",
            "2",
        ]
    )
    with rasterio.open(out) as m:
        assert m.crs.to_epsg() == 32616 and {1, 2} <= set(np.unique(m.read(1)).tolist())
    vegas = SN / "sn2-vegas"
    stem = "SpaceNet_AOI_2_Las_Vegas-056155973080_01_P001-WV03"
    ok(["stack", *(vegas / f"{stem}-{c}.tif" for c in "RGBN"), "--out", tmp_path / "rgbn.tif"])
    with (
        rasterio.open(tmp_path / "rgbn.tif") as s,
        rasterio.open(vegas / f"{stem}-N.tif") as n,
        rasterio.open(vegas / f"{stem}-RGB.tif") as rgb,
    ):
        assert s.count == 4 and s.crs.to_epsg() == 26911 and s.transform == n.transform
        np.testing.assert_array_equal(s.read(4), n.read(1))
        np.testing.assert_array_equal(s.read([1, 2, 3]), rgb.read())  # the per-colour files stack into the RGB product
    ok(
        [
            "chip",
            tmp_path / "rgbn.tif",
            "--labels",
            vegas / f"{stem}.gpkg",
            "--out",
            tmp_path / "c",
            "--size",
            "128",
            "--index-format",
            "csv",
        ]
    )
    idx = pd.read_csv(tmp_path / "c" / "index.csv")
    assert (idx["crs"] == "EPSG:26911").all() and idx["px_c1"].sum() > 0


@needs_data("new-brunswick-landcover")
def test_new_brunswick_mosaic_and_multiclass_rasterize(tmp_path):
    clips = sorted(NB.glob("*.tif"))
    ok(["mosaic", *clips, "--out", tmp_path / "m.tif", "--cog"])
    with rasterio.open(tmp_path / "m.tif") as m:
        assert m.crs.to_epsg() == 2953 and m.overviews(1)
        with rasterio.open(clips[0]) as c:  # the first clip defines the grid: copied bit-exactly
            w = from_bounds(*c.bounds, transform=m.transform)
            assert abs(w.col_off - round(w.col_off)) < 1e-6 and abs(w.row_off - round(w.row_off)) < 1e-6
            np.testing.assert_array_equal(m.read(window=w.round_offsets().round_lengths()), c.read())
        with rasterio.open(clips[1]) as c:  # the second is half a pixel off that grid: resampled (nearest)
            w = from_bounds(*c.bounds, transform=m.transform).round_offsets().round_lengths()
            a, b = m.read(1, window=w).astype(float), c.read(1).astype(float)
            h, wd = min(a.shape[0], b.shape[0]), min(a.shape[1], b.shape[1])
            assert np.corrcoef(a[:h, :wd].ravel(), b[:h, :wd].ravel())[0, 1] > 0.8  # (the overlap holds clip 1)
        left, bottom, right, top = m.bounds
        b = [rasterio.open(c).bounds for c in clips]
        assert left == pytest.approx(min(x.left for x in b)) and top == pytest.approx(max(x.top for x in b))
    gpkg = NB / "BakerLake_2017_clipped.gpkg"
    fails(
        [
            "rasterize",
            gpkg,
            "--reference",
            tmp_path / "m.tif",
            "--out",
            tmp_path / "l.tif",
            "--attribute",
            "Quatreclasses",
            "--mapping",
            "1=1,2=2,3=3",
        ],
        "with no class",
        "255",
        "4",
    )
    assert not (tmp_path / "l.tif").exists()
    ok(
        [
            "rasterize",
            gpkg,
            "--reference",
            tmp_path / "m.tif",
            "--out",
            tmp_path / "l.tif",
            "--attribute",
            "Quatreclasses",
            "--mapping",
            '{"1": 1, "2": 2, "3": 3, "4": 4, "255": 255}',
        ]
    )
    with rasterio.open(tmp_path / "l.tif") as m:
        vals = set(np.unique(m.read(1)).tolist())
    assert {1, 2, 3, 4} <= vals
    ok(["stats", tmp_path / "m.tif", "--labels", tmp_path / "l.tif", "--out", tmp_path / "st"])


@needs_data("landsat", "RGB.byte.tif")
def test_landsat_tiles_reprojected_and_merged_back_equal_original(tmp_path):
    """Cut RGB.byte.tif into 4 overlapping tiles; warp one to EPSG:4326 and one to 150 m; the mosaic equals the original."""
    src_path = DATA / "landsat" / "RGB.byte.tif"
    with rasterio.open(src_path) as ds:
        full, prof, _tr, crs, res = ds.read(), ds.profile, ds.transform, ds.crs, ds.res
        wins = [Window(0, 0, 420, 380), Window(380, 0, 411, 380), Window(0, 350, 420, 368), Window(380, 350, 411, 368)]
        tiles = []
        for i, w in enumerate(wins):
            d, t = ds.read(window=w), ds.window_transform(w)
            p = prof | dict(width=d.shape[2], height=d.shape[1], transform=t)
            if i == 1:
                dt, W, H = calculate_default_transform(
                    crs, "EPSG:4326", d.shape[2], d.shape[1], *ds.window_bounds(w), resolution=0.0008
                )
                out = np.zeros((3, H, W), np.uint8)
                reproject(
                    d,
                    out,
                    src_transform=t,
                    src_crs=crs,
                    dst_transform=dt,
                    dst_crs="EPSG:4326",
                    resampling=Resampling.nearest,
                    src_nodata=0,
                    dst_nodata=0,
                )
                p.update(crs="EPSG:4326", transform=dt, width=W, height=H)
                d = out
            elif i == 2:
                d = np.repeat(np.repeat(d, 2, 1), 2, 2)
                p.update(transform=t @ rasterio.Affine.scale(0.5), width=d.shape[2], height=d.shape[1])
            tiles.append(tmp_path / f"t{i}.tif")
            with rasterio.open(tiles[-1], "w", **p) as o:
                o.write(d)
    ok(["mosaic", *tiles, "--out", tmp_path / "m.tif", "--crs", "EPSG:32618", "--resolution", f"{res[0]},{res[1]}"])
    with rasterio.open(tmp_path / "m.tif") as m:
        assert m.crs == crs and m.res == pytest.approx(res)
        merged = m.read(
            window=from_bounds(*rasterio.open(src_path).bounds, transform=m.transform).round_offsets().round_lengths()
        )
    assert merged.shape == full.shape
    covered, valid = (merged != 0).any(0), (full != 0).any(0)
    assert (valid & ~covered).sum() == 0  # every original pixel is covered
    np.testing.assert_array_equal(merged[:, covered], full[:, covered])


@pytest.mark.slow
@needs_data("sen1floods11")
def test_sen1floods11_13_band_stats_chip_and_vectorize(tmp_path):
    s2 = DATA / "sen1floods11" / "S2" / "Spain_7370579_S2Hand.tif"
    lab = DATA / "sen1floods11" / "Labels" / "Spain_7370579_LabelHand.tif"
    out = ok(
        [
            "stats",
            s2,
            "--labels",
            lab,
            "--mask-nodata",
            "-1",
            "--out",
            tmp_path / "st",
            "--flatten",
            tmp_path / "t.parquet",
            "--sample-fraction",
            "0.05",
        ]
    )
    assert "B8A:" in out and "B12:" in out  # the GeoTIFF's band descriptions name the bands
    import json

    st = json.loads((tmp_path / "st" / "stats.json").read_text())
    assert len(st["bands"]) == 13 and st["dtype"] == "int16" and len(st["classes"]["pixels"]) == 2
    assert [b["name"] for b in st["bands"]][-5:] == ["B8A", "B9", "B10", "B11", "B12"]
    t = pd.read_parquet(tmp_path / "t.parquet")
    assert 0.03 < len(t) / (512 * 512) < 0.07 and t["label"].isin([0, 1, 255]).all()  # 255: label nodata (-1)
    assert t["lon"].between(-1, 0).all() and (t["x"] == t["lon"]).all()  # EPSG:4326 raster: x is longitude
    ok(["chip", s2, "--labels", lab, "--mask-nodata", "-1", "--out", tmp_path / "c", "--size", "256", "--ignore-index", "255"])
    idx = gpd.read_parquet(tmp_path / "c" / "index.parquet")
    assert len(idx) == 4 and idx.crs.to_epsg() == 4326
    with rasterio.open(tmp_path / "c" / idx.iloc[0]["mask"]) as m, rasterio.open(lab) as src:
        a, ref = m.read(1), src.read(1, window=Window(0, 0, 256, 256))
        assert ((a == 255) == (ref == -1)).all() and (a[ref >= 0] == ref[ref >= 0]).all()
    ok(["vectorize", lab, "--out", tmp_path / "water.geojson", "--classes", "1", "--min-area", "1000"])
    g = gpd.read_file(tmp_path / "water.geojson")
    assert g.crs.to_epsg() == 4326 and len(g) > 0 and (g["area"] >= 1000).all()


@needs_data("aerial-building-tiles")
def test_aerial_tiles_chip_with_mask_rasters_and_split(tmp_path):
    a = DATA / "aerial-building-tiles"
    ok(
        [
            "chip",
            a / "tiled_image_1.tif",
            a / "tiled_image_2.tif",
            "--labels",
            a / "tiled_label_1.tif",
            "--labels",
            a / "tiled_label_2.tif",
            "--out",
            tmp_path,
            "--size",
            "128",
            "--stride",
            "96",
        ]
    )
    idx = gpd.read_parquet(tmp_path / "index.parquet")
    assert len(idx) == 2 * 25 and idx.crs.to_epsg() == 2949
    ok(["split", tmp_path / "index.parquet", "--out", tmp_path / "sp", "--method", "spatial", "--block-size", "40"])
    parts = {s: pd.read_csv(tmp_path / "sp" / f"{s}.csv") for s in ("train", "val", "test")}
    from shapely.geometry import box

    test_boxes = [box(r.minx, r.miny, r.maxx, r.maxy) for r in parts["test"].itertuples()]
    for r in parts["train"].itertuples():  # no training chip overlaps a test chip
        assert all(box(r.minx, r.miny, r.maxx, r.maxy).intersection(b).area == 0 for b in test_boxes)


@needs_data("bad-inputs", "corrupt.tif")
def test_bad_inputs_clear_errors_nothing_written(tmp_path):
    good = DATA / "landsat" / "RGB.byte.tif"
    fails(["mosaic", good, DATA / "bad-inputs" / "corrupt.tif", "--out", tmp_path / "m.tif"], "corrupt.tif")
    fails(["mosaic", good, MB / "22978945_15.tif", "--out", tmp_path / "m.tif", "--crs", "EPSG:9999999"], "not a CRS")
    fails(["chip", DATA / "bad-inputs" / "corrupt.tif", "--out", tmp_path / "c"], "corrupt.tif", "corrupt")
    fails(["rasterize", MB / "massachusetts_buildings.zip", "--reference", good, "--out", tmp_path / "r.tif"], "no overlap")
    fails(["split", tmp_path / "nope.parquet", "--out", tmp_path / "s"], "nope.parquet", "not found")
    fails(["download", "imagenet"], "unknown data set")
    assert not (tmp_path / "m.tif").exists() and not (tmp_path / "r.tif").exists()
    assert not list(tmp_path.rglob("*.part*"))


@needs_data("bad-inputs", "corrupt.tif")
def test_failed_chip_run_leaves_no_chips(tmp_path):
    """`chip good.tif corrupt.tif` exits 1 and leaves no chip, no index and no staging folder;
    two images with one stem are refused before any work."""
    from conftest import make_geotiff

    good, _, _ = make_geotiff(tmp_path / "good.tif", 300, 300)
    out = tmp_path / "chips"
    res = CliRunner().invoke(
        app, ["chip", str(good), str(DATA / "bad-inputs" / "corrupt.tif"), "--out", str(out), "--size", "64"]
    )
    assert res.exit_code == 1 and "corrupt.tif" in res.output
    assert not out.exists() or list(out.rglob("*")) == []
    (tmp_path / "b").mkdir()
    twin, _, _ = make_geotiff(tmp_path / "b" / "good.tif", 100, 100)
    res = CliRunner().invoke(app, ["chip", str(good), str(twin), "--out", str(out), "--size", "64"])
    assert res.exit_code == 1 and "share the stem 'good'" in res.output
    res = CliRunner().invoke(app, ["chip", str(good), "--out", str(out), "--size", "64"])
    assert (
        res.exit_code == 0 and len(list((out / "images").glob("*.tif"))) == 24 and (out / "index.parquet").is_file()
    )  # 5x5, corner mostly padding
    assert not [p for p in out.iterdir() if p.name.startswith(".chip-")]
