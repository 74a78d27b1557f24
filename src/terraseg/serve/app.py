"""The REST API and web page: FastAPI app serving one or more bundles.

Endpoints: ``POST /v1/segment`` (multipart image -> png | geotiff | json | geojson), ``POST
/v1/classify`` (classification bundles), ``GET /v1/models``, ``GET /healthz``, ``GET /readyz``, the
web page at ``/`` with its job endpoints under ``/ui``. Uploads are treated as data: the client's
file name is only checked (never used as a path), bytes are streamed to a private temporary folder
with a size limit, image size is checked from the header before decoding (decompression bombs),
and every failure is a 4xx with ``{"error": "..."}`` naming the problem.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Literal

from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from terraseg.config.inference import ServeConfig
from terraseg.serve import upload
from terraseg.serve.errors import RESPONSES, ApiError, install_handlers
from terraseg.serve.guard import OWNER_COOKIE, SESSION_COOKIE, BodyLimit, KeyGuard, SecurityHeaders, owner_of, owner_token
from terraseg.serve.metrics import Metrics
from terraseg.serve.registry import ServedModel, load_models
from terraseg.version import __version__

log = logging.getLogger(__name__)
WEB = Path(__file__).parent / "web"


def _vendor_dir(cfg: ServeConfig) -> Path | None:
    """The folder holding Leaflet's ``leaflet.js``: ``vendor_dir``, the package's own copy (wheels, see
    setup.py), else a checkout's ``node_modules``."""
    for cand in ([Path(cfg.vendor_dir)] if cfg.vendor_dir else []) + [
        WEB / "vendor",
        Path(__file__).resolve().parents[3] / "node_modules",
        Path.cwd() / "node_modules",
    ]:
        for leaflet in (cand / "leaflet" / "dist", cand / "leaflet"):
            if (leaflet / "leaflet.js").exists():
                return leaflet
    return None


class _Served:
    """What the routes share: the config, the served models, the API-key guard, metrics and the results folder."""

    def __init__(self, cfg: ServeConfig, models: dict[str, ServedModel], results: Path, metrics: Metrics | None) -> None:
        self.cfg, self.models, self.results, self.metrics = cfg, models, results, metrics
        self.ready = True
        self.guard = KeyGuard(cfg.api_key)

    def check_key(self, request: Request) -> None:
        """Refuse a request without the API key (or the page's session cookie) when one is set."""
        self.guard.check(request.headers, request.cookies, request.client.host if request.client else "?")

    def model(self, name: str | None, endpoint: str) -> ServedModel:
        """The served model ``name`` (default: the first whose task answers ``endpoint``): 404 naming the served ones,
        422 when its task answers another route."""
        if name is None:
            name = next((n for n, x in self.models.items() if x.task.endpoint == endpoint), None)
            if name is None:
                first = next(iter(self.models.values()))
                raise ApiError(
                    422,
                    f"no model served here answers /v1/{endpoint}: '{first.name}' {first.task.noun}; "
                    f"use /v1/{first.task.endpoint}.",
                )
        if name not in self.models:
            raise ApiError(404, f"unknown model '{name}'; served: {', '.join(self.models)}.")
        m = self.models[name]
        if m.task.endpoint != endpoint:
            raise ApiError(422, f"model '{m.name}' {m.task.noun}; use /v1/{m.task.endpoint}.")
        return m


def create_app(cfg: ServeConfig, models: dict[str, ServedModel] | None = None) -> FastAPI:
    """Build the app for ``cfg`` (``models`` may be passed pre-loaded, e.g. in tests).

    Args:
        cfg: :class:`terraseg.config.inference.ServeConfig`.
        models: pre-loaded models by name (tests); default: loaded from ``cfg.models``.

    Returns:
        The FastAPI app (REST API, web page, static assets).

    Raises:
        BundleError: a bundle or registry reference cannot be loaded.
        ConfigError: no model given.
    """
    if models is None:
        models = load_models(cfg.models, cfg.inference, cfg.tracking_uri, cfg.batch_wait_ms, cfg.max_batch, cfg.engine, cfg.ray)
    for m in models.values():
        m.max_queue, m.max_seconds = cfg.max_queue, cfg.max_seconds
    results = Path(cfg.results_dir) if cfg.results_dir else Path(tempfile.mkdtemp(prefix="terraseg-results-"))
    results.mkdir(parents=True, exist_ok=True)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        if not cfg.results_dir:  # our temporary folder: uploads and results do not outlive the server
            shutil.rmtree(results, ignore_errors=True)

    app = FastAPI(
        title="terraseg",
        version=__version__,
        lifespan=lifespan,
        description="Segment (and classify) satellite and aerial images with terraseg bundles.",
    )
    install_handlers(app)
    # the page posts an image and a ground truth: two uploads plus the multipart framing
    app.add_middleware(BodyLimit, limit=int(2 * cfg.max_upload_mb * 1e6) + 1_000_000)
    app.add_middleware(SecurityHeaders)
    metrics = Metrics.create()
    if metrics is not None:
        app.add_middleware(metrics.middleware)
        for m in models.values():
            m.on_drift = metrics.drift
    served = _Served(cfg, models, results, metrics)
    _service_routes(app, served)
    _api_routes(app, served)
    _page_routes(app, served)
    return app


