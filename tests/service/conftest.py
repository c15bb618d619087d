"""Fixtures for the service tests: apps on temporary data dirs and live servers.

Helpers live in `service_helpers` (import from there, not from ``conftest``).

Apps use SQLite, or PostgreSQL with ``EPISODIC_KOOPMAN_TEST_DATABASE=postgres`` in the
environment; modules marked ``both_backends`` run every test on each. They run on the
local engine (models in the test process, which tests may reach into), on local shard
processes with ``EPISODIC_KOOPMAN_TEST_ENGINE=processes`` (``--engine processes``; 2
processes), or on Ray with ``EPISODIC_KOOPMAN_TEST_ENGINE=ray``; modules marked
``both_engines`` (the service contract) run every test on each, the other engines on the
environment's backend only (Ray starts once per session; its apps are slow to start).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from service_helpers import CHROMIUM_ARGS, LiveServer, ray_engine_settings

from service.main import create_app
from service.settings import Settings

#: The backend of the service tests (read before the fixtures clear EPISODIC_KOOPMAN_*).
TEST_DATABASE = os.environ.get("EPISODIC_KOOPMAN_TEST_DATABASE", "sqlite")
#: ``processes`` or ``ray`` runs the apps of the service tests on 2 shard processes or actors.
TEST_ENGINE = os.environ.get("EPISODIC_KOOPMAN_TEST_ENGINE", "local")
BACKENDS = ("sqlite", "postgres")
ENGINES = ("local", "processes", "ray")
if TEST_DATABASE not in BACKENDS:
    raise pytest.UsageError(f"EPISODIC_KOOPMAN_TEST_DATABASE must be one of {BACKENDS}")
if TEST_ENGINE not in ENGINES:
    raise pytest.UsageError(f"EPISODIC_KOOPMAN_TEST_ENGINE must be one of {ENGINES}")


def _chosen(definition: pytest.Function, name: str) -> bool:
    """Whether the test parametrises ``name`` itself."""
    return any(name in str(mark.args[0]) for mark in definition.iter_markers("parametrize"))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    definition = metafunc.definition
    if "service_backend" not in metafunc.fixturenames:
        return
    both_backends = definition.get_closest_marker("both_backends") is not None
    both_backends = both_backends and not _chosen(definition, "service_backend")
    both_engines = definition.get_closest_marker("both_engines") is not None
    both_engines = both_engines and not _chosen(definition, "service_engine")
    if both_backends and both_engines:
        # Every backend on the local engine; the others on the environment's backend.
        combos = [(backend, "local") for backend in BACKENDS]
        combos += [(TEST_DATABASE, engine) for engine in ENGINES if engine != "local"]
        metafunc.parametrize(
            ("service_backend", "service_engine"),
            combos,
            indirect=True,
            ids=[f"{backend}-{engine}" for backend, engine in combos],
        )
    elif both_backends:
        metafunc.parametrize("service_backend", BACKENDS, indirect=True)
    elif both_engines:
        metafunc.parametrize("service_engine", ENGINES, indirect=True)


@pytest.fixture
def service_backend(request: pytest.FixtureRequest) -> str:
    """``"sqlite"`` or ``"postgres"``: a module's parametrisation, else the environment's."""
    return getattr(request, "param", TEST_DATABASE)


@pytest.fixture
def service_engine(request: pytest.FixtureRequest) -> str:
    """``"local"``, ``"processes"`` or ``"ray"``: a module's parametrisation, else the
    environment's.

    ``"ray"`` needs the session's Ray (`ray_cluster`): without it the test skips, saying why.
    """
    engine = getattr(request, "param", TEST_ENGINE)
    if engine == "ray":
        request.getfixturevalue("ray_cluster")
    return engine


@pytest.fixture
def database_url(service_backend: str, request: pytest.FixtureRequest) -> str:
    """The apps' ``database`` setting: empty for SQLite, else a fresh PostgreSQL schema."""
    if service_backend == "sqlite":
        return ""
    return request.getfixturevalue("postgres_url")


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("EPISODIC_KOOPMAN_"):
            monkeypatch.delenv(name)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "var"


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    """One local Ray for the session (2 CPUs), shared by every Ray-engine app.

    Skips, saying why, when Ray is not installed or cannot start.
    """
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ["RAY_worker_niceness"] = "0"  # as `serve --engine ray` starts it
    ray = pytest.importorskip("ray", reason="ray is not installed (the ray or dev extra)")
    try:
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    except Exception as exc:
        pytest.skip(f"a local Ray cannot start: {exc}")
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture
def engine_settings(service_engine: str) -> dict[str, Any]:
    """Settings of the engine under test, named even for the default (local); Ray's with
    a fresh namespace."""
    if service_engine == "ray":
        return ray_engine_settings()
    if service_engine == "processes":
        return {"engine": "processes", "processes": 2}
    return {"engine": "local"}


@pytest.fixture
def make_settings(
    data_dir: Path, database_url: str, engine_settings: dict[str, Any]
) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "data_dir": data_dir,
            "database": database_url,
            "snapshot_interval_seconds": 3600.0,
            "heartbeat_seconds": 0.2,
            "read_your_writes_timeout": 60.0,
            **engine_settings,
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
def make_client(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., TestClient]]:
    """Start apps (lifespan included) with settings overrides; all are closed at the end."""
    with contextlib.ExitStack() as stack:

        def make(**overrides: Any) -> TestClient:
            app = create_app(make_settings(**overrides))
            return stack.enter_context(TestClient(app))

        yield make


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


@pytest.fixture
def live_server(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., LiveServer]]:
    with contextlib.ExitStack() as stack:

        def start(**overrides: Any) -> LiveServer:
            return stack.enter_context(LiveServer(make_settings(**overrides)))

        yield start


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """Headless Chromium (the system's) in a fresh profile, driven by Playwright.

    Skips when Playwright or the ``chromium`` binary is missing (`.ci/run` installs it).
    """
    playwright_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (the dev extra has it)"
    )
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.skip("no chromium binary on PATH (apt-get install chromium)")
    with playwright_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            tmp_path / "chromium-profile",
            executable_path=executable,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000},
        )
        try:
            yield context
        finally:
            context.close()
