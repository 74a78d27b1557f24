"""INT8 graphs: calibrated on the training windows stored in the bundle, kept only when they agree with float32."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import yaml

from conftest import make_geotiff, tiny_config, write_mask_tif
from terraseg.bundle import CALIBRATION, ONNX, ONNX_INT8, Bundle
from terraseg.config import load_config
from terraseg.config.inference import InferenceConfig
from terraseg.errors import BundleError
from terraseg.infer import onnx as onnx_mod
from terraseg.infer.sliding import predictor_for
from terraseg.prediction.quantize import quantize_int8
from terraseg.training.run import train


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("q")
    img, _, truth = make_geotiff(tmp / "a.tif", 128, 128, seed=1)
    files = {"image": img, "mask": write_mask_tif(tmp / "m.tif", truth, img), "test_image": img}
    files["test_mask"] = files["mask"]
    cfg = tiny_config(tmp, files)
    p = tmp / "c.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return train(load_config(p)).bundle_path, img


def test_training_stores_graph_and_calibration_windows(trained):
    bundle_path, _ = trained
    with zipfile.ZipFile(bundle_path) as z:
        names = set(z.namelist())
        x = np.load(z.open(CALIBRATION), allow_pickle=False)
    assert {ONNX, CALIBRATION} <= names
    assert x.dtype == np.uint8 and x.shape[1:] == (3, 64, 64) and len(x) >= 1


def test_int8_graph_added_and_runs(trained, tmp_path):
    bundle_path, img = trained
    out = tmp_path / "q.terraseg"
    rep = quantize_int8(bundle_path, out=out, max_disagreement=1.0, window=64)
    assert rep.windows >= 1 and 0 <= rep.disagreement <= 1 and "stored" in rep.calibrated_on
    b = Bundle.load(out)
    assert ONNX_INT8 in b.extras and b.manifest.exports["onnx_int8"]["class_disagreement_vs_fp32"] == rep.disagreement
    from terraseg.infer.inputs import open_input

    ids, _ = predictor_for(b, InferenceConfig(backend="onnx-int8")).predict_array(open_input(b, img))
    ref, _ = predictor_for(b, InferenceConfig(backend="onnx")).predict_array(open_input(b, img))
    assert ids.shape == ref.shape and (ids == ref).mean() > 0.9


def test_int8_refused_above_the_limit(trained, tmp_path, monkeypatch):
    bundle_path, _ = trained
    fp32 = Bundle.load(bundle_path).extras[ONNX]

    class Flipping(onnx_mod.OnnxBackend):  # the quantized graph answers with the classes swapped
        def __init__(self, data, *a, **k):
            super().__init__(data, *a, **k)
            self.flip = data != fp32

        def __call__(self, batch):
            p = super().__call__(batch)
            return p[:, ::-1] if self.flip else p

    monkeypatch.setattr(onnx_mod, "OnnxBackend", Flipping)
    with pytest.raises(BundleError, match=r"changes the class of .*% of the calibration pixels \(limit 1.00%\); not saved"):
        quantize_int8(bundle_path, out=tmp_path / "x.terraseg", window=64)
    assert not (tmp_path / "x.terraseg").exists()
    with pytest.raises(BundleError, match="no INT8 ONNX graph"):
        predictor_for(Bundle.load(bundle_path), InferenceConfig(backend="onnx-int8"))