def _service_routes(app: FastAPI, s: _Served) -> None:
    """Liveness, readiness, Prometheus metrics and the list of served models."""
    metrics = s.metrics

    @app.get("/healthz", summary="Liveness: the process answers.")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get(
        "/metrics",
        summary="Prometheus metrics: requests and latency by route and status, drift flags by model.",
        include_in_schema=metrics is not None,
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}}, **RESPONSES},
    )
    def prometheus_metrics(request: Request) -> Response:
        if metrics is None:
            raise ApiError(404, "metrics need prometheus-client (pip install prometheus-client).")
        s.check_key(request)
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/readyz", summary="Readiness: models are loaded.")
    async def readyz() -> JSONResponse:
        ok = s.ready and bool(s.models)
        return JSONResponse({"ready": ok, "models": list(s.models)}, status_code=200 if ok else 503)

    @app.get("/v1/models", summary="Served models: name, version, task, bands, classes, metrics.", responses=RESPONSES)
    def list_models(request: Request) -> list[dict]:
        s.check_key(request)
        return [m.info() for m in s.models.values()]


def _api_routes(app: FastAPI, s: _Served) -> None:
    """``POST /v1/segment`` and ``POST /v1/classify``: an upload in, an answer out, nothing kept."""
    cfg = s.cfg

    @app.post(
        "/v1/segment",
        summary="Segment an uploaded image.",
        responses={
            200: {
                "content": {
                    "image/png": {},
                    "image/tiff": {},
                    "application/json": {
                        "example": {"width": 2, "height": 1, "classes": ["background", "building"], "mask": [[0, 1]]}
                    },
                    "application/geo+json": {},
                }
            },
            **RESPONSES,
        },
    )
    def segment(
        request: Request,
        file: UploadFile = File(description="PNG, JPEG or GeoTIFF (any band count the model accepts)."),
        format: Literal["png", "geotiff", "json", "geojson"] = Query(
            "png",
            description="png: class ids; geotiff: georeferenced like the input; json: class-id array; geojson: polygons in the input CRS.",
        ),
        model: str | None = Query(None, description="Model name (GET /v1/models); default: the first served."),
    ) -> Response:
        s.check_key(request)
        m = s.model(model, "segment")
        with tempfile.TemporaryDirectory(prefix="terraseg-req-") as tmp:
            path = upload.save(file, Path(tmp), cfg.max_upload_mb, cfg.max_pixels)
            return upload.segment_response(m, path, Path(tmp), format, file.filename or path.name)

    @app.post(
        "/v1/classify",
        summary="Classify an uploaded image (classification bundles): class probabilities.",
        responses={
            200: {
                "content": {
                    "application/json": {
                        "example": {"model": "intel-scenes", "predicted": "sea", "probabilities": {"sea": 0.91, "glacier": 0.05}}
                    }
                }
            },
            **RESPONSES,
        },
    )
    def classify(
        request: Request,
        file: UploadFile = File(
            description="PNG, JPEG or GeoTIFF with the model's band count (any size; resized to the model's input)."
        ),
        model: str | None = Query(
            None, description="Model name (GET /v1/models); default: the first classification model served."
        ),
        top: int = Query(0, ge=0, description="Return only the top-N classes (0 = all)."),
    ) -> dict:
        s.check_key(request)
        m = s.model(model, "classify")
        with tempfile.TemporaryDirectory(prefix="terraseg-req-") as tmp:
            path = upload.save(file, Path(tmp), cfg.max_upload_mb, cfg.max_pixels)
            return upload.classify_response(m, path, file.filename or path.name, top)


