"""95% intervals over the hold-out's units: they cover the true score about 95% of the time, and pair two models."""

from __future__ import annotations

import numpy as np

from terraseg.evaluation.bootstrap import bootstrap_intervals, paired_difference, width_warning


def _population(rng: np.random.Generator, units: int, skill: float) -> np.ndarray:
    """``(U, 2, 2)`` confusion matrices of blocks with varying building share and varying difficulty."""
    cms = np.zeros((units, 2, 2), dtype=np.int64)
    for u in range(units):
        pixels = 4096
        buildings = rng.binomial(pixels, rng.beta(2, 12))
        hit = np.clip(skill + rng.normal(0, 0.12), 0.05, 0.99)  # errors come in blocks, not pixel by pixel
        false_alarm = np.clip(0.04 + rng.normal(0, 0.02), 0.0, 0.5)
        tp = rng.binomial(buildings, hit)
        fp = rng.binomial(pixels - buildings, false_alarm * (1 - skill) + 0.01)
        cms[u] = [[pixels - buildings - fp, fp], [buildings - tp, tp]]
    return cms


def _iou(cm: np.ndarray) -> float:
    return cm[1, 1] / (cm[1, 1] + cm[0, 1] + cm[1, 0])


def test_interval_covers_the_true_score_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    population = _population(rng, 20_000, 0.7)
    truth = _iou(population.sum(0))  # the score of the whole population: what a hold-out estimates
    covered, widths, trials = 0, [], 300
    for t in range(trials):
        sample = population[rng.choice(len(population), 40, replace=False)]
        iv = bootstrap_intervals(sample, draws=1000, seed=t)["iou"]
        covered += iv[0] <= truth <= iv[1]
        widths.append(iv[1] - iv[0])
    coverage = covered / trials
    assert 0.90 <= coverage <= 0.99, coverage
    assert 0.02 < float(np.median(widths)) < 0.2


def test_more_units_give_narrower_intervals_and_one_unit_gives_none():
    rng = np.random.default_rng(1)
    population = _population(rng, 2000, 0.6)
    few = bootstrap_intervals(population[:10])["score"]
    many = bootstrap_intervals(population[:400])["score"]
    assert (many[1] - many[0]) < (few[1] - few[0]) / 3
    one = bootstrap_intervals(population[:1])
    assert one["score"] is None and one["units"] == 1
    assert "1 unit(s)" in width_warning(None, 1, "validation")
    assert "wider than 0.1" in width_warning([0.3, 0.5], 10, "validation") and width_warning([0.5, 0.55], 99, "test") is None


def test_paired_difference_separates_a_better_model_and_not_an_equal_one():
    rng = np.random.default_rng(2)
    a = _population(rng, 60, 0.8)
    b = a.copy()
    b[:, 1, 1] = (a[:, 1, 1] * 0.85).astype(np.int64)  # B misses 15% of A's hits on every block
    b[:, 1, 0] = a[:, 1].sum(1) - b[:, 1, 1]
    d = paired_difference(a, b, key="iou")
    assert d["difference"] > 0 and d["separates"] and d["interval"][0] > 0
    same = paired_difference(a, a.copy(), key="iou")
    assert same["difference"] == 0 and not same["separates"]


def test_compare_command_pairs_two_bundles_on_the_same_units(tmp_path):
    from typer.testing import CliRunner

    from conftest import make_bundle, make_geotiff, write_mask_tif
    from terraseg.cli.main import app

    img, _, truth = make_geotiff(tmp_path / "scene.tif", 300, 320, seed=4)
    mask = write_mask_tif(tmp_path / "mask.tif", truth, img)
    a = make_bundle(path=tmp_path / "a.terraseg", seed=1, classes=("background", "building"))
    b = make_bundle(path=tmp_path / "b.terraseg", seed=2, classes=("background", "building"))
    runner = CliRunner()
    res = runner.invoke(app, ["compare", str(a), str(a), str(img), "--labels", str(mask)])
    assert res.exit_code == 0, res.output
    assert "A - B: 0.0000 [0.0000, 0.0000]" in res.output and "holds 0" in res.output
    res = runner.invoke(app, ["compare", str(a), str(b), str(img), "--labels", str(mask)])
    assert res.exit_code == 0, res.output
    assert res.output.count(" [") >= 3 and "IoU of 'building'" in res.output and "units (blocks of" in res.output
    other = make_bundle(path=tmp_path / "c.terraseg", classes=("x", "y", "z"))
    res = runner.invoke(app, ["compare", str(a), str(other), str(img), "--labels", str(mask)])
    assert res.exit_code == 1 and "the same classes" in res.output


def test_object_scores_match_one_to_one_at_iou_half_on_a_known_answer():
    from terraseg.evaluation.objects import match_objects, object_scores

    truth = np.zeros((200, 200), np.int64)
    pred = np.zeros((200, 200), np.int64)
    truth[10:30, 10:30] = 1  # found exactly: TP
    pred[10:30, 10:30] = 1
    truth[50:70, 50:70] = 1  # found shifted by 4 px: IoU 16x20 / (2*400 - 320) = 0.67: TP
    pred[54:74, 50:70] = 1
    truth[100:120, 100:120] = 1  # found at a quarter: IoU 100/400 = 0.25: FN, and its prediction a FP
    pred[100:110, 100:110] = 1
    truth[150:170, 20:40] = 1  # missed: FN
    pred[150:170, 150:170] = 1  # nothing there: FP
    pred[5:8, 190:193] = 1  # 9 px: under 20 px, left out
    truth[180:200, 180:200] = 255  # unknown ...
    pred[182:198, 182:198] = 1  # ... so a prediction there is not counted
    r = match_objects(pred, truth, 1, 255, unit_side=100)
    assert (r["tp"], r["fp"], r["fn"]) == (2, 2, 2)
    assert r["units"].sum(0).tolist() == [2, 2, 2] and r["units"].shape == (4, 3)
    s = object_scores(r["units"])
    assert s["precision"] == 0.5 and s["recall"] == 0.5 and s["f1"] == 0.5
    assert s["intervals"]["f1"] is not None and s["intervals"]["f1"][0] <= 0.5 <= s["intervals"]["f1"][1]
