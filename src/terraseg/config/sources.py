"""The data sources of a config (``data.train``, ``data.val``, ``data.test``): a scene with its labels, a folder of
image/mask pairs, class folders, a chip manifest, a project of many rasters; and the class list."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from terraseg.config.base import Strict as _Strict


class ClassSpec(_Strict):
    """One output class."""

    name: str = Field(description="Class name, e.g. 'building'.")
    color: str = Field("#000000", description="Display colour as '#rrggbb' for overlays and legends.")


class VectorLabels(_Strict):
    """Polygon labels rasterized onto the image grid (after reprojection to the raster CRS)."""

    path: str = Field(description="Vector file: shapefile (.shp or zipped .zip), GeoJSON, GeoPackage.")
    layer: str | None = Field(None, description="Layer name for multi-layer files (GeoPackage); default first.")
    attribute: str | None = None
    """Attribute holding the class of each feature; when unset every feature burns `burn_value`."""
    mapping: dict[str, int] | None = None
    """Attribute value (as text) -> class id. Required with `attribute` unless values are ids."""
    burn_value: int = Field(1, description="Class id burnt for every feature when `attribute` is unset.")
    all_touched: bool = Field(False, description="Burn every pixel a polygon touches (GDAL ALL_TOUCHED), not only centres.")


class _RasterSourceOptions(_Strict):
    """What scene and project sources share: the bands read, the mask's values, the labelled extent."""

    bands: list[int] | None = Field(None, description="1-based band indexes to read, in order; default all bands.")
    mask_values: dict[str, int] | None = None
    """Mask value (as text) -> class id, for masks whose values are not the ids 0..K-1 (e.g. land-cover codes 1, 2, 3, 4,
    8); a value not listed is refused, nodata is unknown. Default: the values are the class ids. `terraseg plan`
    writes it from the values the masks hold."""
    aoi: str | None = None
    """The labelled extent: polygons (any vector file, any CRS) outside which every pixel is unknown (ignore_index) for
    training, hold-out and scores; default: the whole raster is labelled (pixels no polygon covers are background)."""
    aoi_layer: str | None = Field(None, description="Layer of `aoi` in a multi-layer file (GeoPackage); default the first.")


class SceneSource(_RasterSourceOptions):
    """A georeferenced scene: one raster of any band count and dtype, plus labels on its grid."""

    kind: Literal["scene"] = "scene"
    image: str = Field(description="Raster path (GeoTIFF or any GDAL format); relative paths are under the data root.")
    vector: VectorLabels | None = Field(None, description="Polygon labels; exclusive with `mask`.")
    mask: str | None = Field(None, description="Mask raster on the same grid (class ids); exclusive with `vector`.")
    mask_nodata: int | Literal["none"] | None = None
    """Mask value meaning 'unknown' (becomes ignore_index); default the mask's nodata tag. 'none': no value means
    unknown, the tag is not honoured (a 0/1 mask tagged nodata 0, as many GDAL-written masks are, whose 0 is
    background; `terraseg plan` sets it so and says why)."""

    @model_validator(mode="after")
    def _one_label_kind(self) -> SceneSource:
        if self.vector is not None and self.mask is not None:
            raise ValueError("give either `vector` or `mask` labels for a scene, not both")
        return self


class FolderSource(_Strict):
    """Image/mask pairs in a folder (PNG, JPEG or TIFF), in a known or generic layout."""

    kind: Literal["folder"] = "folder"
    root: str = Field(description="Folder holding the data set; relative paths are under the data root.")
    layout: Literal["auto", "pairs", "seed", "loveda", "magnetic_tiles"] = "auto"
    """'seed': <root>/train_frames + train_masks (same stems); 'loveda': <root>/**/images_png + masks_png (0 = no-data,
    classes 1..7 -> 0..6); 'magnetic_tiles': <root>/MT_*/Imgs/<id>.jpg + <id>.png (mask > 0); 'pairs':
    <root>/<images_dir> + <masks_dir>; 'auto': detect."""
    images_dir: str = Field("images", description="Image sub-folder for layout 'pairs'.")
    masks_dir: str = Field("masks", description="Mask sub-folder for layout 'pairs'.")
    binarize: bool = Field(False, description="Map mask values > 0 to 1 (antialiased binary masks).")
    value_offset: int = 0
    """Added to mask values after reading (LoveDA uses -1); values < 0 become ignore_index."""
    include: list[str] | None = Field(None, description="Only sub-folders / class folders with these names (e.g. MT_Crack).")


