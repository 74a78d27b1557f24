"""Batch prediction on Ray (``terraseg predict --engine ray``): the single-process predictor and writer, on many workers.

Work units are whole scenes or, when a few large scenes would leave workers idle, row bands of a
scene. A band is a run of the predictor's strips (:meth:`SlidingWindowPredictor.strip_rows`); its
worker also computes the strips above it whose windows reach into its first row (a halo of one
window), so its blocks are exactly those of the whole-scene run (Hann blending included). Bands
are written as part rasters under ``<out>/.terraseg-parts/<stem>/`` and assembled, strip by strip,
into the one output of the scene by the same :class:`terraseg.io.predictions.PredictionWriter`:
outputs equal the single-process ones (class ids identical; probabilities copied bit for bit).

Actors (:class:`PredictWorker`) load the bundle once, from bytes in Ray's object store (nothing
needs the bundle on a shared disk), on a GPU when they were given one. Inputs and outputs must be
reachable from every worker (one machine, a shared file system, or GDAL paths such as
``/vsicurl/`` / ``/vsis3/`` for inputs). A unit whose actor dies, or that fails with an I/O error,
is retried up to ``ray.max_retries`` times; a bad input (:class:`terraseg.errors.TerrasegError`) is
reported and the others go on. Parts and outputs are written atomically, so ``--resume`` skips what
an interrupted run completed. Ray itself: https://docs.ray.io/en/latest/ray-core/actors.html.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from terraseg import progress
from terraseg.errors import ConfigError, TerrasegError

if TYPE_CHECKING:
    from terraseg.bundle import Bundle
    from terraseg.config.inference import PredictConfig

log = logging.getLogger(__name__)

PARTS = ".terraseg-parts"
FAULT_ENV = "TERRASEG_FAULT_ONCE"  # tests: a folder; each unit fails once with an OSError (retry test)


@dataclass
class Unit:
    """One piece of work: a whole scene (``strips`` None), a row band of one, or the assembly of a scene's bands.

    Attributes:
        path: input (file or GDAL path).
        stem: output name.
        strips: ``(first, stop)`` strip indexes
        of a band.
        rows: ``(first row, stop row)`` of the scene the unit writes (pixels).
        pixels: output pixels (progress).
        kind: 'scene', 'band' or 'assemble'.
    """

    path: str
    stem: str
    kind: str = "scene"
    strips: tuple[int, int] | None = None
    rows: tuple[int, int] = (0, 0)
    pixels: int = 0
    parts: list[dict[str, str]] = field(default_factory=list)

    @property
    def key(self) -> str:
        """A name unique among the units of a run."""
        return f"{self.stem}.{self.kind}" + (f".{self.strips[0]:05d}" if self.strips else "")


def part_paths(out_dir: Path, stem: str, first_strip: int, probabilities: bool, uncertainty: bool) -> dict[str, str]:
    """The part rasters of the band starting at strip ``first_strip``: ``{"prediction", "probabilities", "confidence"}``.

    Args:
        out_dir: the output folder.
        stem: the scene's output name.
        first_strip: the band's first strip index.
        probabilities: whether those parts are written.
        uncertainty: whether those parts are written.
    """
    d = out_dir / PARTS / stem
    paths = {"prediction": str(d / f"band{first_strip:05d}.tif")}
    if probabilities:
        paths["probabilities"] = str(d / f"band{first_strip:05d}_probs.tif")
    if uncertainty:
        paths["confidence"] = str(d / f"band{first_strip:05d}_confidence.tif")
    return paths


def plan_units(
    bundle: Bundle, cfg: PredictConfig, items: list[tuple[str, str]], workers: int
) -> tuple[list[Unit], dict[str, str]]:
    """Cut the inputs into units: whole scenes when there are enough of them, else row bands of the large ones.

    With one worker, or at least two inputs per worker, every scene is one unit (headers are not even read here).
    Otherwise each georeferenced scene gets bands in proportion to its share of the pixels, about two
    units per worker in all (load balance), each band at least two strips high so the halo (one
    strip, recomputed) stays a small cost.

    Args:
        bundle: the loaded bundle (band selection, window geometry).
        cfg: the predict config.
        items: ``(path, stem)`` pairs.
        workers: actors.

    Returns:
        ``(units, failures)``: failures map inputs that cannot be opened to their one-line reason.
    """
    from terraseg.infer.inputs import open_input
    from terraseg.infer.sliding import tiling_for

    if len(items) >= 2 * workers or workers == 1:
        return [Unit(p, s) for p, s in items], {}
    tiling = tiling_for(bundle, cfg.inference)
    failures: dict[str, str] = {}
    scenes = []
    for path, stem in items:
        try:
            scene = open_input(bundle, path)
            tiling.check_scene(scene)
            scenes.append((path, stem, scene))
        except TerrasegError as e:
            failures[path] = str(e)
    total = sum(s.height * s.width for _, _, s in scenes) or 1
    units: list[Unit] = []
    for path, stem, scene in scenes:
        ys = tiling.strip_rows(scene)
        share = scene.height * scene.width / total
        bands = min(len(ys) // 2, max(1, round(2 * workers * share))) if scene.grid.georeferenced else 1
        if bands <= 1:
            units.append(Unit(path, stem, pixels=scene.height * scene.width, rows=(0, scene.height)))
            continue
        edges = [round(i * len(ys) / bands) for i in range(bands + 1)]
        for a, b in zip(edges[:-1], edges[1:]):
            stop_row = ys[b] if b < len(ys) else scene.height
            units.append(Unit(path, stem, "band", (a, b), (ys[a], stop_row), (stop_row - ys[a]) * scene.width))
    return units, failures


class PredictWorker:
    """A Ray actor's state: the bundle, loaded once, and the single-process predictor built from it.

    Args:
        bundle_bytes: the ``.terraseg`` file's bytes.
        cfg: the predict config as a dict.
        threads: torch CPU threads (the CPUs Ray reserved for this actor).
    """

    def __init__(self, bundle_bytes: bytes, cfg: dict[str, Any], threads: int) -> None:
        import torch

        from terraseg.bundle import Bundle
        from terraseg.config.inference import PredictConfig
        from terraseg.infer.sliding import predictor_for

        torch.set_num_threads(max(1, threads))
        self.bundle = Bundle.from_bytes(bundle_bytes)
        self.cfg = PredictConfig.model_validate(cfg)
        self.predictor = predictor_for(self.bundle, self.cfg.inference)
        self.colors = [c.color for c in self.bundle.manifest.classes]

    def device(self) -> str:
        """Where this actor's network runs (e.g. 'cuda:0', 'cpu')."""
        return str(self.predictor.device)

    def run(self, unit: Unit) -> tuple[str, Any]:
        """Do one unit; ``("ok", outputs)`` or ``("failed", one-line reason)`` for a bad input.

        Raises:
            OSError and others: retried by the driver (up to ``ray.max_retries``).
        """
        fault = os.environ.get(FAULT_ENV)
        if fault:  # test hook: the first attempt of every unit fails, as a flaky disk or network would
            marker = Path(fault) / unit.key
            if not marker.exists():
                marker.parent.mkdir(parents=True, exist_ok=True)
                marker.touch()
                raise OSError(f"injected fault in {unit.key}")
        try:
            if unit.kind == "assemble":
                return "ok", self._assemble(unit)
            if unit.kind == "band":
                return "ok", self._band(unit)
            return "ok", self._scene(unit)
        except TerrasegError as e:
            return "failed", str(e)

    def _options(self) -> dict[str, Any]:
        c = self.cfg
        return dict(probabilities=c.probabilities, overlay=c.overlay, compress=c.compress, level=c.level, cog=c.cog)

    def _scene(self, unit: Unit) -> dict[str, str]:
        from terraseg.infer.inputs import open_input
        from terraseg.prediction.outputs import predict_to_files

        scene = open_input(self.bundle, unit.path)
        return predict_to_files(
            self.predictor,
            scene,
            Path(self.cfg.out_dir),
            self.bundle.class_names,
            self.colors,
            uncertainty=self.cfg.uncertainty,
            stem=unit.stem,
            **self._options(),
        )

    def _band(self, unit: Unit) -> dict[str, str]:
        from rasterio.transform import Affine

        from terraseg.infer.inputs import open_input
        from terraseg.io.predictions import PredictionWriter
        from terraseg.io.raster import Grid

        assert unit.strips is not None
        c = self.cfg
        paths = part_paths(Path(c.out_dir), unit.stem, unit.strips[0], c.probabilities, c.uncertainty)
        if all(Path(p).is_file() for p in paths.values()):  # resume: this band was completed before
            return paths
        scene = open_input(self.bundle, unit.path)
        grid = scene.grid
        row0, row1 = unit.rows
        band = Grid(grid.width, row1 - row0, grid.crs, grid.transform * Affine.translation(0, row0))
        Path(paths["prediction"]).parent.mkdir(parents=True, exist_ok=True)
        # parts are read once more by the assembly: the fastest codec level
        writer = PredictionWriter(
            paths["prediction"],
            band,
            self.bundle.class_names,
            None,
            paths.get("probabilities"),
            compress="deflate",
            level=1,
            confidence=paths.get("confidence"),
        )

        def sink(b) -> None:
            writer.write(b.row - row0, 0, b.encoded, b.probs, confidence=b.confidence)

        with writer:
            self.predictor.predict(scene, sink, probabilities=c.probabilities, confidence=c.uncertainty, strips=unit.strips)
        return paths

    def _assemble(self, unit: Unit) -> dict[str, str]:
        from rasterio.windows import Window

        from terraseg.data.windows import row_strips
        from terraseg.infer.inputs import open_input
        from terraseg.io.predictions import PredictionWriter
        from terraseg.io.raster import open_reader
        from terraseg.prediction.outputs import write_overlay

        c = self.cfg
        out = Path(c.out_dir)
        scene = open_input(self.bundle, unit.path)
        target = out / f"{unit.stem}.tif"
        writer = PredictionWriter(
            target,
            scene.grid,
            self.bundle.class_names,
            self.colors,
            out / f"{unit.stem}_probs.tif" if c.probabilities else None,
            compress=c.compress,
            level=c.level,
            cog=c.cog,
            confidence=out / f"{unit.stem}_confidence.tif" if c.uncertainty else None,
        )
        step = 512
        with writer:
            for part in unit.parts:
                row0 = int(part["row"])
                srcs = {k: open_reader(part[k]) for k in ("prediction", "probabilities", "confidence") if k in part}
                try:
                    for strip in row_strips(srcs["prediction"].height, scene.width, step):
                        r = strip.row
                        win = Window(0, r, scene.width, strip.height)
                        ids = srcs["prediction"].read(1, window=win)
                        probs = srcs["probabilities"].read(window=win) if "probabilities" in srcs else None
                        conf = srcs["confidence"].read(window=win) if "confidence" in srcs else None
                        writer.write(row0 + r, 0, ids, probs, confidence=conf)
                finally:
                    for s in srcs.values():
                        s.close()
        outputs = {k: str(v) for k, v in writer.paths.items()}
        if c.overlay:
            outputs["overlay"] = str(write_overlay(scene, target, out / f"{unit.stem}_overlay.png", self.colors))
        shutil.rmtree(out / PARTS / unit.stem, ignore_errors=True)
        return outputs


