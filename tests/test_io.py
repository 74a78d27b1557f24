"""Readers: clear errors for bad files, vector labels reprojected and rasterized on the grid."""

from __future__ import annotations

import zipfile

import geopandas as gpd
import numpy as np
import pytest
from shapely.geometry import box

from conftest import DATA, make_geotiff, needs_data, write_mask_tif
from terraseg.config import VectorLabels
from terraseg.data.rasters import RasterScene
from terraseg.data.scenes import ArrayScene
from terraseg.errors import InputFileError
from terraseg.io.atomic import atomic_path


@needs_data("bad-inputs", "corrupt.tif")
def test_corrupt_geotiff_gives_one_clear_sentence():
    scene = RasterScene(DATA / "bad-inputs" / "corrupt.tif")
    with pytest.raises(InputFileError) as e:
        scene.read(0, 0, scene.height, scene.width)
    msg = str(e.value)
    assert "corrupt.tif" in msg and "corrupt" in msg.split(":", 1)[1] and "\n" not in msg


def test_missing_and_non_raster_files(tmp_path):
    with pytest.raises(InputFileError, match="file not found"):
        RasterScene(tmp_path / "nope.tif")
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"this is not a tiff")
    with pytest.raises(InputFileError, match="not a readable raster"):
        RasterScene(junk)


def _square_labels(tmp_path, crs_from: str, crs_to: str, name: str):
    """A 20 x 20 m square at a known place of the raster, written in another CRS."""
    path, _, _ = make_geotiff(tmp_path / "img.tif", 100, 100, crs=crs_from, squares=False)
    # raster origin (500000, 4500100), 1 m pixels: square at cols 30..50, rows 40..60
    sq = gpd.GeoDataFrame({"cls": ["building"]}, geometry=[box(500030, 4500040, 500050, 4500060)], crs=crs_from).to_crs(crs_to)
    return path, sq


@pytest.mark.parametrize("driver,suffix", [("GeoJSON", ".geojson"), ("GPKG", ".gpkg"), ("ESRI Shapefile", ".shp")])
def test_vector_labels_are_reprojected_and_burnt_in_place(tmp_path, driver, suffix):
    path, sq = _square_labels(tmp_path, "EPSG:32618", "EPSG:4326", "sq")
    vec = tmp_path / f"labels{suffix}"
    sq.to_file(vec, driver=driver)
    labels = VectorLabels(path=str(vec), attribute="cls", mapping={"building": 1})
    mask = RasterScene(path, vector=labels).read(0, 0, 100, 100).mask
    rows, cols = np.nonzero(mask == 1)
    # reprojection through lon/lat moves edges by well under a pixel
    assert abs(rows.min() - 40) <= 1 and abs(rows.max() - 59) <= 1
    assert abs(cols.min() - 30) <= 1 and abs(cols.max() - 49) <= 1
    assert abs(len(rows) - 400) < 45


def test_zipped_shapefile_is_read_in_place(tmp_path):
    path, sq = _square_labels(tmp_path, "EPSG:32618", "EPSG:32618", "sq")
    sq.to_file(tmp_path / "b.shp")
    z = tmp_path / "b.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for f in tmp_path.glob("b.*"):
            if f.suffix != ".zip":
                zf.write(f, f.name)
    mask = RasterScene(path, vector=VectorLabels(path=str(z))).read(0, 0, 100, 100).mask
    assert int((mask == 1).sum()) == 400


def test_labels_without_overlap_and_unmapped_values(tmp_path):
    path, _ = _square_labels(tmp_path, "EPSG:32618", "EPSG:32618", "sq")
    far = gpd.GeoDataFrame({"cls": ["x"]}, geometry=[box(0, 0, 10, 10)], crs="EPSG:4326")
    far.to_file(tmp_path / "far.geojson", driver="GeoJSON")
    with pytest.raises(InputFileError, match="no overlap"):
        RasterScene(path, vector=VectorLabels(path=str(tmp_path / "far.geojson")))
    _, sq = _square_labels(tmp_path, "EPSG:32618", "EPSG:32618", "sq")
    sq.to_file(tmp_path / "sq.geojson", driver="GeoJSON")
    with pytest.raises(InputFileError, match="with no class: building"):
        RasterScene(path, vector=VectorLabels(path=str(tmp_path / "sq.geojson"), attribute="cls", mapping={"road": 2}))


