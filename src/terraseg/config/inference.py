"""Typed options of the stages that run a bundle: predict, evaluate, export and serve.

The CLI parses its options into these objects and the Python API takes the same objects (or builds
them from keyword arguments), so both validate alike and run the same code. Options shared by every
stage that runs a network live in :class:`InferenceConfig`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field

from terraseg.config.base import M, build_options, number_as_text
from terraseg.config.base import Strict as _Strict


class InferenceConfig(_Strict):
    """How a bundle's network runs over a scene (sliding windows, device, numeric precision)."""

    window: int | None = Field(None, ge=8)
    """Sliding-window side in pixels, a multiple of 32 for segmentation (default: the bundle's prediction window); for
    classification with --grid, the grid's window side (any side; default: the classifier's input size)."""
    overlap: float = Field(0.25, ge=0.0, le=0.9)
    """Share of a window overlapping its neighbour (blended with a 2-D Hann window)."""
    batch_size: int | None = Field(None, ge=1)
    """Windows per forward pass (default: 4 on a CPU; on CUDA from free device memory, up to 32:
    terraseg.devices.inference_batch_size)."""
    device: str = Field("auto", description="Torch device: cpu, cuda, cuda:1 ..., or 'auto' (CUDA when available, else cpu).")
    readers: int = Field(0, ge=0)
    """Reader threads reading strips ahead of the network (0: one on a CPU, up to 4 on CUDA, where one reader cannot keep
    a GPU fed)."""
    precision: Annotated[Literal["auto", "32", "bf16", "16"], BeforeValidator(number_as_text)] = "auto"
    """'32' (float32), 'bf16' / '16' autocast, or 'auto': bf16 where the device computes it natively (AVX-512 BF16 / AMX
    CPUs, recent GPUs), fp16 on other GPUs, else float32 (terraseg.infer.runtime)."""
    channels_last: bool | None = Field(None, description="Run PyTorch in NHWC memory layout (default: on).")
    backend: Literal["auto", "torch", "onnx", "onnx-int8"] = "auto"
    """torch (PyTorch), onnx (ONNX Runtime on the bundle's exported graph), onnx-int8 (its INT8 graph, `terraseg export
    --quantize int8`), or 'auto': the fastest of the candidates this machine's features allow, by a measured ranking
    cached per machine and model."""
    threads: int = Field(0, ge=0, description="ONNX Runtime intra-op threads (0: its default, all cores).")
    tta: Literal["none", "flips", "d4"] = "none"
    """Test-time augmentation: average the probabilities of flipped ('flips', 3 passes) or all eight dihedral ('d4', 8
    passes) views of each window."""
    fit_max: int = Field(1024, ge=0)
    """Without an explicit `window`, an image whose sides are both at most this many pixels is predicted as one window
    (rounded up to a multiple of 32): no tiling. 0 always tiles."""


class RayConfig(_Strict):
    """Ray, the engine of ``predict --engine ray`` and ``serve --engine ray`` (docs/scale.md)."""

    address: str | None = None
    """Cluster to join: 'auto' (a running local cluster, or RAY_ADDRESS), 'ray://HOST:PORT' (Ray Client); default: start
    Ray on this machine."""
    num_workers: int | None = Field(None, ge=1)
    """Prediction actors (each loads the bundle once); default: one per GPU when gpus_per_worker > 0, else one per
    cpus_per_worker CPUs of the cluster."""
    cpus_per_worker: int | None = Field(None, ge=1)
    """CPUs reserved per actor (its torch threads); default: the cluster's CPUs / num_workers."""
    gpus_per_worker: float = Field(0, ge=0, description="GPUs reserved per actor (fractions share a GPU).")
    max_retries: int = Field(2, ge=0, description="Retries of a unit whose actor died or that raised an I/O error.")
    replicas: int = Field(1, ge=1)
    """serve --engine ray: model replicas at start (autoscaling between min_replicas and max_replicas when max_replicas >
    replicas)."""
    max_replicas: int | None = Field(None, ge=1, description="serve --engine ray: most replicas the autoscaler may start.")