def connect(address: str | None) -> bool:
    """Start Ray on this machine (``address`` None) or join a cluster; True when this call started it.

    Args:
        address: None, 'auto' or 'ray://HOST:PORT'.

    Raises:
        ConfigError: Ray is not installed, or the cluster cannot be reached.
    """
    try:
        import ray
    except ImportError:
        raise ConfigError("the ray engine needs Ray: pip install 'terraseg[ray]' (or 'ray[serve]').") from None
    if ray.is_initialized():
        return False
    kw: dict[str, Any] = dict(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False, configure_logging=True)
    if address is None:  # a private local cluster: a small object store (units pass paths, not pixels)
        kw |= dict(num_cpus=os.cpu_count() or 1, object_store_memory=512 * 2**20)
    try:
        ray.init(address=address, **kw)
    except Exception as e:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, ValueError... for a bad address
        raise ConfigError(
            f"cannot start or join Ray at {address or 'this machine'}: {str(e).splitlines()[0] if str(e) else type(e).__name__}."
        ) from None
    return True


def worker_layout(cfg: PredictConfig) -> tuple[int, int, float]:
    """``(workers, CPUs per worker, GPUs per worker)`` for the connected cluster's resources and ``cfg.ray``.

    Args:
        cfg: the predict config (its ``ray`` settings).

    Raises:
        ConfigError: more GPUs per worker asked for than the cluster has.
    """
    import ray

    res = ray.cluster_resources()
    cpus, gpus = int(res.get("CPU", 1)), float(res.get("GPU", 0))
    r = cfg.ray
    if r.gpus_per_worker > gpus:
        raise ConfigError(f"--gpus-per-worker {r.gpus_per_worker:g}: the Ray cluster has {gpus:g} GPUs.")
    if r.num_workers:
        workers = r.num_workers
    elif r.gpus_per_worker:
        workers = max(1, int(gpus // r.gpus_per_worker))
    else:
        workers = max(1, cpus // (r.cpus_per_worker or 4))
    per = r.cpus_per_worker or max(1, cpus // workers)
    return workers, per, r.gpus_per_worker


def predict_on_ray(cfg: PredictConfig, bundle: Bundle, items: list[tuple[str, str]], result: Any) -> Any:
    """Predict ``items`` with actors on Ray; the files written equal :func:`terraseg.prediction.run.predict_segmentation`'s.

    Args:
        cfg: the predict config (``cfg.ray``: address, workers, resources, retries).
        bundle: the loaded bundle (its file's bytes go to the actors).
        items: ``(path, stem)`` to do.
        result: a :class:`terraseg.prediction.run.PredictResult`, filled in and returned (outputs, failures).

    Returns:
        ``result``.

    Raises:
        ConfigError: Ray missing or unreachable, resources that do not exist, no live actor left.
    """
    import ray

    if not items:
        return result
    started = connect(cfg.ray.address)
    try:
        workers, cpus, gpus = worker_layout(cfg)
        units, failures = plan_units(bundle, cfg, items, workers)
        result.failures.update(failures)
        ref = ray.put(bundle_bytes(bundle))
        actor_cls = ray.remote(PredictWorker).options(
            num_cpus=cpus, num_gpus=gpus, max_restarts=cfg.ray.max_retries, runtime_env={"env_vars": forwarded_env()}
        )
        actors = [actor_cls.remote(ref, cfg.model_dump(mode="json"), cpus) for _ in range(min(workers, max(len(units), 1)))]
        _drive(actors, units, cfg, result)
        for a in actors:
            ray.kill(a)  # type: ignore[arg-type]
    finally:
        if started:
            ray.shutdown()
    return result


FORWARDED = ("GDAL_", "CPL_", "VSI_", "AWS_", "GS_", "AZURE_", "OSS_", "PROJ_", "TERRASEG_", "HF_HUB_OFFLINE")


def forwarded_env() -> dict[str, str]:
    """This process's GDAL/PROJ settings, object-store credentials and ``TERRASEG_*`` settings, for the actors.

    Workers on other machines (or started before this process set them) would otherwise read remote
    inputs (``/vsis3/``, ``/vsicurl/``) without the options the user gave.
    """
    return {k: v for k, v in os.environ.items() if k.startswith(FORWARDED)}


def bundle_bytes(bundle: Bundle) -> bytes:
    """A bundle's ``.terraseg`` file as bytes (its file's when it was loaded from one), for Ray actors.

    Args:
        bundle: the loaded bundle.
    """
    if bundle.path is not None and Path(bundle.path).is_file():
        return Path(bundle.path).read_bytes()
    with tempfile.TemporaryDirectory() as d:
        return bundle.save(Path(d) / "model.terraseg").read_bytes()


def dispatch(
    actors: list, queue: deque, submit: Callable[[Any, Any], Any], retries: int
) -> Iterator[tuple[Any, Any, str | None, int]]:
    """Run the units of ``queue`` on ``actors``, two in flight on each (the next unit's input is read while one runs);
    the least loaded actor gets the next unit, and a unit that raised (or whose actor died) is retried first.

    The caller may append units to ``queue`` between results (a scene's assembly once its bands are done).

    Args:
        actors: Ray actor handles.
        queue: the units to run, taken from the left.
        submit: ``submit(actor, unit)`` -> the ``ObjectRef`` of the unit's result.
        retries: how many times a failed unit runs again before it is reported.

    Yields:
        ``(unit, value, None, attempts)`` for a unit done, or ``(unit, None, reason, attempts)`` once its retries are spent.

    Raises:
        ConfigError: no actor could be started.
    """
    import ray

    if not actors:
        raise ConfigError("no Ray worker could be started.")
    load = [0] * len(actors)
    attempts: dict[int, int] = {}  # id(unit) -> runs so far (a unit stays referenced until its last result)
    inflight: dict[Any, tuple[Any, int]] = {}
    while queue or inflight:
        for i in sorted(range(len(actors)), key=load.__getitem__):
            if queue and load[i] < 2:
                u = queue.popleft()
                attempts[id(u)] = attempts.get(id(u), 0) + 1
                inflight[submit(actors[i], u)] = (u, i)
                load[i] += 1
        ready, _ = ray.wait(list(inflight), num_returns=1)
        u, i = inflight.pop(ready[0])
        load[i] -= 1
        try:
            value, reason = ray.get(ready[0]), None
        except Exception as e:  # noqa: BLE001 - the actor died or the unit raised (I/O): retried, then reported
            value, reason = None, str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            if attempts[id(u)] <= retries:
                log.info("retrying after: %s", reason)
                queue.appendleft(u)
                continue
        yield u, value, reason, attempts.pop(id(u))


def _drive(actors: list, units: list[Unit], cfg: PredictConfig, result: Any) -> None:
    """Run the units on the actors (:func:`dispatch`), assemble scenes whose bands are all done."""
    queue = deque(units)
    bands_left: dict[str, int] = {}
    parts: dict[str, list[dict[str, str]]] = {}
    for u in units:
        if u.kind == "band":
            bands_left[u.stem] = bands_left.get(u.stem, 0) + 1
    broken: set[str] = set()  # scenes with a failed band: their other bands are not assembled
    scenes = sum(1 for u in units if u.kind == "scene")
    by_pixels = all(u.pixels for u in units)
    total = sum(u.pixels for u in units) if by_pixels else scenes
    with progress.task(f"predict on Ray ({len(actors)} workers)", total, "px" if by_pixels else "scenes") as advance:
        for u, got, reason, attempts in dispatch(actors, queue, lambda a, unit: a.run.remote(unit), cfg.ray.max_retries):
            if reason is not None:
                result.failures[u.path] = f"{u.path}: failed after {attempts} attempts on Ray ({reason})."
                broken.add(u.stem)  # a band's scene cannot be assembled
                continue
            status, value = got
            if status != "ok":
                result.failures[u.path] = value
                broken.add(u.stem)
                continue
            if u.kind == "band" and u.stem in broken:
                parts.pop(u.stem, None)
            elif u.kind == "band":
                parts.setdefault(u.stem, []).append(value | {"row": str(u.rows[0])})
                advance(u.pixels)
                bands_left[u.stem] -= 1
                if bands_left[u.stem] == 0:
                    ordered = sorted(parts.pop(u.stem), key=lambda p: int(p["row"]))
                    queue.appendleft(Unit(u.path, u.stem, "assemble", parts=ordered))
            else:
                result.outputs[u.path] = value
                if u.kind == "scene":
                    advance(u.pixels if by_pixels else 1)


__all__ = [
    "PredictWorker",
    "dispatch",
    "Unit",
    "connect",
    "forwarded_env",
    "part_paths",
    "plan_units",
    "predict_on_ray",
    "worker_layout",
    "bundle_bytes",
]