def test_empty_label_file(tmp_path):
    path, _, _ = make_geotiff(tmp_path / "img.tif", 50, 50)
    empty = gpd.GeoDataFrame({"cls": []}, geometry=[], crs="EPSG:32618")
    empty.to_file(tmp_path / "empty.gpkg", driver="GPKG")
    with pytest.raises(InputFileError, match="no features"):
        RasterScene(path, vector=VectorLabels(path=str(tmp_path / "empty.gpkg")))


def test_mask_of_other_size_is_rejected(tmp_path):
    img, _, truth = make_geotiff(tmp_path / "a.tif", 64, 64)
    other, _, t2 = make_geotiff(tmp_path / "b.tif", 60, 64)
    m = write_mask_tif(tmp_path / "m.tif", t2, other)
    with pytest.raises(InputFileError, match="60 pixels but image"):
        RasterScene(img, mask_path=m)
    from PIL import Image

    Image.fromarray(np.zeros((10, 12), np.uint8)).save(tmp_path / "i.png")
    Image.fromarray(np.zeros((11, 12), np.uint8)).save(tmp_path / "m.png")
    with pytest.raises(InputFileError, match="m.png: mask is 12x11"):
        ArrayScene(tmp_path / "i.png", tmp_path / "m.png").read(0, 0, 8, 8)


def test_nodata_pixels_become_ignore_index(tmp_path):
    img, _, truth = make_geotiff(tmp_path / "a.tif", 64, 64, dtype="uint16", nodata=255)
    m = write_mask_tif(tmp_path / "m.tif", truth, img)
    r = RasterScene(img, mask_path=m, ignore_index=99).read(-8, -8, 32, 32)
    assert (r.mask[:8] == 99).all() and (r.mask[:, :8] == 99).all()  # padding outside the scene
    assert (r.mask[8:12, 8:12] == 99).all() and not r.valid[8:12, 8:12].any()  # nodata corner


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert not target.exists() and list(tmp_path.iterdir()) == []
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"whole")
    assert target.read_bytes() == b"whole" and len(list(tmp_path.iterdir())) == 1


def test_kept_datasets_are_closed_at_exit_in_every_thread(tmp_path):
    """Left to interpreter shutdown, rasterio's __del__ ran without its modules (3.12/3.13: 'Error in sys.excepthook')."""
    import subprocess
    import sys
    import threading

    from terraseg.io.raster import close_shared_datasets, shared_dataset

    path = str(make_geotiff(tmp_path / "a.tif", 16, 16)[0])
    held, opened, done = [shared_dataset(path)], threading.Event(), threading.Event()

    def reader():  # a thread still alive at exit (a reader pool's idle worker)
        held.append(shared_dataset(path))
        opened.set()
        done.wait(30)

    t = threading.Thread(target=reader)
    t.start()
    opened.wait(30)
    assert len(held) == 2 and held[0] is not held[1] and not any(ds.closed for ds in held)
    close_shared_datasets()
    assert all(ds.closed for ds in held)
    done.set()
    t.join()
    # and in a process that exits with a dataset kept: nothing on stderr
    run = subprocess.run(
        [sys.executable, "-c", f"from terraseg.io.raster import shared_dataset; shared_dataset({path!r}).read()"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0 and run.stderr == "", run.stderr


def test_a_block_beyond_the_memory_bound_is_refused_in_one_line(tmp_path):
    """A few hundred bytes declaring one 2.1-billion-pixel strip: refused before any read, not 150 s and 3 GB later."""
    import rasterio

    from terraseg.errors import InputFileError
    from terraseg.io.raster import open_raster

    path = tmp_path / "huge_strip.tif"
    with rasterio.open(
        path, "w", driver="GTiff", width=2_100_000_000, height=1, count=1, dtype="uint8", compress="deflate", SPARSE_OK=True
    ):
        pass
    assert path.stat().st_size < 1000
    with pytest.raises(InputFileError, match=r"one block of the file is 1 x 2,100,000,000 pixels .* TILED=YES"):
        with open_raster(path):
            pass


def test_a_file_declaring_more_bands_than_any_sensor_is_refused_in_one_line(tmp_path):
    """GDAL's excessive-memory-TIFFFillStrip2.tif declares 65,535 pixel-interleaved bands in 244 bytes."""
    import rasterio

    from terraseg.errors import InputFileError
    from terraseg.io.raster import MAX_BANDS, open_raster

    path = tmp_path / "many_bands.tif"
    with rasterio.open(path, "w", driver="GTiff", width=2, height=2, count=MAX_BANDS + 1, dtype="uint8", interleave="pixel"):
        pass
    with pytest.raises(InputFileError, match=rf"declares {MAX_BANDS + 1:,} bands, over the {MAX_BANDS:,}"):
        with open_raster(path):
            pass
