"""Data sources, folder layouts, window sampling and the sample contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import DATA, make_geotiff, needs_data, write_mask_tif
from terraseg.config import DataConfig, FolderSource, SceneSource
from terraseg.data.datasets import RandomWindowDataset, collate_samples, make_sample, scene_statistics
from terraseg.data.normalize import NormStats
from terraseg.data.rasters import RasterScene
from terraseg.data.sources import build_scenes, detect_layout, train_val_scenes
from terraseg.errors import InputFileError

NONE = NormStats("none")


def _png(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def test_sample_contract(tmp_path):
    img, _, truth = make_geotiff(tmp_path / "a.tif", 80, 90, bands=5, dtype="int16", seed=1)
    scene = RasterScene(img, mask_path=write_mask_tif(tmp_path / "m.tif", truth, img))
    s = make_sample(scene, 0, 64, 64, NONE)
    assert s["image"].shape == (5, 64, 64) and s["image"].dtype == torch.float32
    assert s["mask"].shape == (64, 64) and s["mask"].dtype == torch.int64
    assert s["crs"] and "32618" in s["crs"] or "UTM" in s["crs"]
    # window (0, 64): its left edge is 64 m east of the scene origin
    assert s["bounds"][0] == pytest.approx(500000.0 + 64)
    assert (s["mask"][:, 26:] == 255).all()  # padding beyond the 90-px scene width is ignored
    batch = collate_samples([s, s])
    assert batch["image"].shape == (2, 5, 64, 64) and len(batch["crs"]) == 2


@pytest.mark.parametrize("dtype", ["uint8", "int16", "uint16"])
def test_raw_samples_normalised_per_batch_equal_worker_normalisation(tmp_path, dtype):
    """The training loader ships raw windows (uint8/int16, uint8 masks); normalize_batch gives the same tensors."""
    from terraseg.data.datasets import normalize_batch

    img, _, truth = make_geotiff(tmp_path / "a.tif", 90, 100, bands=4, dtype=dtype, nodata=0, seed=6)
    scene = RasterScene(img, mask_path=write_mask_tif(tmp_path / "m.tif", truth, img))
    stats = scene_statistics([scene], "meanstd", (2.0, 98.0), 10_000, 0)
    cooked = collate_samples([make_sample(scene, r, c, 64, stats) for r, c in [(0, 0), (40, 50)]])
    raw = collate_samples([make_sample(scene, r, c, 64, None) for r, c in [(0, 0), (40, 50)]])
    assert raw["image"].dtype == {"uint8": torch.uint8, "int16": torch.int16, "uint16": torch.float32}[dtype]
    assert raw["mask"].dtype == torch.uint8
    out = normalize_batch(raw, stats)
    assert torch.equal(out["image"], cooked["image"]) and out["image"].dtype == torch.float32
    assert torch.equal(out["mask"], cooked["mask"]) and out["mask"].dtype == torch.int64
    assert (out["mask"] == 255).any() and (out["mask"] == 1).any()


def test_rare_class_share_centres_windows_on_objects(tmp_path):
    img, _, truth = make_geotiff(tmp_path / "a.tif", 400, 400, seed=2, squares=False)
    truth[300:310, 50:60] = 1  # one small object in a big scene
    scene = RasterScene(img, mask_path=write_mask_tif(tmp_path / "m.tif", truth, img))
    rare = RandomWindowDataset([scene], 64, 40, NONE, rare_class_share=1.0, seed=0)
    uniform = RandomWindowDataset([scene], 64, 40, NONE, rare_class_share=0.0, seed=0)
    hits_rare = sum(int((rare[i]["mask"] == 1).any()) for i in range(40))
    hits_uniform = sum(int((uniform[i]["mask"] == 1).any()) for i in range(40))
    assert hits_rare == 40 and hits_uniform < 10
    # reproducible per (seed, epoch, index); different across epochs
    a = rare[3]["image"]
    assert torch.equal(a, rare[3]["image"])
    rare.set_epoch(1)
    assert not torch.equal(a, rare[3]["image"])


def test_new_windows_every_epoch_with_persistent_workers(tmp_path):
    """Regression: persistent workers keep their dataset copy, so the epoch must travel in the sampler's indexes."""
    from torch.utils.data import DataLoader

    from terraseg.data.datasets import EpochSampler

    img, _, truth = make_geotiff(tmp_path / "a.tif", 200, 200, seed=2)
    scene = RasterScene(img, mask_path=write_mask_tif(tmp_path / "m.tif", truth, img))
    ds = RandomWindowDataset([scene], 32, 8, None, rare_class_share=0.0, seed=0)

    def epochs(workers: int) -> list[torch.Tensor]:
        sampler = EpochSampler(len(ds))
        dl = DataLoader(
            ds, batch_size=4, sampler=sampler, collate_fn=collate_samples, num_workers=workers, persistent_workers=workers > 0
        )
        out = []
        for e in range(2):
            sampler.set_epoch(e)
            out.append(torch.cat([b["image"] for b in dl]))
        return out

    threaded, inline = epochs(2), epochs(0)
    assert not torch.equal(threaded[0], threaded[1])  # epoch 1 draws new windows
    assert torch.equal(threaded[0], inline[0]) and torch.equal(threaded[1], inline[1])  # same windows either way


