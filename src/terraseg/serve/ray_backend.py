"""``terraseg serve --engine ray``: the network as a Ray Serve deployment behind the FastAPI gateway.

The split of the scene-classification system this replaces (a gateway that decodes, normalises,
tiles and blends; a model server that only runs the network) on Ray Serve: the gateway is the
usual app (:mod:`terraseg.serve.app`, same API, limits and page), whose sliding-window predictor
gets a :class:`RayServeBackend`; each model is a deployment (:class:`ModelReplica`) with its own
replica count, CPU/GPU resources and autoscaling on ongoing requests (Ray Serve's
``autoscaling_config``, https://docs.ray.io/en/latest/serve/autoscaling-guide.html). Replicas load
the bundle from bytes in the object store, so they may run on any node of the cluster. Batches of
normalised windows go to a replica and probabilities come back; the outputs equal the
single-process server's (same network, same blending on the gateway).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import torch

from terraseg.errors import ConfigError

log = logging.getLogger(__name__)


class ModelReplica:
    """One Ray Serve replica: the bundle's network on this replica's device (GPU when Ray gave it one).

    Args:
        bundle_bytes: the ``.terraseg`` file's bytes (or a Ray ObjectRef of them).
        inference: :class:`terraseg.config.inference.InferenceConfig` as a dict (backend, precision, layout; the device
            is this replica's).
        threads: torch CPU threads.
    """

    def __init__(self, bundle_bytes: bytes, inference: dict[str, Any], threads: int) -> None:
        from terraseg.bundle import Bundle
        from terraseg.config.inference import InferenceConfig
        from terraseg.tasks import task_for

        torch.set_num_threads(max(1, threads))
        if not isinstance(bundle_bytes, (bytes, bytearray)):  # an ObjectRef: Serve passes init arguments as they are
            import ray

            bundle_bytes = ray.get(bundle_bytes)
        bundle = Bundle.from_bytes(bundle_bytes)
        pred = task_for(bundle).inference(bundle, InferenceConfig.model_validate(inference))
        self.backend, self.batch_size = pred.backend, pred.batch_size
        rt = getattr(pred.backend, "runtime", None)
        self.description = {
            "device": str(pred.device),
            "backend": rt.backend if rt else "torch",
            "batch_size": pred.batch_size,
            "pid": os.getpid(),
        }

    def info(self) -> dict[str, Any]:
        """The replica's device, backend, preferred batch size and process id."""
        return self.description

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """``(N, C, h, w)`` normalised float32 windows -> ``(N, K, h, w)`` float32 probabilities."""
        with torch.inference_mode():
            return self.backend.probabilities(torch.from_numpy(np.ascontiguousarray(batch))).float().cpu().numpy()


class RayServeBackend:
    """The gateway's backend: sends each batch of windows to the model's deployment and waits for the probabilities.

    Args:
        handle: a Ray Serve ``DeploymentHandle`` of a :class:`ModelReplica` deployment.
        info: the replica's :meth:`ModelReplica.info`.
    """

    device = torch.device("cpu")  # the gateway normalises and blends on its CPU

    def __init__(self, handle: Any, info: dict[str, Any]) -> None:
        self.handle, self.info = handle, info

    @torch.inference_mode()
    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, h, w)`` float32 -> ``(N, K, h, w)`` float32 probabilities, computed by a replica."""
        return torch.from_numpy(np.array(self.handle.remote(x.cpu().numpy()).result()))  # a writable copy of the reply

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.handle.remote(batch).result()


def batched_replica(max_calls: int, wait_ms: float) -> type:
    """:class:`ModelReplica` whose calls are batched by Ray Serve (``serve.batch``): the windows of concurrent requests
    arriving within ``wait_ms`` (up to ``max_calls`` requests) run in one forward pass, each caller getting its slice.

    Args:
        max_calls: most requests merged into one pass.
        wait_ms: how long the first waits for company.
    """
    from ray import serve

    class BatchedReplica(ModelReplica):
        @serve.batch(max_batch_size=max_calls, batch_wait_timeout_s=wait_ms / 1000.0)
        async def __call__(self, batches: list[np.ndarray]) -> list[np.ndarray]:  # type: ignore[override]
            sizes = np.cumsum([len(b) for b in batches])[:-1]
            return np.split(ModelReplica.__call__(self, np.concatenate(batches)), sizes)

    return BatchedReplica


def deploy(
    name: str, bundle_bytes: bytes, inference: dict[str, Any], ray_cfg: Any, max_batch: int = 16, wait_ms: float = 5.0
) -> RayServeBackend:
    """Run ``name``'s network as a Ray Serve deployment (starting Serve on the connected cluster) and return its backend.

    Args:
        name: the model's name (the Serve application name).
        bundle_bytes: the bundle file's bytes.
        inference: inference options as a dict.
        ray_cfg: :class:`terraseg.config.inference.RayConfig` (replicas, max_replicas, cpus_per_worker,
            gpus_per_worker).
        max_batch: most requests a replica merges into one forward pass (Ray Serve's batching, :func:`batched_replica`).
        wait_ms: how long the first of them waits for company; 0: no batching.

    Raises:
        ConfigError: Ray Serve is not installed.
    """
    try:
        from ray import serve
    except ImportError:
        raise ConfigError("serve --engine ray needs Ray Serve: pip install 'terraseg[ray]'.") from None
    import ray

    serve.start(http_options={"location": "NoServer"})  # the FastAPI gateway is the only HTTP entry
    cpus = ray_cfg.cpus_per_worker or 1
    opts: dict[str, Any] = {
        "ray_actor_options": {"num_cpus": cpus, "num_gpus": ray_cfg.gpus_per_worker},
        "name": "model",
        "max_ongoing_requests": max(4, 2 * max_batch) if wait_ms > 0 else 4,
    }
    if ray_cfg.max_replicas and ray_cfg.max_replicas > ray_cfg.replicas:
        opts["autoscaling_config"] = {
            "min_replicas": ray_cfg.replicas,
            "initial_replicas": ray_cfg.replicas,
            "max_replicas": ray_cfg.max_replicas,
            "target_ongoing_requests": 2,
        }
    else:
        opts["num_replicas"] = ray_cfg.replicas
    dep = serve.deployment(batched_replica(max_batch, wait_ms) if wait_ms > 0 else ModelReplica).options(**opts)  # type: ignore[attr-defined]
    app = dep.bind(
        ray.put(bundle_bytes),
        {**inference, "device": "auto" if ray_cfg.gpus_per_worker else inference.get("device", "auto")},
        cpus,
    )
    handle = serve.run(app, name=name, route_prefix=None, blocking=False)
    info = handle.info.remote().result()
    log.info("Ray Serve deployment %s: %s", name, info)
    return RayServeBackend(handle, info)


__all__ = ["ModelReplica", "RayServeBackend", "batched_replica", "deploy"]
