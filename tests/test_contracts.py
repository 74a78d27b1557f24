"""The shared contracts: the bundle's input spec and its upgrader, the one prediction writer, errors at
the edges, and an import graph without cycles."""

from __future__ import annotations

import ast
import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rich.markup import escape
from typer.testing import CliRunner

from conftest import make_bundle, make_geotiff
from terraseg import predict
from terraseg.bundle import FORMAT_VERSION, Bundle, InputSpec
from terraseg.cli.main import app
from terraseg.config import ClassSpec, ModelConfig
from terraseg.data.normalize import NormStats
from terraseg.errors import BundleError, ConfigError
from terraseg.infer.inputs import open_input
from terraseg.io.predictions import PredictionWriter, class_encoding, write_prediction
from terraseg.io.raster import Grid

SRC = Path(__file__).resolve().parents[1] / "src" / "terraseg"


def _spec(**kw) -> InputSpec:
    base = dict(bands=3, dtype="uint16", normalization=NormStats("none"), train_window=64, predict_window=256)
    return InputSpec(**(base | kw))


def test_select_bands_picks_or_refuses():
    pick = _spec(band_indexes=[4, 3, 2], source_bands=13)
    assert pick.select_bands(13, "s2.tif") == [4, 3, 2]
    with pytest.raises(BundleError, match=r"s2\.tif: image has 3 bands but the model reads bands \[4, 3, 2\] of 13-band images"):
        pick.select_bands(3, "s2.tif")
    every = _spec(band_indexes=[1, 2, 3], source_bands=3)
    assert every.select_bands(3) is None
    with pytest.raises(BundleError, match="x.tif: image has 13 bands but the model expects 3"):
        every.select_bands(13, "x.tif")  # never silently the first three bands
    legacy = _spec(band_indexes=[4, 3, 2])  # no source count recorded: any raster holding those bands
    assert legacy.select_bands(8) == [4, 3, 2]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    mc = ModelConfig(arch="plain_unet", base_filters=4, encoder_depth=3)
    torch.manual_seed(0)
    stats = NormStats("meanstd", [100.0] * 3, [50.0] * 3, [0.0] * 3, [255.0] * 3)
    return make_bundle(
        classes=[ClassSpec(name="background"), ClassSpec(name="object", color="#ff0000")],
        stats=stats,
        model=build(mc),
        name="tiny",
        path=tmp_path_factory.mktemp("b") / "tiny.terraseg",
    )


def build(mc):
    from terraseg.models.factory import build_model

    return build_model(mc, 3, 2)


def test_every_reader_refuses_more_bands_than_the_model(bundle, tmp_path):
    b = Bundle.load(bundle)
    s2, _, truth = make_geotiff(tmp_path / "s2.tif", 64, 64, bands=13)
    with pytest.raises(BundleError, match="s2.tif: image has 13 bands but the model expects 3"):
        open_input(b, s2)
    res = CliRunner().invoke(app, ["evaluate", str(bundle), str(s2), "--labels", str(s2), "--out", str(tmp_path / "e")])
    assert res.exit_code == 1 and "13 bands but the model expects 3" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(app, ["export", str(bundle), "--check", str(s2), "--out", str(tmp_path / "x.terraseg")])
    assert res.exit_code == 1 and "13 bands but the model expects 3" in res.output
    assert not (tmp_path / "x.terraseg").exists()


def _rewrite_manifest(src: Path, dst: Path, edit) -> Path:
    with zipfile.ZipFile(src) as z:
        members = {n: z.read(n) for n in z.namelist()}
    raw = json.loads(members["manifest.json"])
    edit(raw)
    members["manifest.json"] = json.dumps(raw).encode()
    with zipfile.ZipFile(dst, "w") as z:
        for n, data in members.items():
            z.writestr(n, data)
    return dst


