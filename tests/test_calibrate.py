"""Temperature scaling: fitted on validation pixels, stored in the bundle, applied by every backend."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from terraseg.training.calibrate import expected_calibration_error, fit_temperature


@pytest.mark.parametrize("k", [1, 3])
def test_fit_temperature_undoes_overconfidence(k):
    g = torch.Generator().manual_seed(0)
    n = 20000
    true = torch.randn(n, max(k, 1), generator=g) * 1.5  # calibrated logits
    if k == 1:
        y = (torch.rand(n, generator=g) < torch.sigmoid(true[:, 0])).long()
    else:
        y = torch.multinomial(torch.softmax(true, 1), 1, generator=g)[:, 0]
    res = fit_temperature(true * 4.0, y)  # a network 4x too confident
    assert res["temperature"] == pytest.approx(4.0, rel=0.15)
    assert res["ece_after"] < res["ece_before"] / 2 and res["nll_after"] < res["nll_before"]


def test_ece_of_a_perfect_and_an_overconfident_model():
    y = torch.tensor([0, 1, 0, 1])
    assert expected_calibration_error(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]]), y) == pytest.approx(0.0)
    assert expected_calibration_error(torch.tensor([[0.99, 0.01]] * 4), y) == pytest.approx(0.49, abs=1e-6)


def test_training_stores_the_temperature_and_backends_apply_it(tmp_path):
    import yaml

    from conftest import make_geotiff, tiny_config, write_mask_tif
    from terraseg.bundle import Bundle
    from terraseg.config import load_config
    from terraseg.data.rasters import RasterScene
    from terraseg.infer.sliding import predictor_for
    from terraseg.training.run import train

    img, _, truth = make_geotiff(tmp_path / "t.tif", 128, 128, seed=1)
    files = {
        "image": img,
        "mask": write_mask_tif(tmp_path / "m.tif", truth, img),
        "test_image": img,
        "test_mask": write_mask_tif(tmp_path / "m2.tif", truth, img),
    }
    cfg = tiny_config(tmp_path, files)
    cfg["train"] |= {"max_epochs": 2, "export_onnx": True}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    res = train(load_config(tmp_path / "c.yaml"))
    b = Bundle.load(res.bundle_path)
    cal = b.manifest.calibration
    assert cal and cal["temperature"] > 0 and cal["pixels"] > 1000 and {"ece_before", "ece_after"} <= set(cal)
    scene = RasterScene(img)
    ids_t, p_t = predictor_for(b, backend="torch", precision="32").predict_array(scene)
    ids_o, p_o = predictor_for(b, backend="onnx").predict_array(scene)
    np.testing.assert_array_equal(ids_t, ids_o)
    np.testing.assert_allclose(p_t, p_o, atol=1e-4)  # both backends apply the same temperature
    b.manifest.calibration = {}
    _, p_raw = predictor_for(b, backend="torch", precision="32").predict_array(scene)
    if abs(cal["temperature"] - 1) > 0.05:
        assert not np.allclose(p_raw, p_t, atol=1e-3)  # the temperature changed the probabilities