def test_scene_smaller_than_window_is_padded_not_dropped(tmp_path):
    img, _, truth = make_geotiff(tmp_path / "a.tif", 40, 50, seed=3)
    scene = RasterScene(img, mask_path=write_mask_tif(tmp_path / "m.tif", truth, img))
    ds = RandomWindowDataset([scene], 64, 5, NONE, rare_class_share=0.0)
    for i in range(5):
        assert int((ds[i]["mask"] != 255).sum()) == 40 * 50


def test_holdout_keeps_validation_blocks_and_buffer_out_of_training(tmp_path):
    img, _, truth = make_geotiff(tmp_path / "a.tif", 100, 60, seed=4)
    m = write_mask_tif(tmp_path / "m.tif", truth, img)
    cfg = DataConfig(train=[SceneSource(image=str(img), mask=str(m))], val_fraction=0.2, holdout_block=20, holdout_buffer=4)
    tr, va = train_val_scenes(cfg, 255, 2, 0)
    assert len(tr) == 1 and va
    whole = tr[0].read(0, 0, 100, 60).mask
    for v in va:
        block = v.score_region
        r0, c0 = v.region.row_off + block.row_off, v.region.col_off + block.col_off
        # training never sees a label of a validation block or of its 4-pixel buffer
        assert (whole[max(r0 - 4, 0) : r0 + block.height + 4, max(c0 - 4, 0) : c0 + block.width + 4] == 255).all()
        # validation scores the block's labels only, and they are the truth
        vm = v.read(0, 0, v.height, v.width).mask
        inner = vm[block.row_off : block.row_off + block.height, block.col_off : block.col_off + block.width]
        np.testing.assert_array_equal(inner, truth[r0 : r0 + block.height, c0 : c0 + block.width])
        assert (vm != 255).sum() == block.height * block.width
        assert v.transform.f == pytest.approx(tr[0].transform.f - v.region.row_off)  # georeferencing follows the block