def test_version_1_bundles_load_through_the_upgrader(bundle, tmp_path):
    def to_v1(raw):
        raw["format_version"] = 1
        inp = raw["input"]
        inp["window"] = 128
        for k in ("train_window", "predict_window", "input_size", "source_bands"):
            inp.pop(k)

    old = Bundle.load(_rewrite_manifest(bundle, tmp_path / "v1.terraseg", to_v1))
    spec = old.manifest.input
    assert old.manifest.format_version == FORMAT_VERSION
    assert (spec.train_window, spec.predict_window, spec.input_size) == (128, 256, None)
    assert isinstance(spec.normalization, NormStats) and spec.normalization.mean == [100.0] * 3

    def classifier_v1(raw):
        to_v1(raw)
        raw["task"] = "classification"

    with pytest.raises(BundleError):  # a classification manifest with a segmentation network: weights do not fit
        Bundle.load(
            _rewrite_manifest(
                bundle, tmp_path / "c1.terraseg", lambda r: (classifier_v1(r), r["model"].update(arch="classifier"))
            )
        )

    def newer(raw):
        raw["format_version"] = FORMAT_VERSION + 1

    with pytest.raises(BundleError, match="newer than this terraseg supports"):
        Bundle.load(_rewrite_manifest(bundle, tmp_path / "v9.terraseg", newer))


def test_prediction_writer_encoding_and_blocks(tmp_path):
    grid = Grid(70, 50, rasterio.crs.CRS.from_epsg(32618), rasterio.transform.from_origin(500000, 4500000, 2, 2))
    ids = np.random.default_rng(0).integers(0, 3, (50, 70))
    ids[:5, :5] = -1
    probs = np.random.default_rng(1).random((3, 50, 70)).astype(np.float32)
    target, ptarget = tmp_path / "p.tif", tmp_path / "p_probs.tif"
    with PredictionWriter(target, grid, ["a", "b", "c"], ["#000000", "#00ff00", "#0000ff"], ptarget, compress="zstd") as w:
        w.write(0, 0, ids[:20], probs[:, :20])
        w.write(20, 0, ids[20:], probs[:, 20:])
        assert not target.exists()  # nothing under the final name until complete
    with rasterio.open(target) as ds, rasterio.open(ptarget) as ps:
        assert ds.dtypes[0] == "uint8" and ds.nodata == 255 and ds.crs.to_epsg() == 32618 and ds.transform == grid.transform
        out = ds.read(1)
        assert (out[:5, :5] == 255).all() and np.array_equal(out[5:], ids[5:])
        assert ds.colormap(1)[1] == (0, 255, 0, 255) and ds.colormap(1)[255][3] == 0
        assert ds.profile["compress"].lower() == "zstd"
        p = ps.read()
        assert ps.descriptions == ("a", "b", "c") and np.isnan(p[:, :5, :5]).all() and np.allclose(p[:, 5:], probs[:, 5:])
    assert class_encoding(300) == ("uint16", 65535)
    many = write_prediction(tmp_path / "m.tif", grid, np.full((50, 70), 299), [str(i) for i in range(300)])
    with rasterio.open(many["prediction"]) as ds:
        assert ds.dtypes[0] == "uint16" and ds.nodata == 65535 and (ds.read(1) == 299).all()


def test_prediction_writer_leaves_nothing_when_interrupted(tmp_path):
    grid = Grid(32, 32)
    with pytest.raises(RuntimeError):
        with PredictionWriter(tmp_path / "x.tif", grid, ["a", "b"], probabilities=tmp_path / "x_probs.tif") as w:
            w.write(0, 0, np.zeros((16, 32), int), np.zeros((2, 16, 32), np.float32))
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_png_targets_and_bad_codec(tmp_path):
    paths = write_prediction(tmp_path / "p.png", Grid(20, 10), np.ones((10, 20), int), ["a", "b"])
    from PIL import Image

    assert np.asarray(Image.open(paths["prediction"])).shape == (10, 20)
    with pytest.raises(ConfigError, match="compression"):
        PredictionWriter(tmp_path / "x.tif", Grid(4, 4), ["a", "b"], compress="jpeg2000")


