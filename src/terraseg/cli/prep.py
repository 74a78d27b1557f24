"""Data-preparation commands: chip, mosaic, stack, rasterize, split, stats, vectorize, download, import-cvat, sample, area.

Each command builds one typed options object (:mod:`terraseg.config.prep`) and calls one function.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional

import typer

from terraseg.cli.app import app, build, command_from, err, out, user_errors, with_signature
from terraseg.config.prep import (
    ChipConfig,
    MosaicConfig,
    RasterizeConfig,
    SplitConfig,
    StatsConfig,
    VectorizeConfig,
    parse_mapping,  # noqa: F401  (used by the commands below)
)
from terraseg.errors import ConfigError

LabelsOpt = Annotated[
    Optional[list[str]],
    typer.Option("--labels", help="Labels: one mask raster/vector file for all images, or one per image (repeat)."),
]
AttributeOpt = Annotated[Optional[str], typer.Option(help="Vector attribute holding the class.")]
MappingOpt = Annotated[Optional[str], typer.Option(help="Attribute value -> class id: 'a=1,b=2' or a JSON object.")]
BurnOpt = Annotated[int, typer.Option(help="Class id burnt for polygons without --attribute.")]
TouchedOpt = Annotated[bool, typer.Option("--all-touched", help="Burn every pixel a polygon touches.")]
MaskNodataOpt = Annotated[Optional[int], typer.Option(help="Mask-raster value meaning unknown (default: the mask's nodata).")]


def _floats(text: str | None, n: int | None = None, what: str = "") -> list[float] | None:
    if text is None:
        return None
    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError:
        raise ConfigError(f"{what} '{text}': expected comma-separated numbers.") from None
    if n is not None and len(vals) != n:
        raise ConfigError(f"{what} '{text}': expected {n} numbers.")
    return vals


def _ints(text: str | None, what: str) -> list[int] | None:
    """``'1,2,3'`` -> ``[1, 2, 3]``; None or empty -> None."""
    return [int(v) for v in _floats(text, what=what) or []] or None


def with_image_inputs(images_help: str):
    """Decorator: the inputs of the commands that read images with labels, declared once.

    Adds the ``IMAGES...`` argument, ``--labels``, ``--attribute``, ``--mapping``, ``--burn-value``,
    ``--all-touched``, ``--mask-nodata``, ``--layer`` and ``--bands`` to the command, which receives ``images``,
    ``labels`` (validated :class:`terraseg.config.prep.LabelOptions`) and ``bands`` (1-based indexes or None).

    Args:
        images_help: the help of the images argument.
    """
    import functools
    import inspect

    K = inspect.Parameter.KEYWORD_ONLY
    inputs = [inspect.Parameter("images", K, annotation=Annotated[list[str], typer.Argument(help=images_help)])]
    group = {
        "labels": (LabelsOpt, None),
        "attribute": (AttributeOpt, None),
        "mapping": (MappingOpt, None),
        "burn_value": (BurnOpt, 1),
        "all_touched": (TouchedOpt, False),
        "mask_nodata": (MaskNodataOpt, None),
        "layer": (
            Annotated[Optional[str], typer.Option(help="Layer of vector labels in a multi-layer file (default: the first).")],
            None,
        ),
        "bands": (Annotated[Optional[str], typer.Option(help="1-based bands to read, e.g. '1,2,3' (default all).")], None),
    }

    def decorate(fn):
        own = [
            p.replace(kind=K)
            for p in inspect.signature(fn, eval_str=True).parameters.values()
            if p.name not in ("images", "labels", "bands")
        ]
        params = own[:1] + inputs + own[1:] + [inspect.Parameter(n, K, default=d, annotation=a) for n, (a, d) in group.items()]
        params = [p for p in params if p.default is inspect.Parameter.empty] + [
            p for p in params if p.default is not inspect.Parameter.empty
        ]

        @functools.wraps(fn)
        def command(*args, **kwargs):  # args: the builder of command_from
            v = {n: kwargs.pop(n) for n in group}
            labels = _labels(
                v["labels"], v["attribute"], v["mapping"], v["burn_value"], v["all_touched"], v["mask_nodata"], v["layer"]
            )
            return fn(*args, images=kwargs.pop("images"), labels=labels, bands=_ints(v["bands"], "--bands"), **kwargs)

        return with_signature(command, params)

    return decorate


def _labels(paths: list[str] | None, attribute, mapping, burn_value, all_touched, mask_nodata=None, layer=None) -> list:
    from terraseg.config.prep import LabelOptions

    return [
        build(
            LabelOptions,
            path=p,
            attribute=attribute,
            mapping=parse_mapping(mapping),
            burn_value=burn_value,
            all_touched=all_touched,
            nodata=mask_nodata,
            layer=layer,
        )
        for p in (paths or [])
    ]


@command_from(ChipConfig)
@with_image_inputs("Images: GeoTIFF (any bands/dtype) or PNG/JPEG.")
def chip(
    make: Callable[..., ChipConfig],
    images: list[str],
    labels: list,
    bands: list[int] | None,
    out_dir: Annotated[Path, typer.Option("--out", help="Output folder (images/, masks/, index).")],
) -> None:
    """Cut scenes and labels into chips (GeoTIFF keeps georeferencing) with a GeoParquet/CSV index."""
    from terraseg.prepare.chip import chip as run

    r = run(make(images=images, labels=labels, out_dir=str(out_dir), bands=bands))
    out.print(
        f"{r.written} chips written, {r.skipped} skipped, {r.mb_per_second:.1f} MB/s of source pixels; index: {r.index_path}"
    )


@command_from(MosaicConfig)
def mosaic(
    make: Callable[..., MosaicConfig],
    inputs: Annotated[list[str], typer.Argument(help="Tiles (GeoTIFF), same band count; any CRS/resolution.")],
    out_path: Annotated[Path, typer.Option("--out", help="Output GeoTIFF.")],
    resolution: Annotated[
        Optional[str], typer.Option(help="Target pixel size 'x' or 'x,y' in CRS units (default: the first tile's).")
    ] = None,
) -> None:
    """Merge tiles into one GeoTIFF, warping tiles in other CRSs/resolutions; memory stays bounded."""
    from terraseg.prepare.mosaic import mosaic as run

    res = _floats(resolution, what="--resolution")
    r = run(make(inputs=inputs, out=str(out_path), resolution=(res[0], res[-1]) if res else None))
    out.print(
        f"{r.path}: {r.width}x{r.height} pixels, {r.crs.to_string()}, pixel {r.transform.a:g} x {-r.transform.e:g}, {r.tiles} tiles"
    )


@command_from(RasterizeConfig)
def rasterize(
    make: Callable[..., RasterizeConfig],
    vector: Annotated[str, typer.Argument(help="Polygons: shapefile, zipped shapefile, GeoJSON, GeoPackage; any CRS.")],
    attribute: AttributeOpt = None,
    mapping: MappingOpt = None,
    burn_value: BurnOpt = 1,
    all_touched: TouchedOpt = False,
    layer: Annotated[Optional[str], typer.Option(help="GeoPackage layer.")] = None,
) -> None:
    """Burn polygons into a mask on an image's grid (reprojected, window by window)."""
    from terraseg.prepare.rasterize import rasterize_labels

    labels = _labels([vector], attribute, mapping, burn_value, all_touched, layer=layer)[0]
    out.print(f"mask: {rasterize_labels(make(vector=labels))}")


