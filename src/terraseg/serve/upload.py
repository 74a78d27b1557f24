"""Upload handling and the work behind the endpoints: validate, predict, encode the response."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from fastapi import UploadFile
from fastapi.responses import JSONResponse, Response
from PIL import Image

from terraseg.data.sources import scene_from_path
from terraseg.errors import TerrasegError
from terraseg.formats import UPLOAD_IMAGE_SUFFIXES as IMAGE_SUFFIXES
from terraseg.formats import UPLOAD_VECTOR_SUFFIXES as VECTOR_SUFFIXES
from terraseg.formats import is_mask_raster, is_photo
from terraseg.infer.drift import bundle_drift
from terraseg.infer.inputs import open_input, read_input_image
from terraseg.io.images import write_png
from terraseg.io.predictions import encode_class_ids, write_prediction
from terraseg.io.raster import raster_info
from terraseg.io.render import blend_overlay, colorize, display_rgb
from terraseg.serve.errors import fail, user_error

CHUNK = 1 << 20


def save(file: UploadFile, folder: Path, max_mb: float, max_pixels: int, stem: str = "upload", vectors: bool = False) -> Path:
    """Stream an upload to ``folder/<stem><suffix>`` after checking its name, size and pixel count.

    Args:
        file: the upload.
        folder: private temporary folder.
        max_mb: size limit in MB (10^6 bytes).
        max_pixels: width x height limit.
        stem: stored file stem (the client's name is never used as a path).
        vectors: also accept vector files (ground truth).

    Returns:
        The stored file.

    Raises:
        ApiError: 400 path in the name / empty file, 413 too large (bytes or pixels), 415 not an image.
    """
    name = file.filename or ""
    if "/" in name or "\\" in name or ".." in name or name.startswith("."):
        fail(400, f"file name '{name}' must be a plain name without a path.")
    suffix = Path(name).suffix.lower()
    allowed = IMAGE_SUFFIXES | (VECTOR_SUFFIXES if vectors else set())
    if suffix not in allowed:
        fail(415, f"'{name}': unsupported file type '{suffix or '(none)'}'; send {', '.join(sorted(allowed))}.")
    target = folder / f"{stem}{suffix}"
    limit = int(max_mb * 1e6)
    size = 0
    with open(target, "wb") as out:
        while chunk := file.file.read(CHUNK):
            size += len(chunk)
            if size > limit:
                fail(413, f"'{name}' is larger than the upload limit of {max_mb:g} MB.")
            out.write(chunk)
    if size == 0:
        fail(400, f"'{name}' is empty.")
    if suffix in IMAGE_SUFFIXES:
        w, h = _image_size(target, name)
        if w * h > max_pixels:
            fail(413, f"'{name}' is {w}x{h} pixels, over the limit of {max_pixels:,} pixels.")
    return target


def _image_size(path: Path, name: str) -> tuple[int, int]:
    """Width and height from the file header only (no pixel decoding)."""
    if is_photo(path):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(path) as im:
                    return im.size
        except Image.DecompressionBombError as e:
            fail(413, f"'{name}' claims a huge image ({e}).")
        except Exception:
            fail(415, f"'{name}' is not a readable {path.suffix[1:].upper()} image.")
    try:
        info = raster_info(path)
    except TerrasegError:
        fail(415, f"'{name}' is not a readable GeoTIFF.")
    return info.width, info.height


def check_budget(model, height: int, width: int, name: str) -> None:
    """Refuse (413) an image whose estimated compute time exceeds the model's ``max_seconds``.

    Args:
        model: the served model (``estimated_seconds``, ``max_seconds``).
        height: the image in pixels.
        width: the image in pixels.
        name: the client's file name.

    Raises:
        ApiError: 413 naming the estimate and the limit.
    """
    est = model.estimated_seconds(height, width)
    if est is not None and model.max_seconds is not None and est > model.max_seconds:
        fail(
            413,
            f"'{name}' ({width}x{height} pixels) would take about {est:.0f} s to predict here, over the limit of "
            f"{model.max_seconds:g} s per request (serve --max-seconds).",
        )


def _predict(model, path: Path, name: str, probabilities: bool = True, drift: bool = True):
    """Scene, class ids ``(H, W)`` int64 (-1 nodata), probabilities ``(K, H, W)`` (or None) and, with ``drift``, the
    input-drift report (or None) of an upload, the drift check run while the network does; errors -> 422."""
    try:
        scene = open_input(model.bundle, path)
        check_budget(model, scene.height, scene.width, name)
        (ids, probs), drift = model.run_beside(
            model.predictor.predict_array, (scene, probabilities), (lambda: bundle_drift(model.bundle, scene)) if drift else None
        )
    except TerrasegError as e:
        user_error(e, path, name)
    return scene, ids, probs, drift


def classify_response(model, path: Path, name: str, top: int = 0) -> dict:
    """Class probabilities of an uploaded image (classification bundle); errors -> 422.

    Args:
        model: the served classification model.
        path: the stored upload.
        name: the client's file name.
        top: keep the N most probable classes (0: all).

    Returns:
        ``{"model", "predicted", "probabilities"}``.

    Raises:
        ApiError: 422 for an unreadable image or a band count the model does not take, 413 over ``--max-seconds``.
    """
    try:
        img = read_input_image(model.bundle, str(path))
        check_budget(model, img.shape[-2], img.shape[-1], name)  # one input per image: the measured time of one
        probs = model.run(model.predictor.probabilities, [img])[0]
    except TerrasegError as e:
        user_error(e, path, name)
    names = model.bundle.class_names
    order = np.argsort(-probs)[: top or len(names)]
    return {
        "model": model.name,
        "predicted": names[int(order[0])],
        "probabilities": {names[i]: round(float(probs[i]), 6) for i in order},
    }


def _write(model, scene, ids: np.ndarray, folder: Path, probs: np.ndarray | None = None) -> Path:
    """The prediction as a GeoTIFF (georeferenced like the upload) through the one prediction writer."""
    m = model.bundle.manifest
    target = folder / "classes.tif"
    write_prediction(
        target, scene.grid, ids, model.bundle.class_names, [c.color for c in m.classes], probs, folder / "classes_probs.tif"
    )
    return target


def _geojson(model, scene, ids: np.ndarray, probs: np.ndarray, folder: Path) -> Path:
    """Polygons of the prediction, from the arrays (no raster written and read back)."""
    from terraseg.prediction.vectorize import vectorize_array

    gdf = vectorize_array(ids, scene.transform, scene.crs, probs, model.bundle.class_names)
    out = folder / "regions.geojson"
    out.write_text(gdf.to_json(drop_id=True))
    return out


def segment_response(model, path: Path, folder: Path, fmt: str, name: str) -> Response:
    """Run the model on an uploaded file (``name``: the client's file name) and encode the result as ``fmt``.

    Class ids use the encoding of :func:`terraseg.io.predictions.class_encoding` in every format
    (255 = nodata below 255 classes), so the JSON, PNG and GeoTIFF answers agree.

    Args:
        model: the served model.
        path: the stored upload.
        folder: the request's temporary folder.
        fmt: 'png', 'geotiff', 'json' or 'geojson'.
        name: the client's file name.

    Returns:
        The HTTP response (class-id PNG, GeoTIFF on the upload's grid, JSON array, or GeoJSON polygons in its CRS).

    Raises:
        ApiError: 422 for an input the model cannot take.
    """
    scene, ids, probs, drift = _predict(model, path, name, probabilities=fmt == "geojson")  # only polygons carry confidence
    if drift is not None and drift.drifted and model.on_drift is not None:
        model.on_drift(model.name)
    headers = {"X-Terraseg-Drift": ",".join(drift.flagged) if drift is not None and drift.drifted else "none"}
    K = model.bundle.num_classes
    if fmt == "json":
        from terraseg.io.predictions import class_encoding

        return JSONResponse(
            {
                "model": model.name,
                "width": int(ids.shape[1]),
                "height": int(ids.shape[0]),
                "classes": model.bundle.class_names,
                "nodata": class_encoding(K)[1],
                "mask": encode_class_ids(ids, K).tolist(),
                "drift": drift.to_dict() if drift is not None else None,
            },
            headers=headers,
        )
    if fmt == "png":
        buf = io.BytesIO()
        Image.fromarray(encode_class_ids(ids, K)).save(buf, format="PNG", compress_level=1)  # 1: a fraction of level 6's time
        return Response(buf.getvalue(), media_type="image/png", headers=headers)
    if fmt == "geotiff":
        return Response(_write(model, scene, ids, folder).read_bytes(), media_type="image/tiff", headers=headers)
    out = _geojson(model, scene, ids, probs, folder)
    return Response(out.read_bytes(), media_type="application/geo+json", headers=headers)


def _latlon_bounds(scene) -> list[list[float]] | None:
    if scene.crs is None:
        return None
    from rasterio.warp import transform_bounds

    w, s, e, n = transform_bounds(scene.crs, "EPSG:4326", *scene.window_bounds(0, 0, scene.height, scene.width), densify_pts=21)
    return [[s, w], [n, e]]


def confidence_layer(probs: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, float | None]:
    """The page's confidence layer: ``(4, H, W)`` uint8 RGBA where uncertain pixels show and certain ones are clear.

    Uncertainty is ``(1 - max probability) / (1 - 1/K)`` (0: one class certain, 1: all classes equally
    likely; :func:`terraseg.infer.sliding.confidence_bands`' first band), drawn from yellow (a little)
    to red (a coin toss) with an opacity that grows with it; nodata is transparent.

    Args:
        probs: ``(K, H, W)`` float32 probabilities.
        valid: ``(H, W)`` bool.

    Returns:
        ``(RGBA layer, mean max probability over valid pixels or None)``.
    """
    k = max(probs.shape[0], 2)
    top = probs.max(axis=0) if probs.shape[0] > 1 else np.maximum(probs[0], 1 - probs[0])
    u = np.clip((1 - top) / (1 - 1 / k), 0, 1)
    u = np.where(valid, u, 0)
    rgba = np.stack(
        [
            np.full(u.shape, 255, np.uint8),
            (220 * (1 - u)).astype(np.uint8),
            np.zeros(u.shape, np.uint8),
            (np.sqrt(u) * 230).astype(np.uint8),
        ]
    )
    mean = float(top[valid].mean()) if valid.any() else None
    return rgba, mean


def web_result(model, path: Path, truth: Path | None, folder: Path, name: str) -> dict:
    """Predict an upload for the web page and write its display files; return the page's description.

    Args:
        model: the served model.
        path: the stored upload.
        truth: optional ground truth (mask on the image grid, or a vector file).
        folder: the result's folder (kept for the page).
        name: the client's file name.

    Returns:
        The page's description: size, CRS, bounds in EPSG:4326, legend, file names, class pixel counts, truth layer.

    Raises:
        ApiError: 422 for an input or truth that does not fit.
    """
    scene, ids, probs, _ = _predict(model, path, name, drift=False)
    colors = [c.color for c in model.bundle.manifest.classes]
    r = scene.read(0, 0, scene.height, scene.width, labels=False)
    rgb = display_rgb(r.image, r.valid)
    write_png(folder / "image.png", rgb)
    pred = colorize(np.where(ids < 0, 0, ids), colors)
    alpha = ((ids > 0) * 255).astype(np.uint8)  # background and nodata transparent on the map
    write_png(folder / "prediction.png", np.concatenate([pred, alpha[None]]))
    write_png(folder / "overlay.png", blend_overlay(rgb, ids, colors))
    files = {"image": "image.png", "prediction": "prediction.png", "overlay": "overlay.png"}
    confidence = None
    if probs is not None:
        layer, confidence = confidence_layer(probs, ids >= 0)
        write_png(folder / "confidence.png", layer)
        files["confidence"] = "confidence.png"
    if scene.crs is not None:
        files["classes"] = _write(model, scene, ids, folder, probs).name
        files["regions"] = _geojson(model, scene, ids, probs, folder).name
    else:
        write_prediction(folder / "classes.png", scene.grid, ids, model.bundle.class_names)
        files["classes"] = "classes.png"
    out = {
        "model": model.name,
        "width": scene.width,
        "height": scene.height,
        "crs": scene.crs.to_string() if scene.crs else None,
        "bounds": _latlon_bounds(scene),
        "legend": [c.model_dump() for c in model.bundle.manifest.classes],
        "files": files,
        "class_pixels": np.bincount(ids[ids >= 0].ravel(), minlength=len(colors)).tolist(),
        "mean_confidence": confidence,
    }
    if truth is not None:
        out["truth"] = _truth_layer(scene, truth, folder, colors)
    return out


def _truth_layer(scene, truth: Path, folder: Path, colors: list[str]) -> dict:
    """Ground truth for the map: a mask on the image grid -> PNG overlay, a vector file -> GeoJSON in EPSG:4326."""
    try:
        if is_mask_raster(truth):
            t = scene_from_path(scene.path, labels=truth, ignore_index=255)
            mask = t.read(0, 0, scene.height, scene.width).mask
            rgba = np.concatenate(
                [colorize(np.where(mask == 255, 0, mask), colors), ((mask > 0) & (mask != 255))[None].astype(np.uint8) * 255]  # type: ignore[arg-type, index, operator]
            )
            write_png(folder / "truth.png", rgba)
            return {"kind": "image", "file": "truth.png"}
        from terraseg.io.vector import read_vector

        gdf = read_vector(truth)
        if gdf.crs is None and scene.crs is not None:
            gdf = gdf.set_crs(scene.crs)
        gdf = gdf.to_crs("EPSG:4326")[["geometry"]]
        (folder / "truth.geojson").write_text(gdf.to_json())
        return {"kind": "geojson", "file": "truth.geojson"}
    except TerrasegError as e:
        user_error(e, truth, truth.name)