def _page_routes(app: FastAPI, s: _Served) -> None:
    """The web page, its session cookie, and the results it keeps per browser (``/ui/jobs``)."""
    cfg, results = s.cfg, s.results
    vendor = _vendor_dir(cfg)
    if vendor is not None:
        app.mount("/vendor", StaticFiles(directory=vendor), name="vendor")
    app.mount("/static", StaticFiles(directory=WEB), name="static")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    @app.get("/result/{job}", response_class=HTMLResponse, include_in_schema=False)
    async def page(job: str | None = None) -> HTMLResponse:
        return HTMLResponse((WEB / "index.html").read_text())

    @app.post("/ui/session", summary="Web page: exchange the API key for a session cookie.", responses=RESPONSES)
    def create_session(request: Request, response: Response, key: str = Form(...)) -> dict:
        if cfg.api_key is None:
            return {"session": False}
        token = s.guard.login(key, request.client.host if request.client else "?")
        response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="strict")
        return {"session": True}

    def _owner(request: Request) -> str | None:
        return owner_of(request.cookies.get(OWNER_COOKIE))

    def _job(request: Request, job: str) -> tuple[Path, dict]:
        """A kept result of this browser's: its folder and description (404 for any other client, as for a missing one)."""
        folder = results / _safe(job)
        f = folder / "job.json"
        meta = json.loads(f.read_text()) if f.is_file() else {}
        if not meta or meta.get("owner") != _owner(request):
            raise ApiError(
                404,
                f"no result '{job}' (results are kept for {cfg.results_ttl_minutes:g} minutes, "
                f"the last {cfg.keep_results} uploads).",
            )
        return folder, meta

    @app.post(
        "/ui/jobs", summary="Web page: segment an upload (and optional ground truth) and keep the result.", responses=RESPONSES
    )
    def create_job(
        request: Request,
        response: Response,
        file: UploadFile = File(...),
        truth: UploadFile | None = File(None),
        model: str | None = Form(None),
    ) -> dict:
        s.check_key(request)
        m = s.model(model or None, "segment")  # the page shows maps
        token = request.cookies.get(OWNER_COOKIE)
        if not token:
            token = owner_token()
            response.set_cookie(OWNER_COOKIE, token, httponly=True, samesite="strict")
        _prune(results, cfg.keep_results, cfg.results_ttl_minutes)
        job = uuid.uuid4().hex[:16]
        folder = results / job
        folder.mkdir()
        try:
            path = upload.save(file, folder, cfg.max_upload_mb, cfg.max_pixels, stem="input")
            truth_path = (
                upload.save(truth, folder, cfg.max_upload_mb, cfg.max_pixels, stem="truth", vectors=True)
                if truth and truth.filename
                else None
            )
            meta = upload.web_result(m, path, truth_path, folder, file.filename or path.name)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        meta["id"] = job
        (folder / "job.json").write_text(json.dumps(meta | {"owner": owner_of(token)}))
        return meta

    @app.get("/ui/jobs/{job}", summary="Web page: a kept result of this browser.", responses=RESPONSES)
    def get_job(request: Request, job: str) -> dict:
        s.check_key(request)
        meta = _job(request, job)[1]
        meta.pop("owner", None)
        return meta

    @app.get("/ui/jobs/{job}/{name}", summary="Web page: a file of a kept result of this browser.", responses=RESPONSES)
    def job_file(request: Request, job: str, name: str) -> FileResponse:
        s.check_key(request)
        f = _job(request, job)[0] / _safe(name)
        if not f.is_file() or f.name in ("job.json",):
            raise ApiError(404, f"no file '{name}' in result '{job}'.")
        return FileResponse(f, filename=f.name)


def _safe(part: str) -> str:
    if not part or "/" in part or "\\" in part or part.startswith("."):
        raise ApiError(400, f"'{part}' is not a valid name.")
    return part


def _prune(results: Path, keep: int, ttl_minutes: float) -> None:
    """Remove results older than ``ttl_minutes``, then the oldest beyond the ``keep`` newest."""
    jobs = sorted((p for p in results.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    cutoff = time.time() - ttl_minutes * 60
    for old in jobs:
        if old.stat().st_mtime < cutoff:
            shutil.rmtree(old, ignore_errors=True)
    jobs = [p for p in jobs if p.exists()]
    for old in jobs[: max(len(jobs) - keep + 1, 0)]:  # room for the one about to be made
        shutil.rmtree(old, ignore_errors=True)


def app_from_env() -> FastAPI:
    """App factory for ``uvicorn --factory`` with several workers: options from ``$TERRASEG_SERVE`` (JSON)."""
    import os

    return create_app(ServeConfig.model_validate_json(os.environ["TERRASEG_SERVE"]))