class PredictConfig(_Strict):
    """``terraseg predict``: images in, georeferenced predictions out."""

    inputs: list[str] = Field(min_length=1)
    """Images: GeoTIFF (any size, band count, dtype), PNG, JPEG; folders (their images), glob patterns, a .txt list (one
    input per line), or a STAC ItemCollection / Item JSON (remote hrefs read through GDAL's /vsicurl/; outputs named
    by item id)."""
    asset: str | None = None
    """STAC inputs: the asset key to predict (default: the first asset with role 'data' or a GeoTIFF media type)."""
    engine: Literal["local", "ray"] = "local"
    """'local': this process; 'ray': actors on a Ray cluster (scenes and row bands of large scenes; identical outputs)."""
    ray: RayConfig = Field(default_factory=RayConfig, description="Ray settings (engine 'ray').")
    resume: bool = False
    """Skip inputs whose outputs are already complete (atomic writes: an existing output is whole), e.g. when re-running
    an interrupted batch."""
    out_dir: str = Field(description="Output folder; one output per input, named after the input's stem.")
    inference: InferenceConfig = Field(default_factory=InferenceConfig)
    """Sliding windows, device, precision, backend."""
    probabilities: bool = Field(False, description="Also write <stem>_probs.tif (float32, one band per class).")
    overlay: bool = Field(False, description="Also write <stem>_overlay.png (class colours over the image).")
    uncertainty: bool = False
    """Also write <stem>_confidence.tif: max probability, margin and normalised entropy per pixel (float32, NaN nodata)."""
    compress: Literal["deflate", "zstd", "lzw", "none"] = Field("deflate", description="GeoTIFF codec of the outputs.")
    level: int | None = Field(None, ge=1, le=22)
    """Codec level (DEFLATE 1-9, ZSTD 1-22; default: GDAL's; 1 is fastest)."""
    cog: bool = Field(False, description="Write Cloud-Optimized GeoTIFFs.")
    grid: bool = Field(False, description="Classification bundles: classify each georeferenced input on a grid of windows.")
    bands: list[str] | None = None
    """Bands to feed the model, in its order: 1-based indexes or band names (descriptions or colour interpretations, e.g.
    [4, 3, 2] or [red, green, blue]); default the bundle's rule."""
    input_range: tuple[float, float] | None = None
    """The inputs' value range [low, high], mapped linearly onto the training dtype's range (an input of another bit
    depth, e.g. 11-bit values in uint16 for a uint8 model); default: refuse another bit depth unless its NBITS
    metadata sets the rule."""


class EvaluateConfig(_Strict):
    """``terraseg evaluate``: metrics of a bundle on labelled data."""

    out_dir: str = Field(description="Output folder for metrics.json, confusion_matrix.png and overlays/.")
    data: str | None = None
    """What to score: an image (with labels), an image/mask folder (segmentation), a class folder (classification), or a
    config YAML (its split); None: the config the bundle was trained with."""
    labels: str | None = None
    """Segmentation, one image: its labels, a vector file (shp/zip/geojson/gpkg) or a mask raster."""
    burn_value: int = Field(1, description="Segmentation, vector labels: class id burnt for features without an attribute.")
    attribute: str | None = None
    """Segmentation, vector labels: the attribute holding each feature's class (default: the attribute the bundle was
    trained with, when the file has it)."""
    mapping: str | None = None
    """Segmentation, vector labels: attribute value -> class id, 'a=1,b=2' or a JSON object (default: the mapping the
    bundle was trained with for that attribute)."""
    layer: str | None = None
    """Segmentation, vector labels: the layer of a multi-layer file (default: the first)."""
    aoi: str | None = None
    """Segmentation, one image: polygons of the labelled extent; pixels outside them are unknown, not scored (default:
    every pixel of the image is labelled)."""
    mask_nodata: int | None = None
    """Segmentation, mask raster: the value meaning unknown (default: the mask's nodata)."""
    overrides: list[str] = Field(default_factory=list, description="Overrides of the config behind a split: key.sub=value.")
    inference: InferenceConfig = Field(default_factory=InferenceConfig)
    """Sliding windows, device, precision, backend."""
    overlays: int = Field(4, ge=0, description="Overlay PNGs (image | truth | prediction) to write.")
    overlay_size: int = Field(512, ge=32, description="Side of each overlay panel in pixels.")
    log_to_run: bool = True
    """Log the metrics (`<split>/...`) and files to the MLflow run that trained the bundle, when it records one and its
    store is found (the run folder's mlflow.db, or tracking_uri)."""
    split: Literal["test", "val"] = "test"
    """With a config (or none): 'test' (its data.test) or 'val' (the exact validation split the bundle records; figures
    logged as val/...). Other data is always 'test'."""
    tracking_uri: str | None = Field(None, description="MLflow store of the training run (default: mlflow.db beside the bundle).")