class ClassFolderSource(_Strict):
    """Scene-classification images in one folder per class (task 'classification').

    Layouts: 'folders' (``<root>/<class>/*.jpg|png|tif``, e.g. EuroSAT's ``2750/<class>``); 'intel'
    (``<root>/seg_train/<class>`` for training, ``seg_test`` for `split: test`); 'sat6'
    (``<root>/{trn,val,tst}/<class>/*.tif``, 4-band DeepSat SAT-6 chips). `root` may be a ``.zip``
    archive holding such a tree (read in place through GDAL's /vsizip/, never extracted).
    """

    kind: Literal["classes"] = "classes"
    root: str = Field(description="Folder or .zip archive holding the class folders; relative paths are under the data root.")
    layout: Literal["auto", "folders", "intel", "sat6"] = "auto"
    """Folder layout (see above); 'auto' detects it."""
    split: Literal["train", "val", "test"] = "train"
    """Which part of a layout with splits to read (intel: seg_train/seg_test; sat6: trn/val/tst)."""
    mapping: dict[str, str] | None = None
    """Folder name -> class name, when they differ (e.g. {'barren_land': 'barren'})."""


class ManifestSource(_Strict):
    """Image/mask pairs listed in a manifest: a ``terraseg split`` output (CSV or Parquet) or any table with the columns."""

    kind: Literal["manifest"] = "manifest"
    path: str
    """Manifest file; a relative path is taken from the current folder when it exists there, else under the data root.
    Relative image/mask paths in it are relative to the manifest."""
    image_column: str = Field("chip", description="Column holding image paths.")
    mask_column: str = Field("mask", description="Column holding mask paths (mask rasters or PNG masks).")
    binarize: bool = Field(False, description="Map mask values > 0 to 1 (antialiased binary masks, e.g. magnetic tiles).")


class ProjectSource(_RasterSourceOptions):
    """A project: many rasters (a survey, a time range, a city's orthophotos) and one labels file, or a mask per raster.

    The rasters' headers are read once into an index (GeoParquet, reused while the files are unchanged);
    the labels file is read once, indexed, and looked up per scene by its footprint, reprojected to each
    scene's CRS (terraseg.data.project).
    """

    kind: Literal["project"] = "project"
    images: list[str] = Field(min_length=1)
    """Rasters: files, folders, glob patterns, .txt lists or STAC JSON; local or GDAL virtual paths (/vsicurl/, /vsis3/,
    read with GDAL's caching). Relative paths are under the data root."""
    vector: VectorLabels | None = Field(None, description="One polygon file labelling every raster; exclusive with `masks`.")
    masks: str | None = None
    """A folder of mask rasters named after the rasters (same stem), on their grids; exclusive with `vector`."""
    mask_nodata: int | None = Field(None, description="Mask value meaning 'unknown'; default each mask's nodata.")
    unlabelled: Literal["skip", "background"] = "skip"
    """Rasters no label reaches: 'skip' them, or train on their extent as 'background' (class 0): only where the labels
    are known to be complete."""
    index: str | None = None
    """Where the header index is cached (GeoParquet); default <cache folder>/project-<hash of the raster list>.parquet,
    the cache folder being $TERRASEG_CACHE or the user's cache folder (terraseg.settings.cache_dir)."""

    @model_validator(mode="after")
    def _one_label_kind(self) -> ProjectSource:
        if (self.vector is None) == (self.masks is None):
            raise ValueError("a project needs its labels: `vector` (one polygon file) or `masks` (a folder), not both")
        return self


Source = Annotated[SceneSource | FolderSource | ClassFolderSource | ManifestSource | ProjectSource, Field(discriminator="kind")]
