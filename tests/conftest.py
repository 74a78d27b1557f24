"""Shared fixtures: seeded synthetic rasters and vectors, the real-data root, tiny configs."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may download weights in tests
# Tests never see the caller's terraseg settings (a data root, a download mirror, a cache folder, an output limit):
# each test sets what it needs. Kept: the knobs of the test run itself (a browser, more fuzzing examples).
TEST_KNOBS = {"TERRASEG_CHROMIUM", "TERRASEG_FUZZ_EXAMPLES", "TERRASEG_FUZZ_RANDOM", "TERRASEG_SCHEMA_EXAMPLES"}
for _name in [n for n in os.environ if n.startswith("TERRASEG_") and n not in TEST_KNOBS]:
    del os.environ[_name]
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from terraseg.settings import data_root

DATA = data_root()


def find_chromium() -> str | None:
    """A Chromium the browser tests may start: ``$TERRASEG_CHROMIUM``, else ``chromium``, ``chromium-browser`` or
    ``google-chrome`` on the PATH (None when there is none: the test is skipped, nothing is installed)."""
    import shutil

    env = os.environ.get("TERRASEG_CHROMIUM")
    if env:
        return env if Path(env).is_file() else None
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


CHROMIUM = find_chromium()
NO_CHROMIUM = (
    "no Chromium found: install one (Debian: `sudo make browser` or apt-get install chromium) "
    "or set TERRASEG_CHROMIUM=/path/to/chrome"
)


def needs_data(*parts: str):
    """Mark a test ``integration`` (it reads ../shared/datasets) and skip it unless the data set path exists."""
    skip = pytest.mark.skipif(not (DATA.joinpath(*parts)).exists(), reason=f"real data {'/'.join(parts)} not available")

    def mark(fn):
        return pytest.mark.integration(skip(fn))

    return mark


def make_geotiff(
    path: Path,
    height: int = 96,
    width: int = 128,
    bands: int = 3,
    dtype: str = "uint8",
    nodata=None,
    seed: int = 0,
    crs: str = "EPSG:32618",
    origin=(500000.0, 4500000.0),
    res: float = 1.0,
    squares: bool = True,
) -> tuple[Path, np.ndarray, np.ndarray]:
    """Write a seeded synthetic GeoTIFF with bright squares (the 'objects') on a noisy background.

    Returns:
        (path, image (C, H, W), truth mask (H, W) with 1 inside squares).
    """
    rng = np.random.default_rng(seed)
    hi = 255 if dtype == "uint8" else 4000
    img = rng.integers(0, hi // 3, size=(bands, height, width)).astype(dtype)
    truth = np.zeros((height, width), dtype=np.int64)
    if squares:
        for _ in range(max(2, height * width // 1500)):
            r, c = rng.integers(0, height - 12), rng.integers(0, width - 12)
            s = rng.integers(6, 12)
            truth[r : r + s, c : c + s] = 1
        img[:, truth == 1] = hi * 0.8
    if nodata is not None:
        img[:, :4, :4] = nodata
    profile = dict(
        driver="GTiff",
        height=height,
        width=width,
        count=bands,
        dtype=dtype,
        crs=crs,
        transform=from_origin(origin[0], origin[1] + height * res, res, res),
        nodata=nodata,
    )
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(img)
    return path, img, truth


def write_mask_tif(path: Path, truth: np.ndarray, like: Path) -> Path:
    """Write a mask raster on the grid of ``like``."""
    with rasterio.open(like) as src:
        prof = src.profile | dict(count=1, dtype="uint8", nodata=None)
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(truth.astype("uint8")[None])
    return path


@pytest.fixture
def scene_files(tmp_path: Path) -> dict[str, Path]:
    """A labelled synthetic scene (image + mask raster) and a second one for testing."""
    img, _, truth = make_geotiff(tmp_path / "train.tif", 128, 160, seed=1)
    mask = write_mask_tif(tmp_path / "train_mask.tif", truth, img)
    timg, _, ttruth = make_geotiff(tmp_path / "test.tif", 100, 140, seed=2)
    tmask = write_mask_tif(tmp_path / "test_mask.tif", ttruth, timg)
    return {"image": img, "mask": mask, "test_image": timg, "test_mask": tmask}


def tiny_config(tmp_path: Path, files: dict[str, Path], **over) -> dict:
    """A config dict for a tiny, fast run on synthetic data."""
    cfg = {
        "name": "tiny",
        "classes": [{"name": "background", "color": "#000000"}, {"name": "object", "color": "#ff0000"}],
        "data": {
            "train": [{"kind": "scene", "image": str(files["image"]), "mask": str(files["mask"])}],
            "test": [{"kind": "scene", "image": str(files["test_image"]), "mask": str(files["test_mask"])}],
            "window": 64,
            "samples_per_epoch": 8,
            "batch_size": 4,
        },
        "model": {"arch": "plain_unet", "base_filters": 8, "encoder_depth": 3},
        "train": {"max_epochs": 1, "seed": 0},
        "tracking": {"enabled": False},
        "output_dir": str(tmp_path / "run"),
    }
    for k, v in over.items():
        cfg[k] = cfg[k] | v if isinstance(v, dict) and isinstance(cfg.get(k), dict) else v
    return cfg


def shipped_config(name: str, tmp_path: Path, edit=None, tracking: bool = False) -> Path:
    """Copy of ``configs/<name>.yaml`` reading the real data root and writing its run under ``tmp_path``.

    ``edit(cfg)`` may change the raw mapping first (e.g. fewer epochs). Returns the written YAML path.
    """
    import yaml

    cfg = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / f"{name}.yaml").read_text())
    cfg["data"]["data_root"] = str(DATA)
    cfg["tracking"] = {"enabled": tracking}
    cfg["output_dir"] = str(tmp_path / "run")
    if edit:
        edit(cfg)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """A tiny trained segmentation bundle for 3-band uint8 GeoTIFFs (one epoch of a plain U-Net), trained once per test run."""
    import yaml
    from typer.testing import CliRunner

    from terraseg.cli.main import app

    tmp = tmp_path_factory.mktemp("tiny-bundle")
    img, _, truth = make_geotiff(tmp / "train.tif", 96, 96, seed=1)
    mask = write_mask_tif(tmp / "m.tif", truth, img)
    cfg = tiny_config(
        tmp,
        {"image": img, "mask": mask, "test_image": img, "test_mask": mask},
        train={"max_epochs": 1, "seed": 0, "export_onnx": False, "calibrate": False, "choose_tiling": False},
    )
    (tmp / "c.yaml").write_text(yaml.safe_dump(cfg))
    res = CliRunner().invoke(app, ["train", str(tmp / "c.yaml")])
    assert res.exit_code == 0, res.output
    return tmp / "run" / "model.terraseg"


def make_bundle(
    bands: int = 3,
    classes=("a", "b"),
    stats=None,
    window: int = 64,
    predict_window: int | None = None,
    base_filters: int = 4,
    model=None,
    path: Path | None = None,
    extras: dict | None = None,
    name: str = "t",
    dtype: str = "uint8",
    seed: int = 0,
    **input_fields,
):
    """A bundle of a tiny plain U-Net (seeded random weights): the one way tests build a bundle by hand.

    Args:
        bands: input bands.
        classes: class names, or ``ClassSpec`` objects.
        stats: ``NormStats`` (default 'none').
        window: training and prediction windows (pixels).
        predict_window: training and prediction windows (pixels).
        base_filters: U-Net width.
        model: a network to use instead (its config stays the plain U-Net's).
        path: save there and return the path.
        extras: extra bundle members (``{name: bytes}``).
        name: manifest name, input dtype, weight seed.
        dtype: manifest name, input dtype, weight seed.
        seed: manifest name, input dtype, weight seed.
        input_fields: more ``InputSpec`` fields (``nodata``, ``fit_max``...).

    Returns:
        The :class:`Bundle`, or the saved file's path when ``path`` is given.
    """
    import torch

    from terraseg.bundle import Bundle, BundleManifest, InputSpec
    from terraseg.config import ClassSpec, ModelConfig
    from terraseg.data.normalize import NormStats
    from terraseg.models.factory import build_model

    mc = ModelConfig(arch="plain_unet", base_filters=base_filters, encoder_depth=3)
    specs = [c if isinstance(c, ClassSpec) else ClassSpec(name=c) for c in classes]
    if model is None:
        torch.manual_seed(seed)
        model = build_model(mc, bands, len(specs))
    spec = InputSpec(
        bands=bands,
        dtype=dtype,
        normalization=stats or NormStats("none"),
        train_window=window,
        predict_window=predict_window or window,
        **input_fields,
    )
    bundle = Bundle(BundleManifest(name=name, model=mc, classes=specs, input=spec), model, extras or {})
    return bundle.save(path) if path is not None else bundle


def short_run(tmp_path: Path, *sets: str) -> list[str]:
    """``--set`` options of a CI-sized run: one epoch of four windows into ``tmp_path/run``, without tracking, ONNX export
    or challengers (and any further ``key=value`` in ``sets``)."""
    keys = ["train.max_epochs=1", "data.samples_per_epoch=4", f"output_dir={tmp_path / 'run'}", "tracking.enabled=false"]
    return [a for s in (*keys, "train.export_onnx=false", "train.challengers=[]", *sets) for a in ("--set", s)]