@pytest.mark.parametrize(
    "args,expect,code",
    [
        (["--window", "100"], "multiple of 32", 1),
        (["--overlap", "0.95"], "overlap", 1),
        (
            ["--backend", "tensorrt"],
            "onnx-int8",
            2,
        ),  # a choice outside the field's Literal: Click's usage error names the choices
        (["--input-range", "0,2047,9"], "input_range", 1),
    ],
)
def test_bad_predict_options_are_one_line(bundle, tmp_path, args, expect, code):
    img, _, _ = make_geotiff(tmp_path / "a.tif", 40, 40)
    res = CliRunner().invoke(app, ["predict", str(bundle), str(img), "--out", str(tmp_path / "o"), *args])
    assert res.exit_code == code and expect in res.output and "Traceback" not in res.output
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "command,model,nested,left_out",
    [
        (
            "predict",
            "PredictConfig",
            ("inference", "ray"),
            {"inputs", "out_dir", "ray.replicas", "ray.max_replicas", "inference.window"},
        ),
        ("evaluate", "EvaluateConfig", ("inference",), {"out_dir", "split"}),
        ("serve", "ServeConfig", ("inference", "ray"), {"models", "api_key", "ray.num_workers"}),
    ],
)
def test_command_options_are_the_config_fields(command, model, nested, left_out):
    """Every field of the command's config model (nested ones flattened) is an option, with the field's description as its help."""
    import typer.main

    import terraseg.config.inference as ci

    cls = getattr(ci, model)
    click = typer.main.get_command(app).commands[command]
    helps = {p.name: p.help or "" for p in click.params}
    fields = {n: f for n, f in cls.model_fields.items() if n not in nested and n not in left_out}
    for parent in nested:
        fields |= {s: f for s, f in cls.model_fields[parent].annotation.model_fields.items() if f"{parent}.{s}" not in left_out}
    for name, f in fields.items():
        assert name in helps, f"{command}: no option for {name}"
        want = escape(f.description)[:40]  # rich markup escaped: `[low, high]` shows as text
        assert helps[name].startswith(want), f"{command} --{name}: help is not the field's description"


def test_unwritable_output_folder_is_one_line(bundle, tmp_path):
    img, _, _ = make_geotiff(tmp_path / "a.tif", 40, 40)
    (tmp_path / "file").write_text("in the way")
    res = CliRunner().invoke(app, ["predict", str(bundle), str(img), "--out", str(tmp_path / "file" / "sub")])
    assert res.exit_code == 1 and "cannot write" in res.output and "Traceback" not in res.output


def test_colliding_output_names_refused_before_any_work(bundle, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, _, _ = make_geotiff(tmp_path / "a" / "x.tif", 40, 40)
    b, _, _ = make_geotiff(tmp_path / "b" / "x.tif", 40, 40, seed=1)
    with pytest.raises(ConfigError, match="would both write outputs named 'x'"):
        predict(bundle, [a, b], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _import_graph() -> dict[str, set[str]]:
    mods = {}
    for p in SRC.rglob("*.py"):
        name = ".".join(("terraseg",) + p.relative_to(SRC).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = p
    graph: dict[str, set[str]] = {}
    for name, p in mods.items():
        deps = set()
        for node in ast.walk(ast.parse(p.read_text())):  # module-level and function-level imports alike
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("terraseg"):
                for a in node.names:
                    deps.add(f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in mods else node.module)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name in mods}
        graph[name] = {d for d in deps if d in mods and d != name}  # parent packages included
    return graph


def test_import_graph_has_no_cycle():
    graph = _import_graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(d) :] + [d]))
            if d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


# the layers, lowest first: a module may import its own layer and those below, never one above
LAYERS = [
    (
        "terraseg.errors",
        "terraseg.version",
        "terraseg.settings",
        "terraseg.formats",
        "terraseg.progress",
        "terraseg.devices",
        "terraseg.interrupt",
        "terraseg.config",
    ),
    ("terraseg.io",),
    ("terraseg.data",),
    ("terraseg.prepare",),
    ("terraseg.models",),
    ("terraseg.bundle",),
    ("terraseg.tracking",),
    ("terraseg.infer",),
    ("terraseg.evaluation", "terraseg.prediction"),
    ("terraseg.tasks",),  # the one seam: below every door that asks it
    ("terraseg.training",),
    ("terraseg.plan", "terraseg.serve"),
    ("terraseg.api",),
    ("terraseg.cli", "terraseg.__main__", "terraseg"),
]


