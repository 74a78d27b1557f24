"""Typed options of the data-preparation stages (chip, mosaic, rasterize, split, stats, vectorize).

Each stage is one function taking one of these objects; the CLI only turns options into them, so a
Python user and a shell user run exactly the same code with the same validation.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from terraseg.config import VectorLabels
from terraseg.config.base import Strict as _Strict


def _check_label_count(images: list[str], labels: list) -> None:
    if len(labels) not in (0, 1, len(images)):
        raise ValueError(f"give 0, 1 or {len(images)} label specs (one per image), not {len(labels)}")


class LabelOptions(VectorLabels):
    """Labels of an image: a mask raster on its grid, or polygons rasterized onto it (vector fields apply)."""

    path: str
    """Mask raster (.tif/.png) on the image grid, or vector file (shp, zipped shp, GeoJSON, GeoPackage)."""
    nodata: int | Literal["none"] | None = None
    """Mask-raster value meaning unknown (default: the mask raster's nodata tag; 'none': no value)."""

    @property
    def is_mask(self) -> bool:
        """True when ``path`` is a raster mask rather than a vector file."""
        from terraseg.formats import is_mask_raster

        return is_mask_raster(self.path)

    @model_validator(mode="after")
    def _options_fit_the_form(self) -> LabelOptions:
        """Vector options on a mask raster (or a mask's nodata on a vector file) are refused, never ignored."""
        if self.is_mask:
            given = [
                n
                for n, v in (
                    ("attribute", self.attribute),
                    ("mapping", self.mapping),
                    ("layer", self.layer),
                    ("burn_value", self.burn_value != 1 or None),
                    ("all_touched", self.all_touched or None),
                )
                if v is not None
            ]
            if given:
                flags = ", ".join("--" + n.replace("_", "-") for n in given)
                raise ValueError(
                    f"{flags} apply to vector labels; {self.path} is a mask raster, whose pixel values are the "
                    "class ids (give a vector file, or leave them out)"
                )
        elif self.nodata is not None:
            raise ValueError(
                f"--mask-nodata applies to mask rasters; {self.path} is a vector file (pixels no polygon "
                "covers are background, or unknown where the config says so)"
            )
        return self


class ChipConfig(_Strict):
    """Cut scenes (and their labels) into fixed-size chips with an index."""

    images: list[str] = Field(min_length=1, description="Source images: GeoTIFF (any band count/dtype) or PNG/JPEG.")
    labels: list[LabelOptions] = Field(default_factory=list)
    """Labels: none, one spec for all images (e.g. one vector file covering them), or one per image."""
    out_dir: str = Field(description="Output folder: images/, masks/ and the index file.")
    size: int = Field(256, ge=8, description="Chip height and width in pixels.")
    stride: int | None = Field(None, ge=1, description="Step between chips in pixels; < size overlaps. Default: size.")
    edge: Literal["pad", "shift"] = "pad"
    """Last row/column of chips: 'pad' past the edge with nodata, or 'shift' flush inside the scene."""
    bands: list[int] | None = Field(None, description="1-based band indexes to keep (default all).")
    max_nodata: float = Field(0.5, ge=0.0, le=1.0, description="Skip chips whose nodata/padding share exceeds this.")
    skip_empty: bool = Field(False, description="Skip chips holding no pixel of a positive (non-zero) class.")
    format: Literal["auto", "tif", "png"] = "auto"
    """Chip format; 'auto': GeoTIFF for rasters, PNG for plain images."""
    compress: Literal["none", "deflate", "lzw", "zstd"] = Field("none", description="GeoTIFF chip compression.")
    index_format: Literal["parquet", "csv"] = Field("parquet", description="Index file: GeoParquet (default) or CSV with WKT.")
    ignore_index: int = Field(255, ge=0, le=255, description="Mask value for unknown pixels (nodata, padding).")
    class_names: list[str] | None = Field(None, description="Class names for the per-class count columns (default c0, c1, ...).")
    workers: int | None = Field(None, ge=1)
    """Threads reading and writing chips (GDAL releases the GIL); default CPU cores + 1 (I/O overlaps compute)."""

    @model_validator(mode="after")
    def _labels_match(self) -> ChipConfig:
        _check_label_count(self.images, self.labels)
        return self


class MosaicConfig(_Strict):
    """Merge tiles into one GeoTIFF, warping those in another CRS or resolution."""

    inputs: list[str] = Field(min_length=1, description="Tiles (GeoTIFF); all must have the same band count.")
    out: str = Field(description="Output GeoTIFF.")
    crs: str | None = Field(None, description="Target CRS (EPSG code, WKT, PROJ string). Default: the first tile's.")
    resolution: tuple[float, float] | None = None
    """Target pixel size (x, y) in CRS units. Default: the first tile's."""
    rule: Literal["first", "last", "min", "max"] = Field("first", description="Which tile's value wins where tiles overlap.")
    resampling: Literal["nearest", "bilinear", "cubic", "average", "mode"] = "nearest"
    """Resampling for warped tiles (GDAL warp); 'nearest' keeps class rasters exact."""
    nodata: float | None = Field(None, description="Output nodata (default: the first tile's, else 0).")
    cog: bool = Field(False, description="Write a Cloud-Optimized GeoTIFF (GDAL COG driver, with overviews).")
    block: int = Field(1024, ge=16, description="Output block processed at a time (pixels); bounds memory.")
    compress: Literal["none", "deflate", "lzw", "zstd"] = Field("deflate", description="Output compression.")
    max_output_gb: float | None = Field(None, gt=0)
    """Largest output, uncompressed, in GB (default $TERRASEG_MAX_OUTPUT_GB or 100): a mosaic over it is refused before
    anything is written."""


class RasterizeConfig(_Strict):
    """Burn polygons into a mask raster on an image's grid."""

    vector: LabelOptions = Field(description="Polygons and how their class is found.")
    reference: str = Field(description="Image whose grid (CRS, transform, size) the mask takes.")
    out: str = Field(description="Output mask GeoTIFF (uint8).")
    background: int = Field(0, ge=0, le=255, description="Value of pixels outside every polygon.")
    boundary_width: float = Field(0.0, ge=0.0, description="Width in pixels of a polygon-outline class (0: none).")
    boundary_class: int | None = Field(None, ge=0, le=255, description="Class id of outlines (required with boundary_width).")
    ignore: str | None = Field(None, description="Vector file of zones burnt as `ignore_index` last (unknown, excluded).")
    ignore_index: int = Field(255, ge=0, le=255)
    """Value of ignore zones and of the image's nodata pixels; the mask's nodata."""
    block: int = Field(1024, ge=16, description="Rows/columns rasterized at a time.")

    @model_validator(mode="after")
    def _boundary(self) -> RasterizeConfig:
        if self.boundary_width > 0 and self.boundary_class is None:
            raise ValueError("boundary_width needs boundary_class")
        return self


class SplitConfig(_Strict):
    """Train/val/test manifests from a chip index."""

    index: str
    """Chip index (GeoParquet or CSV from `terraseg chip`), or a folder of image/mask pairs (methods random and
    stratified; strata: the pairs' sub-folders)."""
    out_dir: str = Field(description="Folder for train/val/test manifests.")
    layout: Literal["auto", "pairs", "seed", "loveda", "magnetic_tiles"] = "auto"
    """Folder inputs: the pair layout (as a config's folder source)."""
    include: list[str] | None = Field(None, description="Folder inputs: only these sub-folders (e.g. MT_Crack).")
    method: Literal["random", "stratified", "spatial", "spatial-kfold"] = "random"
    """'random'; 'stratified' by the set of classes present; 'spatial' by blocks of `block_size`; 'spatial-kfold':
    `folds` folds of whole blocks, training chips within `buffer` of a fold's test chips left out."""
    folds: int = Field(5, ge=2, description="'spatial-kfold': number of folds.")
    buffer: float = Field(0.0, ge=0)
    """'spatial-kfold': training chips closer than this (CRS units) to a test chip are left out of that fold (0: only
    those overlapping one)."""
    fractions: tuple[float, float, float] = Field((0.7, 0.15, 0.15), description="Shares of train, val, test (sum 1).")
    block_size: float | None = Field(None, gt=0, description="Block side in CRS units for 'spatial' (e.g. metres).")
    straddling: Literal["drop", "assign"] = "drop"
    """'spatial': training chips overlapping a val/test chip (they straddle a block border) are dropped (no training
    pixel is also a val/test pixel), or with 'assign' kept in the split of the block holding their centre (no chip
    lost; their border pixels overlap val/test chips)."""
    seed: int = Field(0, description="Seed of the shuffles; the same seed gives the same split.")
    format: Literal["csv", "parquet"] = Field("csv", description="Manifest file format.")

    @model_validator(mode="after")
    def _check(self) -> SplitConfig:
        if abs(sum(self.fractions) - 1.0) > 1e-6 or min(self.fractions) < 0:
            raise ValueError(f"fractions {self.fractions} must be >= 0 and sum to 1")
        if self.method in ("spatial", "spatial-kfold") and self.block_size is None:
            raise ValueError(f"method '{self.method}' needs block_size (CRS units)")
        return self


class StatsConfig(_Strict):
    """Band and class statistics of images, optional per-pixel table ("flatten")."""

    images: list[str] = Field(min_length=1, description="Images (all with the same band count).")
    labels: list[LabelOptions] = Field(default_factory=list, description="Labels: none, one for all, or one per image.")
    out_dir: str | None = None
    """Output folder: stats.json and one figure, bands.png (histograms, or a spectral profile past 16 bands); None: the
    summary is only returned (and printed by the CLI)."""
    bands: list[int] | None = Field(None, description="1-based band indexes (default all).")
    band_names: list[str] | None = Field(None, description="Names of the bands, used in the table and plots.")
    percentiles: list[float] = Field([1.0, 2.0, 50.0, 98.0, 99.0], description="Percentiles to report (0-100).")
    bins: int = Field(256, ge=8, le=65536, description="Histogram bins per band between min and max.")
    ignore_index: int = Field(255, description="Mask value for unknown pixels.")
    flatten: str | None = Field(None, description="Also write a per-pixel table here (.parquet or .csv).")
    sample_fraction: float = Field(1.0, gt=0.0, le=1.0, description="Share of valid pixels kept in the table (seeded).")
    include_nodata: bool = Field(False, description="Keep nodata pixels in the table.")
    seed: int = Field(0, description="Seed of the table's sampling.")
    block: int = Field(1024, ge=16, description="Rows/columns read at a time.")

    @model_validator(mode="after")
    def _labels_match(self) -> StatsConfig:
        _check_label_count(self.images, self.labels)
        return self


class VectorizeConfig(_Strict):
    """Class raster -> polygons with class, area and mean confidence."""

    raster: str = Field(description="Class-id raster (e.g. a `terraseg predict` GeoTIFF).")
    out: str = Field(description="Output vector file: .geojson or .gpkg.")
    probabilities: str | None = Field(None, description="Probability raster (one band per class) for mean confidence.")
    classes: list[int] | None = Field(None, description="Class ids to vectorize (default: every value except 0 and nodata).")
    class_names: list[str] | None = Field(None, description="Names written in the `class_name` column.")
    simplify: float = Field(0.0, ge=0.0, description="Simplification tolerance in CRS units (0: exact pixel outlines).")
    min_area: float = Field(0.0, ge=0.0, description="Drop polygons smaller than this, in square CRS units (m^2 when projected).")
    connectivity: Literal[4, 8] = Field(4, description="Pixel connectivity of a region.")
    block: int = Field(2048, ge=16, description="Rows processed at a time; regions crossing blocks are merged.")


def parse_mapping(text: str | None) -> dict[str, int] | None:
    """``'a=1,b=2'`` or a JSON object -> ``{'a': 1, 'b': 2}`` (``--mapping``: attribute value -> class id).

    Args:
        text: the option's value, or None.

    Raises:
        ConfigError: not of either form, or ids that are not integers.
    """
    import json

    from terraseg.errors import ConfigError

    if not text:
        return None
    try:
        if text.strip().startswith("{"):
            return {str(k): int(v) for k, v in json.loads(text).items()}
        return {k.strip(): int(v) for k, v in (item.split("=", 1) for item in text.split(",") if item.strip())}
    except (ValueError, AttributeError):
        raise ConfigError(f"--mapping '{text}': expected 'value=id,...' or a JSON object of integer ids.") from None