def test_folder_layouts(tmp_path):
    rng = np.random.default_rng(0)
    # seed-style
    for i in range(3):
        _png(tmp_path / "seed/train_frames" / f"f{i}.png", rng.integers(0, 255, (40, 50, 3), dtype=np.uint8))
        _png(tmp_path / "seed/train_masks" / f"f{i}.png", (rng.random((40, 50)) > 0.5).astype(np.uint8))
    # LoveDA: 0 = no-data, 1..7 -> 0..6
    _png(tmp_path / "loveda/Train/Rural/images_png/0.png", rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
    lm = np.tile(np.arange(8, dtype=np.uint8), (32, 4))
    _png(tmp_path / "loveda/Train/Rural/masks_png/0.png", lm)
    # magnetic tiles: antialiased masks binarised with > 0
    _png(tmp_path / "mt/MT_Crack/Imgs/exp1.jpg", rng.integers(0, 255, (30, 40), dtype=np.uint8))
    _png(tmp_path / "mt/MT_Crack/Imgs/exp1.png", np.where(rng.random((30, 40)) > 0.7, 128, 0).astype(np.uint8))
    assert [detect_layout(tmp_path / d) for d in ("seed", "loveda", "mt")] == ["seed", "loveda", "magnetic_tiles"]
    dc = DataConfig(train=[FolderSource(root=str(tmp_path / d)) for d in ("seed", "loveda", "mt")])
    scenes = build_scenes(dc.train, dc, 255, 7)
    assert len(scenes) == 5
    lov = scenes[3].read(0, 0, 32, 32).mask
    assert set(np.unique(lov)) == {255, 0, 1, 2, 3, 4, 5, 6} and (lov[:, 0] == 255).all()
    mt = scenes[4].read(0, 0, 30, 40).mask
    assert set(np.unique(mt)) <= {0, 1} and mt.sum() > 0
    assert scenes[4].read(0, 0, 30, 40).image.shape == (1, 30, 40)


def test_empty_folder_and_class_out_of_range(tmp_path):
    (tmp_path / "empty/images").mkdir(parents=True)
    (tmp_path / "empty/masks").mkdir(parents=True)
    dc = DataConfig(train=[FolderSource(root=str(tmp_path / "empty"))])
    with pytest.raises(InputFileError, match="no image/mask pairs"):
        build_scenes(dc.train, dc, 255, 2)
    _png(tmp_path / "p/images/a.png", np.zeros((8, 8, 3), np.uint8))
    _png(tmp_path / "p/masks/a.png", np.full((8, 8), 5, np.uint8))
    dc = DataConfig(train=[FolderSource(root=str(tmp_path / "p"))])
    with pytest.raises(InputFileError, match="mask values 5 are not class ids"):
        build_scenes(dc.train, dc, 255, 2)[0].read(0, 0, 8, 8)


def test_statistics_reject_mixed_band_counts(tmp_path):
    a, _, _ = make_geotiff(tmp_path / "a.tif", 32, 32, bands=3)
    b, _, _ = make_geotiff(tmp_path / "b.tif", 32, 32, bands=4)
    with pytest.raises(InputFileError, match="different band counts"):
        scene_statistics([RasterScene(a), RasterScene(b)], "meanstd", (2, 98), 1000, 0)


@needs_data("massachusetts-buildings", "massachusetts_buildings.zip")
def test_real_massachusetts_labels_and_uint16_nodata():
    from terraseg.config import VectorLabels

    mb = DATA / "massachusetts-buildings"
    vec = VectorLabels(path=str(mb / "massachusetts_buildings.zip"))
    for tile in ("22978945_15", "23429155_15"):
        s = RasterScene(mb / f"{tile}.tif", vector=vec)
        r = s.read(0, 0, s.height, s.width)
        share = float((r.mask == 1).mean())
        assert 0.03 < share < 0.4, (tile, share)  # buildings burnt where the tiles are
    s = RasterScene(mb / "23429155_15.tif", vector=vec)
    assert s.dtype == "uint16" and s.nodata == 255


@needs_data("loveda-samples")
def test_real_loveda_and_magnetic_tiles_layouts():
    dc = DataConfig(train=[FolderSource(root=str(DATA / "loveda-samples"))])
    scenes = build_scenes(dc.train, dc, 255, 7)
    assert len(scenes) == 3 and scenes[0].read(0, 0, 1024, 1024).mask.max() <= 255
    dc = DataConfig(train=[FolderSource(root=str(DATA / "magnetic-tiles"), include=["MT_Fray"])])
    mt = build_scenes(dc.train, dc, 255, 2)
    assert len(mt) == 26
    r = mt[0].read(0, 0, mt[0].height, mt[0].width)
    assert set(np.unique(r.mask)) == {0, 1}