def _layer(module: str) -> int:
    for i, prefixes in enumerate(LAYERS):
        if any(module == p or (p != "terraseg" and module.startswith(p + ".")) for p in prefixes):
            return i
    raise AssertionError(f"{module} is in no layer of test_contracts.LAYERS")


def test_no_layer_imports_a_layer_above_it():
    """Parent packages included: ``terraseg.config.inference`` importing ``terraseg.config`` counts."""
    graph = _import_graph()
    up = [f"{m} imports {d}" for m, deps in sorted(graph.items()) for d in sorted(deps) if _layer(d) > _layer(m)]
    assert not up, "\n".join(up)


def test_doors_decide_per_task_only_through_tasks():
    """serve/, cli/, plan/ and training/ never compare a task's name: they ask :mod:`terraseg.tasks` (``task_for``,
    ``task_named``) what the task does, so a third task is one module there."""
    from terraseg.tasks import TASKS

    found = []
    for pkg in ("serve", "cli", "plan", "training", "api.py"):
        for p in sorted((SRC / pkg).rglob("*.py")) if (SRC / pkg).is_dir() else [SRC / pkg]:
            for node in ast.walk(ast.parse(p.read_text())):
                if isinstance(node, ast.Compare):
                    consts = [n for n in ast.walk(node) if isinstance(n, ast.Constant) and n.value in TASKS]
                    found += [f"{p.relative_to(SRC)}:{node.lineno} compares with '{c.value}'" for c in consts]
    assert not found, "\n".join(found)
    assert len(TASKS) == 2  # a new task: its module, its line in TASKS, its rows in tasks/options.py (docs/architecture.md)


def test_public_functions_of_the_core_are_documented():
    """Every public function of io/, data/, infer/, prediction/, serve/, training/, evaluation/, models/ and tasks/ has a docstring,
    with an Args section when it takes arguments (Lightning's ``on_*`` hooks are documented by Lightning)."""
    problems = []
    for pkg in ("io", "data", "infer", "prediction", "serve", "training", "evaluation", "models", "tasks"):
        for p in sorted((SRC / pkg).glob("*.py")):
            for node in ast.parse(p.read_text()).body:
                if not isinstance(node, (ast.FunctionDef, ast.ClassDef)) or node.name.startswith("_"):
                    continue
                doc = ast.get_docstring(node)
                if not doc:
                    problems.append(f"{p.name}:{node.name} has no docstring")
                elif (
                    isinstance(node, ast.FunctionDef)
                    and [a for a in node.args.args + node.args.kwonlyargs if a.arg not in ("self", "cls")]
                    and "Args:" not in doc
                ):
                    problems.append(f"{p.name}:{node.name} documents no Args")
                if isinstance(node, ast.ClassDef):
                    problems += [
                        f"{p.name}:{node.name}.{m.name} has no docstring"
                        for m in node.body
                        if isinstance(m, ast.FunctionDef) and not m.name.startswith(("_", "on_")) and not ast.get_docstring(m)
                    ]
    assert not problems, "\n".join(problems)


