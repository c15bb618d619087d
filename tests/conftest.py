"""Fixtures for the core tests (helpers live in helpers.py), and the test PostgreSQL server."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from helpers import noisy_sines
from postgres_server import PostgresServer, postgres_bin


@pytest.fixture
def sines() -> np.ndarray:
    return noisy_sines(1200)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL server for the session (skips without its binaries)."""
    pytest.importorskip("psycopg", reason="psycopg is not installed (the postgres extra)")
    bin_dir = postgres_bin()
    if bin_dir is None:
        pytest.skip("no PostgreSQL binaries (apt-get install postgresql; .ci/run does)")
    server = PostgresServer(bin_dir).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A database URL whose schema is new and empty."""
    return postgres_server.fresh_url()