@command_from(SplitConfig)
def split(
    make: Callable[..., SplitConfig],
    index: Annotated[
        str, typer.Argument(help="Chip index from `terraseg chip` (.parquet or .csv), or a folder of image/mask pairs.")
    ],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for train/val/test manifests.")],
    fractions: Annotated[str, typer.Option(help="Train,val,test shares.")] = "0.7,0.15,0.15",
) -> None:
    """Write reproducible train/val/test manifests from a chip index or a folder of image/mask pairs (train with `kind: manifest`)."""
    from terraseg.prepare.split import split_index

    cfg = make(index=index, out_dir=str(out_dir), fractions=tuple(_floats(fractions, 3, "--fractions")))  # type: ignore[arg-type]
    paths = split_index(cfg)
    if cfg.method == "spatial-kfold":
        summary = json.loads((out_dir / "split.json").read_text())
        for f in summary["per_fold"]:
            out.print(
                f"fold {f['fold']}: train {f['train']}, test {f['test']} chips ({f['left_out_by_buffer']} left out by the buffer)"
            )
        out.print(f"manifests in {out_dir}/fold<k>/")
        return
    summary = json.loads((out_dir / "split.json").read_text())
    out.print(", ".join(f"{k}: {summary[k]} chips" for k in paths) + f"; manifests in {out_dir}")
    if summary.get("dropped_straddling"):
        err.print(
            f"[yellow]note:[/] {summary['dropped_straddling']} training chips overlap val/test chips across block borders "
            "and were left out (no leakage); `--straddling assign` keeps them in their block's split instead."
        )
    if summary.get("assigned_straddling"):
        err.print(
            f"[yellow]note:[/] {summary['assigned_straddling']} training chips straddle block borders and were kept "
            "(--straddling assign): their border pixels overlap val/test chips."
        )