def test_band_descriptions_name_the_bands_of_stats_and_bundles(tmp_path):
    """band descriptions of a GeoTIFF (B02, B03, B04) name the bands in `stats` and in a network bundle."""
    import yaml

    from conftest import tiny_config, write_mask_tif
    from terraseg.config import load_config
    from terraseg.config.prep import StatsConfig
    from terraseg.prepare.stats import compute_statistics
    from terraseg.training.run import train

    img, _, truth = make_geotiff(tmp_path / "s2.tif", 96, 96, seed=4)
    with rasterio.open(img, "r+") as ds:
        for k, name in enumerate(["B02", "B03", "B04"], start=1):
            ds.set_band_description(k, name)
    r = compute_statistics(StatsConfig(images=[str(img)], out_dir=str(tmp_path / "st")))
    assert [b["name"] for b in r.stats["bands"]] == ["B02", "B03", "B04"]
    files = {"image": img, "mask": write_mask_tif(tmp_path / "m.tif", truth, img), "test_image": img}
    files["test_mask"] = files["mask"]
    cfg = tiny_config(tmp_path, files)
    cfg["train"]["export_onnx"] = False
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(cfg))
    assert Bundle.load(train(load_config(p)).bundle_path).manifest.input.band_names == ["B02", "B03", "B04"]


def test_progress_helper_shows_nests_and_yields_to_other_live_displays(tmp_path, capsys):
    """one rich progress display for long commands; off unless enabled; silent under another live display."""
    from rich.live import Live

    from terraseg import progress

    assert not progress.enabled()  # the library draws nothing unless the CLI asks
    calls = []
    with progress.task("x", 10) as advance:
        advance(3)
        calls.append("ran")
    progress.enable(True)
    try:
        with progress.task("outer", 4, "rows") as outer, progress.task("inner", 2) as inner:  # one display, two tasks
            outer(4)
            inner(2)
        with Live("training bar"):  # Lightning's bar owns the terminal: our task must not raise LiveError
            with progress.task("validation", 5) as advance:
                advance(5)
    finally:
        progress.enable(False)
    assert calls == ["ran"]


def test_cli_quiet_flag_and_progress_off_without_terminal(tmp_path):
    from typer.testing import CliRunner

    from conftest import make_geotiff
    from terraseg import progress
    from terraseg.cli.main import app

    path, _, _ = make_geotiff(tmp_path / "s.tif", 40, 50)
    r = CliRunner().invoke(app, ["--quiet", "stats", str(path), "--out", str(tmp_path / "st")])
    assert r.exit_code == 0, r.output
    assert not progress.enabled()  # CliRunner's stderr is no terminal (and --quiet): nothing drawn
    r = CliRunner().invoke(app, ["stats", str(path), "--out", str(tmp_path / "st2")])
    assert r.exit_code == 0 and "statistics, pass" not in r.output


def test_the_engine_writes_no_files():
    """``infer/`` computes; outputs are written by the commands (predict/, evaluate/, the bundle's save), and the one
    thing the engine keeps, its measured choices, goes through the cache module (terraseg.io.cachefile)."""
    import re

    forbidden = re.compile(
        r"write_text\(|write_bytes\(|\.save\(|mkdir\(|to_parquet\(|to_file\(|write_png\(|PredictionWriter|"
        r"atomic|open\([^)]*[\"'][wa]b?[\"']|json\.dump\(|np\.save\(|shutil\."
    )
    found = [
        f"{p.name}:{i}: {line.strip()}"
        for p in sorted((SRC / "infer").glob("*.py"))
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if forbidden.search(line) and not line.lstrip().startswith(("#", '"', "'"))
    ]
    assert not found, "\n".join(found)


def test_docstring_sections_give_one_argument_per_line():
    """Google style, as the API reference reads it: ``a: ... b: ...`` on one line would be one parameter named ``a``."""
    found = []
    for p in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(p.read_text())):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or not (doc := ast.get_docstring(node)):
                continue
            names = [a.arg for a in node.args.posonlyargs + node.args.args + node.args.kwonlyargs if a.arg not in ("self", "cls")]
            if not names or "Args:" not in doc:
                continue
            alt = "|".join(re.escape(n) for n in names)
            for line in doc.split("Args:", 1)[1].split("\n\n", 1)[0].splitlines():
                if re.search(rf"[.)] (?:{alt}):", line) or re.match(rf"\s*(?:{alt}), (?:{alt}):", line):
                    found.append(f"{p.relative_to(SRC)}:{node.name}: {line.strip()[:80]}")
    assert not found, "\n".join(found)
