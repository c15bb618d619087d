"""Fuzz the OpenAPI contract with schemathesis: no 5xx, and responses match their schemas.

Bounded so that it runs in well under a minute on two cores. The SSE stream is
left out (a valid request never ends); `test_service_stream.py` covers it. It runs
on both engines: one server per engine for the module (Ray's with two shard actors).
"""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from service_helpers import SMALL, LiveServer, batch, ray_engine_settings, wave

from service.settings import Settings


@schemathesis.serializer("application/x-ndjson")
def _ndjson(ctx: schemathesis.SerializationContext, value: object) -> bytes:
    """Send generated strings as they are (the server must cope with any line soup)."""
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8", "surrogatepass")


@pytest.fixture(scope="module", params=["local", "ray"])
def fuzzed_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    engine = {}
    if request.param == "ray":
        request.getfixturevalue("ray_cluster")  # skips, saying why, without Ray
        engine = ray_engine_settings()
    settings_ = Settings(
        data_dir=tmp_path_factory.mktemp("fuzz") / "var",
        max_horizon=500,
        max_page_size=200,
        max_series=500,
        snapshot_interval_seconds=3600.0,
        read_your_writes_timeout=60.0,
        **engine,
    )
    with LiveServer(settings_) as server:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            # Series with short names, which the fuzzer also tends to generate.
            for series_id in ("0", "a", "-"):
                client.put(f"/v1/series/{series_id}", json={"params": SMALL})
                client.post(f"/v1/series/{series_id}/observations", json=batch(wave(120)))
        yield server


OPERATIONS = [
    ("GET", "/v1/series"),
    ("PUT", "/v1/series/{series_id}"),
    ("GET", "/v1/series/{series_id}"),
    ("DELETE", "/v1/series/{series_id}"),
    ("POST", "/v1/series/{series_id}/observations"),
    ("GET", "/v1/series/{series_id}/observations"),
    ("GET", "/v1/series/{series_id}/forecast"),
    ("GET", "/v1/series/{series_id}/episodes"),
    ("GET", "/v1/overview"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
]
MODES = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)


@pytest.fixture(scope="module")
def api_schema(fuzzed_server: LiveServer) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{fuzzed_server.url}/openapi.json")


def test_every_operation_is_fuzzed(api_schema: schemathesis.BaseSchema) -> None:
    found = {(op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations()}
    assert found == {*OPERATIONS, ("GET", "/v1/series/{series_id}/forecast/stream")}


#: Negative examples need something to make invalid: a parameter or a body.
CASES = [
    pytest.param(method, path, mode, id=f"{method} {path} {mode.value}")
    for method, path in OPERATIONS
    for mode in MODES
    if mode is schemathesis.GenerationMode.POSITIVE or path.startswith("/v1")
]


@pytest.mark.parametrize(("method", "path", "mode"), CASES)
def test_api_contract_holds_under_fuzzing(
    api_schema: schemathesis.BaseSchema, method: str, path: str, mode: schemathesis.GenerationMode
) -> None:
    operation = api_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=60,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,  # the same examples on every run
        database=None,
    )
    def run(case: schemathesis.Case) -> None:
        case.call_and_validate(
            timeout=60,
            checks=[
                not_a_server_error,
                status_code_conformance,
                content_type_conformance,
                response_schema_conformance,
            ],
        )

    run()
