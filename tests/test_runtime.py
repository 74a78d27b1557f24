"""Choosing backend, precision and windows per machine (terraseg.infer.runtime, fit_max)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import make_bundle
from terraseg.config import ExperimentConfig
from terraseg.config.inference import InferenceConfig
from terraseg.devices import loader_options, training_precision
from terraseg.infer import runtime
from terraseg.infer.sliding import predictor_for


@pytest.fixture()
def bundle():
    return make_bundle()


def test_explicit_options_win(bundle):
    rt = runtime.choose_runtime(bundle, "cpu", "torch", "32", False)
    assert (rt.backend, rt.precision, rt.channels_last) == ("torch", "32", False) and rt.reason == "explicit options"


def test_cpu_candidates_follow_features_and_options(bundle, monkeypatch):
    monkeypatch.setattr(runtime, "native_bf16", lambda device="cpu": False)
    names = [c.name for c in runtime.cpu_candidates(bundle)]
    assert names[:2] == ["torch:32:nhwc", "torch:32:nchw"] and "onnx:32:nchw" in names and not any("bf16" in n for n in names)
    monkeypatch.setattr(runtime, "native_bf16", lambda device="cpu": True)
    assert "torch:bf16:nhwc" in [c.name for c in runtime.cpu_candidates(bundle)]
    assert [c.name for c in runtime.cpu_candidates(bundle, backend="torch", precision="32", channels_last=False)] == [
        "torch:32:nchw"
    ]
    assert training_precision("cpu") in ("32", "bf16-mixed")  # detected, not assumed


def test_the_choice_is_measured_cached_reused_and_a_damaged_entry_measured_again(bundle, monkeypatch, tmp_path):
    import json

    monkeypatch.setenv("TERRASEG_CACHE", str(tmp_path))
    rt = runtime.choose_runtime(bundle, "cpu", window=64, batch_size=2)
    assert rt.reason == "measured ranking" and rt.name in rt.table
    timed = {k: v["seconds"] for k, v in rt.table.items() if v["seconds"] is not None}
    assert rt.table[rt.name]["seconds"] == min(timed.values())  # the fastest correct candidate
    assert "onnx:32:nchw" in rt.table  # a graph exported on demand, into the cache
    assert list((tmp_path / "onnx").glob("*.onnx"))
    calls = []
    real = runtime.rank_candidates
    monkeypatch.setattr(runtime, "rank_candidates", lambda *a: calls.append(1) or real(*a))
    again = runtime.choose_runtime(bundle, "cpu", window=64, batch_size=2)
    assert again.name == rt.name and "cached" in again.reason and calls == []
    cache = tmp_path / "runtime.json"
    table = json.loads(cache.read_text())
    cache.write_text(json.dumps({k: {"choice": 3} for k in table}))  # a damaged entry
    assert runtime.choose_runtime(bundle, "cpu", window=64, batch_size=2).reason == "measured ranking" and calls == [1]
    cache.write_text("{not json")  # a damaged file
    assert runtime.choose_runtime(bundle, "cpu", window=64, batch_size=2).reason == "measured ranking" and calls == [1, 1]
    assert bundle.model.training is False and next(bundle.model.parameters()).is_contiguous()  # ranking left NCHW weights


def test_a_candidate_that_changes_classes_is_never_chosen(bundle, monkeypatch, tmp_path):
    monkeypatch.setenv("TERRASEG_CACHE", str(tmp_path))
    real = runtime._runs

    class Flipped:
        def __init__(self, run):
            self.run = run

        def probabilities(self, x):
            return self.run.probabilities(x).flip(1)  # another class everywhere

    def runs(b, candidates):
        out = real(b, candidates)
        if "torch:32:nhwc" in out:
            out["torch:32:nhwc"] = Flipped(out["torch:32:nhwc"])
        return out

    monkeypatch.setattr(runtime, "_runs", runs)
    rt = runtime.choose_runtime(bundle, "cpu", backend="torch", precision="32", window=64, batch_size=2)
    assert rt.table["torch:32:nhwc"]["correct"] is False and rt.table["torch:32:nhwc"]["seconds"] is None
    assert rt.name == "torch:32:nchw"


def test_cuda_choice_without_a_gpu_is_still_explicit(bundle):
    rt = runtime.choose_runtime(bundle, "cuda:0", precision="16")
    assert (rt.backend, rt.precision) == ("torch", "16")


def test_small_images_are_one_window_unless_a_window_is_given(bundle):
    auto = predictor_for(bundle, InferenceConfig(backend="torch", precision="32"))
    th, tw, ys, xs = auto.geometry(700, 900)
    assert (th, tw, ys, xs) == (704, 928, [0], [0])
    th, tw, ys, xs = auto.geometry(700, 1100)  # larger than fit_max: tiled with the bundle's window
    assert th == 64 and len(xs) > 1
    fixed = predictor_for(bundle, InferenceConfig(backend="torch", precision="32", window=128))
    assert fixed.geometry(700, 900)[0] == 128


def test_loader_options_follow_the_device():
    cpu = loader_options(None, "cpu")
    assert cpu["pin_memory"] is False and cpu["num_workers"] >= 0
    gpu = loader_options(None, "cuda")
    assert gpu["pin_memory"] is True and gpu["num_workers"] >= 1 and gpu["persistent_workers"] is True
    assert loader_options(3, "cpu")["num_workers"] == 3


def test_training_precision_auto_resolves():
    cfg = ExperimentConfig.model_validate(
        {
            "name": "x",
            "classes": [{"name": "a"}, {"name": "b"}],
            "data": {"train": [{"kind": "scene", "image": "a.tif", "mask": "m.tif"}]},
        }
    )
    assert cfg.train.precision == "auto" and cfg.training_precision() in ("32", "bf16-mixed", "16-mixed")


def test_many_small_images_are_batched_with_the_same_result(bundle, tmp_path):
    from PIL import Image

    from terraseg import predict
    from terraseg.data.sources import scene_from_path

    rng = np.random.default_rng(0)
    paths = []
    for i, (h, w) in enumerate([(40, 50), (40, 50), (40, 50), (70, 60), (40, 50)]):
        p = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    calls = []
    opts = dict(backend="torch", precision="32", batch_size=4)
    pred = predictor_for(bundle, InferenceConfig(**opts))
    inner = pred.backend.probabilities
    pred.backend.probabilities = lambda x: (calls.append(len(x)), inner(x))[1]
    scenes = [scene_from_path(p) for p in paths]
    batched = pred.predict_batch([scenes[i] for i in (0, 1, 2, 4)])
    assert calls == [4]  # four 40x50 images, one forward pass
    for s, (ids, probs) in zip([scenes[i] for i in (0, 1, 2, 4)], batched):
        ref_ids, ref_probs = predictor_for(bundle, InferenceConfig(**opts)).predict_array(s)
        assert np.array_equal(ids, ref_ids)
        np.testing.assert_allclose(probs, ref_probs, atol=1e-5)
    res = predict(bundle, paths, tmp_path / "out", **opts)
    assert not res.failures and len(res.outputs) == 5
    got = np.asarray(Image.open(res.outputs[str(paths[1])]["prediction"]))
    assert np.array_equal(got, np.where(batched[1][0] < 0, 255, batched[1][0]))


def test_a_network_of_the_same_shape_is_not_timed_again_only_checked(bundle, monkeypatch, tmp_path):
    """Speed depends on shapes, not weights: new weights of one architecture (retraining, folds, trials) reuse the
    seconds measured on this machine, and only the fastest candidate's classes are checked."""
    import copy

    import torch

    monkeypatch.setenv("TERRASEG_CACHE", str(tmp_path))
    first = runtime.choose_runtime(bundle, "cpu", window=64, batch_size=2)
    other = copy.deepcopy(bundle)
    with torch.no_grad():
        for p in other.model.parameters():
            p.add_(0.01)
    other._weights_key = None
    assert runtime.weights_key(other) != runtime.weights_key(bundle) and runtime.shape_key(other) == runtime.shape_key(bundle)
    timed = []
    monkeypatch.setattr(runtime, "_measure", lambda *a, **k: timed.append(1) or {})
    again = runtime.choose_runtime(other, "cpu", window=64, batch_size=2)
    assert timed == [] and "shape" in again.reason and again.name == first.name
    checked = [k for k, v in again.table.items() if v["disagreement"] is not None]
    assert checked == [again.name] or again.table[again.name]["correct"]
