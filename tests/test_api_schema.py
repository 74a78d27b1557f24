"""schemathesis against the API's own OpenAPI schema: no 5xx and every answer conforms to the schema.

Bounded: ``TERRASEG_SCHEMA_EXAMPLES`` (default 25) examples per operation, in process (ASGI), on a tiny
model (the API-key paths are covered by tests/test_serve_hardening.py).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

schemathesis = pytest.importorskip("schemathesis")

from schemathesis.checks import positive_data_acceptance  # noqa: E402

from conftest import make_bundle
from terraseg.config.inference import ServeConfig  # noqa: E402
from terraseg.serve.app import create_app  # noqa: E402


def _app():
    d = Path(tempfile.mkdtemp(prefix="terraseg-schema-"))
    make_bundle(window=32, name="s", path=d / "s.terraseg")
    return create_app(ServeConfig(models=[str(d / "s.terraseg")], results_dir=str(d / "res"), max_pixels=1_000_000))


APP = _app()
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@schema.parametrize()
@settings(
    max_examples=int(os.environ.get("TERRASEG_SCHEMA_EXAMPLES", "25")),
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_api_conforms_to_its_schema(case):
    # every check but "schema-valid data is accepted": a schema cannot say which bytes are a readable image,
    # so arbitrary bytes in `file` are rightly refused (415/422), and that refusal is checked instead
    response = case.call_and_validate(excluded_checks=[positive_data_acceptance])
    assert response.status_code < 500  # (call_and_validate also raises on any schema violation)
    assert response.status_code < 400 or set(response.json()) == {"error"}  # one error shape