class ExportConfig(_Strict):
    """``terraseg export``: add an exported graph to a bundle."""

    format: Literal["onnx"] = Field("onnx", description="Export format.")
    out: str | None = Field(None, description="Write the bundle with the graph here (default: in place).")
    opset: int = Field(17, ge=17, description="ONNX opset.")
    check_images: list[str] = Field(default_factory=list)
    """Real images whose windows check ONNX Runtime against PyTorch."""
    window: int = Field(256, ge=32, multiple_of=32, description="Check window side in pixels.")
    max_windows: int = Field(4, ge=1, description="Windows checked.")
    quantize: Literal["none", "int8"] = Field("none", description="Also add an INT8 graph (ONNX Runtime static quantization).")
    max_disagreement: float = Field(0.01, ge=0, le=1)
    """INT8: largest share of calibration pixels whose class may differ from float32; above it the INT8 graph is refused."""


class ServeConfig(_Strict):
    """``terraseg serve``: the REST API and web page."""

    models: list[str] = Field(min_length=1, description="Bundle paths or MLflow URIs (models:/name@alias).")
    inference: InferenceConfig = Field(default_factory=InferenceConfig)
    """Sliding windows, device, precision, backend."""
    tracking_uri: str | None = Field(None, description="MLflow tracking/registry URI for models:/ references.")
    batch_wait_ms: float | None = Field(None, ge=0)
    """Micro-batching: requests' windows arriving within this many milliseconds share one forward pass
    (terraseg.infer.backends.BatchingBackend); a lone request does not wait. Default: 5 (512x512 uploads on a 2-core
    CPU: 8.41 / 8.88 requests per second at 4 / 16 clients, 8.01 / 8.65 without batching; docs/benchmarks.md); 0: off."""
    max_batch: int = Field(16, ge=1)
    """Micro-batching: most windows per shared forward pass. Passes are also capped at the batch measured fastest per
    pixel when the server starts (terraseg.infer.backends.best_batch_pixels): on a CPU a larger batch can be slower
    per pixel."""
    max_upload_mb: float = Field(64.0, gt=0, description="Largest accepted upload in MB.")
    max_pixels: int = Field(64_000_000, gt=0, description="Largest accepted image in pixels (width x height).")
    max_seconds: float = Field(120.0, gt=0)
    """Largest estimated compute time of one request in seconds (windows x the time per window measured at start-up);
    larger images are refused with 413 before any work."""
    max_queue: int = Field(32, ge=1)
    """Requests per model waiting or running before new ones get 503 with Retry-After."""
    results_ttl_minutes: float = Field(60.0, gt=0)
    """Web-page results older than this are removed (all are removed at shutdown when kept in a temporary folder)."""
    api_key: str | None = Field(None, description="When set, /v1 endpoints require header X-API-Key with this value.")
    results_dir: str | None = Field(None, description="Where web-page results are kept (default: a temporary folder).")
    keep_results: int = Field(50, ge=1, description="Web-page results kept (oldest removed first).")
    vendor_dir: str | None = Field(None, description="Folder holding leaflet/ (default: the checkout's node_modules).")
    engine: Literal["local", "ray"] = "local"
    """'local': the network runs in this process; 'ray': each segmentation model is a Ray Serve deployment (replicas,
    resources, autoscaling) behind this gateway, which decodes, normalises, tiles and blends."""
    ray: RayConfig = Field(default_factory=RayConfig, description="Ray settings (engine 'ray').")


def with_inference(cls: type[M], source: str = "options", **kwargs: Any) -> M:
    """Like :func:`build_options`, routing :class:`InferenceConfig` fields (window, overlap, ...) into ``inference``.

    Raises:
        ConfigError: one sentence naming each bad option.
    """
    inf = {k: kwargs.pop(k) for k in list(kwargs) if k in InferenceConfig.model_fields}
    if "inference" not in kwargs or kwargs["inference"] is None:
        kwargs["inference"] = build_options(InferenceConfig, source, **inf)
    elif inf:
        kwargs["inference"] = build_options(InferenceConfig, source, **(kwargs["inference"].model_dump() | inf))
    return build_options(cls, source, **kwargs)


__all__ = [
    "EvaluateConfig",
    "ExportConfig",
    "InferenceConfig",
    "PredictConfig",
    "RayConfig",
    "ServeConfig",
    "build_options",
    "with_inference",
]
