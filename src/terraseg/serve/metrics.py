"""Prometheus metrics of the service (``GET /metrics``), when ``prometheus-client`` is installed.

* ``terraseg_requests_total{route, status}`` and ``terraseg_request_seconds{route}`` (a latency
  histogram), recorded by a pure ASGI middleware for every HTTP request;
* ``terraseg_drift_total{model}``: inputs flagged by :mod:`terraseg.infer.drift`.

Each app has its own registry (several apps in one process, as in tests, do not collide).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any


@dataclass
class Metrics:
    """The app's metric objects and its ASGI middleware class."""

    registry: Any
    requests: Any
    latency: Any
    drifts: Any

    @classmethod
    def create(cls) -> Metrics | None:
        """New metrics in a private registry, or None without prometheus-client."""
        try:
            from prometheus_client import CollectorRegistry, Counter, Histogram
        except ImportError:
            return None
        reg = CollectorRegistry()
        return cls(
            reg,
            Counter("terraseg_requests_total", "HTTP requests by route and status.", ["route", "status"], registry=reg),
            Histogram(
                "terraseg_request_seconds",
                "Request latency in seconds by route.",
                ["route"],
                registry=reg,
                buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            ),
            Counter("terraseg_drift_total", "Inputs flagged as unlike the training data.", ["model"], registry=reg),
        )

    def drift(self, model: str) -> None:
        """Count one drifting input of ``model``."""
        self.drifts.labels(model=model).inc()

    def render(self) -> bytes:
        """The registry in Prometheus' text format."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry)

    @property
    def middleware(self):
        """An ASGI middleware class recording every request (route template, status, seconds)."""
        metrics = self

        class _Record:
            def __init__(self, app) -> None:
                self.app = app

            async def __call__(self, scope, receive, send) -> None:
                if scope["type"] != "http":
                    return await self.app(scope, receive, send)
                t0, status = time.perf_counter(), [500]

                async def record(message):
                    if message["type"] == "http.response.start":
                        status[0] = message["status"]
                    await send(message)

                try:
                    await self.app(scope, receive, record)
                finally:
                    route = scope.get("route")
                    name = getattr(route, "path", None) or (
                        "static" if scope["path"].startswith(("/static", "/vendor")) else "other"
                    )
                    metrics.requests.labels(route=name, status=str(status[0])).inc()
                    metrics.latency.labels(route=name).observe(time.perf_counter() - t0)

        return _Record


__all__ = ["Metrics"]
