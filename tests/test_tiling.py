"""The tiling a bundle predicts small images with is chosen on validation scenes (terraseg.training.tiling)."""

from __future__ import annotations

import torch

from conftest import make_bundle, make_geotiff, tiny_config, write_mask_tif
from terraseg.config import ExperimentConfig
from terraseg.data.normalize import NormStats
from terraseg.data.rasters import RasterScene
from terraseg.infer.sliding import predictor_for
from terraseg.training.tiling import choose_tiling

STATS = NormStats("meanstd", [80.0] * 3, [40.0] * 3, [0.0] * 3, [255.0] * 3)


class SizeDependent(torch.nn.Module):
    """Finds the bright squares only in windows at most (``small=True``) or wider than (False) 64 px."""

    def __init__(self, small: bool) -> None:
        super().__init__()
        self.small = small
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bright = (x.mean(1, keepdim=True) > 1.5).float() * 2 - 1  # squares are 204 (3.1 normalised), the rest < 85
        sees = (x.shape[-1] <= 64) == self.small
        obj = self.scale * 10 * (bright if sees else -torch.ones_like(bright))
        return torch.cat([torch.zeros_like(obj), obj], 1)


def test_the_tiling_that_validates_better_is_recorded_and_used(tmp_path):
    scenes = []
    for i in range(2):
        img, _, truth = make_geotiff(tmp_path / f"v{i}.tif", 96, 160, seed=i)
        scenes.append(RasterScene(img, mask_path=write_mask_tif(tmp_path / f"m{i}.tif", truth, img)))
    files = {"image": img, "mask": tmp_path / "m1.tif", "test_image": img, "test_mask": tmp_path / "m1.tif"}
    cfg = ExperimentConfig.model_validate(tiny_config(tmp_path, files))
    small = choose_tiling(SizeDependent(small=True), scenes, STATS, cfg, predict_window=64)
    assert small["sliding"] > 0.99 and small["one_window"] < 0.01 and small["fit_max"] == 0
    large = choose_tiling(SizeDependent(small=False), scenes, STATS, cfg, predict_window=64)
    assert large["one_window"] > 0.99 and large["sliding"] < 0.01 and large["fit_max"] is None
    assert (
        choose_tiling(
            SizeDependent(small=True),
            [RasterScene(make_geotiff(tmp_path / "big.tif", 40, 1100)[0], mask_path=None)],
            STATS,
            cfg,
            64,
        )
        is None
    )  # nothing fits

    for fit_max, one_window in ((None, True), (0, False)):
        b = make_bundle(classes=("background", "object"), stats=STATS, model=SizeDependent(small=True), fit_max=fit_max)
        assert (predictor_for(b).single_window(scenes[0]) is not None) == one_window
        assert predictor_for(b, window=64).single_window(scenes[0]) is None  # an explicit window always tiles
