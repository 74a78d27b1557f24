"""Never train or score what cannot be learned: fewer than two labelled classes is refused; a 0/1 mask tagged
nodata 0 is planned as background, not as unknown."""

from __future__ import annotations

import numpy as np
import rasterio
import yaml
from typer.testing import CliRunner

from conftest import make_geotiff, tiny_config
from terraseg.cli.main import app
from terraseg.plan import plan_run

runner = CliRunner()


def _tagged_mask(tmp_path, name="img"):
    """A seeded scene and its 0/1 building mask written with nodata 0 (as GDAL writes many masks)."""
    img, _, truth = make_geotiff(tmp_path / f"{name}.tif", 128, 160, seed=3)
    with rasterio.open(img) as src:
        prof = src.profile | dict(count=1, dtype="uint8", nodata=0)
    mask = tmp_path / f"{name}_mask.tif"
    with rasterio.open(mask, "w", **prof) as dst:
        dst.write(truth.astype("uint8")[None])
    assert 0 < truth.mean() < 0.5
    return img, mask, truth


def test_plan_counts_a_tagged_zero_as_background_and_says_how_to_restore_the_tag(tmp_path):
    img, mask, truth = _tagged_mask(tmp_path)
    res = plan_run([str(img)], str(mask), minutes=1, out=tmp_path / "plan.yaml", measure=False)
    src = res.plan.raw["data"]["train"][0]
    assert src["mask_nodata"] == "none"
    assert res.fingerprint.class_pixels[0] > 0 and res.fingerprint.class_pixels[1] > 0  # both classes counted
    text = (tmp_path / "plan.yaml").read_text()
    assert "nodata tag 0 is also its background value" in text and "set mask_nodata: 0 in the source to restore the tag" in text
    cfg = yaml.safe_load(text)
    assert cfg["data"]["train"][0]["mask_nodata"] == "none"


def test_planned_training_reports_the_note_and_trains_on_both_classes(tmp_path, monkeypatch):
    img, mask, truth = _tagged_mask(tmp_path)
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(
        app,
        [
            "train",
            "--data",
            str(img),
            "--labels",
            str(mask),
            "--minutes",
            "0.3",
            "--set",
            "train.max_epochs=1",
            "--set",
            "train.export_onnx=false",
            "--set",
            "train.choose_tiling=false",
            "--set",
            "train.calibrate=false",
            "--set",
            "tracking.enabled=false",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "plan note: the mask's nodata tag 0 is also its background value" in res.output
    pixels = res.output.split("labelled pixels train/val: ")[1].splitlines()[0]
    background = int(pixels.split("background ")[1].split("/")[0].replace(",", ""))
    assert background > 0  # trained on background, not buildings alone


def test_explicit_mask_nodata_zero_is_refused_in_one_line(tmp_path):
    img, mask, _ = _tagged_mask(tmp_path)
    timg, tmask, _ = _tagged_mask(tmp_path, "test")
    cfg = tiny_config(tmp_path, {"image": img, "mask": mask, "test_image": timg, "test_mask": tmask})
    cfg["data"]["train"][0]["mask_nodata"] = 0
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = runner.invoke(app, ["train", str(path)])
    assert res.exit_code == 1
    lines = [x for x in res.output.splitlines() if x.strip()]
    assert len(lines) == 1 and str(mask) in lines[0], res.output
    assert "only class 'object' has labelled pixels (background: none)" in lines[0]
    assert "mask_nodata 0 is also the value of class 'background'" in lines[0] and "set mask_nodata: none" in lines[0]
    assert not (tmp_path / "run" / "model.terraseg").exists()


def test_the_tag_alone_is_refused_too_with_the_setting_that_fixes_it(tmp_path):
    from terraseg.data.census import require_two_classes
    from terraseg.data.rasters import RasterScene
    from terraseg.errors import InputFileError

    img, mask, truth = _tagged_mask(tmp_path)
    scene = RasterScene(img, mask_path=mask)
    assert scene.mask_nodata == 0 and scene.mask_nodata_tag == 0
    counts = np.bincount(scene.read(0, 0, 128, 160).mask[scene.read(0, 0, 128, 160).mask < 2].ravel(), minlength=2)
    try:
        require_two_classes(counts, ["background", "building"], [scene], "train")
    except InputFileError as e:
        assert "nodata tag 0 is also the value of class 'background'" in str(e) and "mask_nodata: none" in str(e)
    else:
        raise AssertionError("one class alone was not refused")
    honest = RasterScene(img, mask_path=mask, mask_nodata="none")
    assert honest.mask_nodata is None
    m = honest.read(0, 0, 128, 160).mask
    assert (m == 0).sum() == (truth == 0).sum() and (m == 1).sum() == (truth == 1).sum()


def test_an_attribute_value_meaning_no_data_with_no_pixels_is_unknown_not_a_class():
    from terraseg.plan import _drop_nodata_codes

    sources = {
        "train": [
            {
                "kind": "scene",
                "image": "x.tif",
                "vector": {"path": "l.gpkg", "attribute": "c", "mapping": {"1": 1, "2": 2, "255": 3}},
            }
        ]
    }
    names, notes = _drop_nodata_codes(sources, ["background", "1", "2", "255"], [5000, 3000, 2000, 0])
    assert names == ["background", "1", "2"]
    assert sources["train"][0]["vector"]["mapping"] == {"1": 1, "2": 2, "255": 255}
    assert len(notes) == 1 and "255 holds 0 labelled pixels" in notes[0] and "vector.mapping" in notes[0]
    kept, none = _drop_nodata_codes(sources, ["background", "1", "255"], [5000, 3000, 2000])  # 255 with pixels: a class
    assert kept == ["background", "1", "255"] and none == []


def test_the_plan_lets_the_budget_end_the_run(tmp_path):
    img, mask, _ = _tagged_mask(tmp_path)
    res = plan_run([str(img)], str(mask), minutes=2, out=None, measure=False)
    train = res.plan.raw["train"]
    assert train["patience"] == train["max_epochs"] >= 2
    assert "the wall budget, not the estimate, ends the run" in res.plan.reasons["train.max_epochs"]


def test_cross_validation_refuses_one_labelled_class_too(tmp_path):
    img, mask, _ = _tagged_mask(tmp_path)
    timg, tmask, _ = _tagged_mask(tmp_path, "test")
    cfg = tiny_config(tmp_path, {"image": img, "mask": mask, "test_image": timg, "test_mask": tmask})
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))  # the mask's own tag 0 honoured: buildings alone
    res = runner.invoke(app, ["cv", str(path), "--folds", "2"])
    assert res.exit_code == 1 and "only class 'object' has labelled pixels" in res.output
    assert "the mask's nodata tag 0 is also the value of class 'background'" in res.output
