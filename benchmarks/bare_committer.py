"""The service's committer without the rest of the server, for the storage benchmarks.

A benchmark of storage alone has no models: its committer publishes to a publisher
that drops the effects (`DiscardEffects`). `start_committer` acquires every shard of
the database and starts such a committer on it.
"""

from __future__ import annotations

from collections.abc import Callable

from service.storage import Committer, Storage
from service.storage.records import Effect


class DiscardEffects:
    """A publisher that drops the committed effects (no models to apply them to)."""

    def publish(self, effects: list[Effect]) -> None:
        pass


def start_committer(
    storage: Storage,
    owner: str,
    max_series: int = 10**6,
    commit_spacing: float = 0.0,
    in_flight: Callable[[], int] | None = None,
) -> Committer:
    """A started committer holding every shard of ``storage`` (initialised) as ``owner``;
    its epochs are ``committer.epochs``. Stop it with ``committer.stop()``."""
    epochs = storage.acquire_shards(owner)
    committer = Committer(
        storage.writer(),
        storage.load_records(),
        DiscardEffects(),
        max_series,
        {},
        epochs=epochs,
        n_shards=storage.n_shards,
        commit_spacing=commit_spacing,
        in_flight=in_flight,
    )
    committer.start()
    return committer