STATS_OUT = (
    "Folder for stats.json and bands.png (histograms, or a spectral profile past 16 bands); without it the summary is "
    "only printed."
)


@command_from(StatsConfig)
@with_image_inputs("Images with the same band count.")
def stats(
    make: Callable[..., StatsConfig],
    *,
    out_dir: Annotated[Optional[Path], typer.Option("--out", help=STATS_OUT)] = None,
    images: list[str],
    labels: list,
    bands: list[int] | None,
) -> None:
    """Band statistics, histograms, class frequencies and weights; optional flat per-pixel table."""
    from terraseg.prepare.stats import compute_statistics

    r = compute_statistics(make(images=images, labels=labels, out_dir=str(out_dir) if out_dir else None, bands=bands))
    for h in r.stats["rasters"]:
        res = (
            f"{h['resolution'][0]:.6g} x {h['resolution'][1]:.6g} {h['units']} per pixel"
            if h["resolution"]
            else "no georeferencing"
        )
        out.print(
            f"{h['path']}: {h['width']:,} x {h['height']:,} px, {h['bands']} bands, {h['dtype']}, nodata {h['nodata']}, "
            f"CRS {h['crs'] or 'none'}, {res}",
            highlight=False,
        )
    for b in r.stats["bands"]:
        out.print(
            f"{b['name']}: mean {b['mean']:.4g} std {b['std']:.4g} min {b['min']:.4g} max {b['max']:.4g} "
            + " ".join(f"p{k} {v:.4g}" for k, v in b["percentiles"].items())
        )
    out.print(f"nodata fraction {r.stats['nodata_fraction']:.4f}")
    if "classes" in r.stats:
        c = r.stats["classes"]
        out.print("class pixels " + str(c["pixels"]) + "; median-frequency weights " + str(c["median_frequency"]))
    if r.stats_path or r.table:
        out.print(
            ", ".join(x for x in (f"stats: {r.stats_path}" if r.stats_path else "", f"table: {r.table}" if r.table else "") if x)
        )


@command_from(VectorizeConfig)
def vectorize(
    make: Callable[..., VectorizeConfig],
    raster: Annotated[str, typer.Argument(help="Class raster (e.g. from `terraseg predict`).")],
) -> None:
    """Class raster -> polygons in the raster's CRS, with class, area and mean confidence."""
    from terraseg.prediction.vectorize import vectorize as run

    out.print(f"polygons: {run(make(raster=raster))}")


