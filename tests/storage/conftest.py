"""Fixtures for the storage suite: every test runs on SQLite and on PostgreSQL.

Helpers live in `storage_helpers` (import from there, not from ``conftest``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from storage_helpers import Recorder

from service.settings import Settings
from service.storage import Committer, Storage, storage_for_url


@pytest.fixture(params=["sqlite", "postgres"])
def store_backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def open_store(
    store_backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Callable[[], Storage]:
    """Open (and initialise) the test's database; each call is a new handle on the same one."""
    url = "" if store_backend == "sqlite" else request.getfixturevalue("postgres_url")
    settings = Settings(data_dir=tmp_path / "var", database=url)

    def open_() -> Storage:
        storage = storage_for_url(url, settings)
        storage.initialise()
        return storage

    return open_


@pytest.fixture
def storage(open_store: Callable[[], Storage]) -> Storage:
    return open_store()


@pytest.fixture
def make_committer(storage: Storage) -> Iterator[Callable[..., tuple[Committer, Recorder]]]:
    """Committers on the test's database, each with its own publisher; all stopped at the end.

    ``epochs`` defaults to a fresh acquisition of every shard.
    """
    made: list[Committer] = []

    def make(
        epochs: dict[int, int] | None = None,
        max_series: int = 1000,
        commit_spacing: float = 0.0,
        in_flight: Callable[[], int] | None = None,
    ) -> tuple[Committer, Recorder]:
        if epochs is None:
            epochs = storage.acquire_shards(f"test-{len(made)}")
        recorder = Recorder(storage)
        committer = Committer(
            storage.writer(),
            storage.load_records(),
            recorder,
            max_series,
            {},
            epochs=epochs,
            n_shards=storage.n_shards,
            commit_spacing=commit_spacing,
            in_flight=in_flight,
        )
        made.append(committer)
        committer.start()
        return committer, recorder

    yield make
    for committer in made:
        committer.stop()
        committer.publisher.close()  # type: ignore[attr-defined]