@app.command()
@user_errors
def download(
    name: Annotated[Optional[str], typer.Argument(help="Data set name (see --list).")] = None,
    root: Annotated[
        Optional[Path],
        typer.Option(
            help="Data root (default: $TERRASEG_DATA, else ../shared/datasets when it exists, else the user's data folder)."
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Download even when the files are present.")] = False,
    list_: Annotated[bool, typer.Option("--list", help="List the known data sets.")] = False,
    base_url: Annotated[
        Optional[str],
        typer.Option(help="A mirror serving <folder>/<file> in place of the original URLs (default: $TERRASEG_DOWNLOAD_URL)."),
    ] = None,
    where: Annotated[bool, typer.Option("--where", help="Print the data root and exit.")] = False,
) -> None:
    """Fetch a public data set from its original URL (checksums verified, resumable) into the data root."""
    from terraseg.prepare.download import DATASETS
    from terraseg.prepare.download import download as run
    from terraseg.settings import data_root

    if where:
        out.print(str(root or data_root()), soft_wrap=True)
        return
    if list_ or name is None:
        for d in DATASETS.values():
            out.print(
                f"{d.name} -> {d.folder}: {d.citation} ({d.licence}); {len(d.files)} file(s) from {d.files[0].url.split('/')[2]}",
                soft_wrap=True,
            )
        return
    folder, fetched = run(name, root, force, base_url)
    out.print(f"{name}: {'downloaded to' if fetched else 'already present in'} {folder}")


@app.command("import-cvat")
@user_errors
def import_cvat_cmd(
    xml: Annotated[Path, typer.Argument(help="CVAT 'for images' 1.1 XML export.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the masks.")],
    mapping: MappingOpt = None,
    images: Annotated[
        Optional[Path], typer.Option(help="Folder of the annotated images (GeoTIFFs give georeferenced masks).")
    ] = None,
) -> None:
    """Rasterize CVAT polygon/box/mask annotations into class masks (PNG, or GeoTIFF on the image grid)."""
    from terraseg.prepare.cvat import import_cvat

    written = import_cvat(xml, out_dir, parse_mapping(mapping), images)
    out.print(f"{len(written)} masks written to {out_dir}")
    if not written:
        err.print("no masks written")


@app.command()
@user_errors
def sample(
    map_path: Annotated[str, typer.Argument(help="Class raster (e.g. from `terraseg predict`).")],
    out_path: Annotated[Path, typer.Option("--out", help="Points to label: .gpkg, .geojson or .csv.")],
    n: Annotated[int, typer.Option("--n", help="Total sample size.")] = 500,
    allocation: Annotated[str, typer.Option(help="proportional | equal | neyman.")] = "proportional",
    min_per_class: Annotated[int, typer.Option(help="At least this many points per mapped class (50-100 for rare classes).")] = 0,
    expected_accuracy: Annotated[float, typer.Option(help="Neyman: expected user's accuracy of every class.")] = 0.9,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
) -> None:
    """Draw a stratified random sample of pixels of a class map, for reference labelling (Olofsson et al. 2014)."""
    from terraseg.evaluation.area import sample_points
    from terraseg.io.atomic import atomic_path
    from terraseg.io.vector import write_vector

    pts = sample_points(map_path, n, allocation, min_per_class, seed, expected_accuracy)
    pts["reference"] = None
    if out_path.suffix.lower() == ".csv":
        with atomic_path(out_path) as tmp:
            pts.assign(x=pts.geometry.x, y=pts.geometry.y).drop(columns="geometry").to_csv(tmp, index=False)
    else:
        write_vector(pts, out_path, "points")
    per = pts["map_class"].value_counts().sort_index().to_dict()
    out.print(
        f"{len(pts)} points ({allocation}; per map class {per}) -> {out_path}; fill the `reference` column, then `terraseg area`"
    )


@app.command()
@user_errors
def area(
    map_path: Annotated[str, typer.Argument(help="Class raster the sample was drawn from.")],
    reference: Annotated[str, typer.Option("--reference", help="Labelled points (vector file).")],
    out_path: Annotated[Path, typer.Option("--out", help="area.json to write.")],
    attribute: Annotated[str, typer.Option(help="Column holding the reference class.")] = "reference",
    mapping: MappingOpt = None,
    class_names: Annotated[Optional[str], typer.Option(help="Comma-separated class names (default: the raster's).")] = None,
) -> None:
    """Area per class with 95% intervals, and user's/producer's/overall accuracy, from a stratified sample."""
    from terraseg.evaluation.area import estimate_area
    from terraseg.io.atomic import write_text_atomic

    est, details = estimate_area(
        map_path, reference, attribute, class_names.split(",") if class_names else None, parse_mapping(mapping)
    )
    report = est.to_dict(details["class_names"]) | details
    write_text_atomic(out_path, json.dumps(report, indent=2))
    for name, c in report["classes"].items():
        a, ci = c["area"], c["area_ci95"]
        out.print(
            f"{name}: area {a:,.1f} +/- {ci:,.1f} {est.unit} (95%), user's {c['users_accuracy']}, producer's {c['producers_accuracy']}"
        )
    out.print(
        f"overall accuracy {report['overall_accuracy']} +/- {report['overall_accuracy_ci95']}; {details['points_used']} points "
        f"({details['points_skipped']} outside the map or on nodata) -> {out_path}"
    )


@app.command()
@user_errors
def stack(
    inputs: Annotated[list[str], typer.Argument(help="Rasters on one grid (e.g. per-colour files), stacked in order.")],
    out_path: Annotated[Path, typer.Option("--out", help="Output multi-band GeoTIFF.")],
) -> None:
    """Stack single-band rasters on one grid into one multi-band GeoTIFF."""
    from terraseg.prepare.mosaic import stack_bands

    out.print(f"{stack_bands(inputs, str(out_path))}: {len(inputs)} inputs stacked")
