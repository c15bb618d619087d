"""The HTTP layer's side of the Ray engine: route each call to the shard actor that owns it.

`start_ray` connects to (or starts) Ray and gets or creates the named shard actors;
`RayEngine` implements `service.engine.Engine` by forwarding to them. A call that
finds its actor dead (killed, its node lost) is answered 503 with ``Retry-After``:
Ray restarts the actor, which restores its series, and the client's retry of a
push is idempotent, so an acknowledged observation is never lost and none is
applied twice.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any

from ..metrics import Metrics
from ..settings import Settings
from ..sharded_engine import HostUnavailable, ShardedEngine
from .actor import ShardActor, actor_name

log = logging.getLogger("episodic_koopman.service")


def is_local_address(address: str) -> bool:
    """Whether a ``--ray-address`` means this machine only (then SQLite is allowed)."""
    return address in ("", "local")


def check_settings(settings: Settings) -> None:
    """Refuse what cannot work: SQLite is one machine's file, not a cluster's store."""
    if not is_local_address(settings.ray_address) and not settings.database:
        raise RuntimeError(
            f"--ray-address {settings.ray_address} may place shard actors on other machines, "
            "which cannot share a SQLite file: pass --database postgresql://... "
            "(or EPISODIC_KOOPMAN_DATABASE)"
        )


def start_ray(settings: Settings, n_shards: int) -> tuple[list[Any], bool, bool]:
    """Connect to Ray (a local one when no address is given); get or create the actors.

    Returns the actor handles, whether they are this server's own (a local Ray's actors
    die with it; a cluster's are shared by its HTTP servers) and whether it started Ray.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Ray nices its workers (15) as batch jobs; here they are the service itself.
    os.environ.setdefault("RAY_worker_niceness", "0")
    import ray

    local = is_local_address(settings.ray_address)
    started = not ray.is_initialized()  # tests start Ray once and share it
    if started:
        if local:
            ray.init(
                num_cpus=os.cpu_count(),
                include_dashboard=False,
                namespace=settings.ray_namespace,
                logging_level="WARNING",
                log_to_driver=True,
            )
        else:
            ray.init(
                address=settings.ray_address,
                namespace=settings.ray_namespace,
                logging_level="WARNING",
            )
    # One per CPU by default, but never more than the storage shards (an actor owns whole ones).
    n_actors = settings.shards or min(int(ray.cluster_resources().get("CPU", 0)), n_shards)
    if n_actors < 1:
        raise RuntimeError("the Ray cluster has no CPUs yet: pass --shards N (docs/ray.md)")
    if n_actors > n_shards:
        # An actor owns whole storage shards: past their number, actors would own nothing.
        raise RuntimeError(
            f"--shards {n_actors} exceeds the database's {n_shards} storage shards "
            "(docs/ray.md: sizing)"
        )
    # One core per actor when there are enough (Ray then spreads them over the nodes);
    # a share of one otherwise, so that every actor is placed.
    cpus = min(1.0, int(100 * ray.cluster_resources().get("CPU", 1) / n_actors) / 100) or 0.01
    remote = ray.remote(ShardActor)
    env = {"env_vars": {"RAY_USAGE_STATS_ENABLED": "0"}}
    actors = []
    for index in range(n_actors):
        options: dict[str, Any] = {
            "name": actor_name(index, n_actors),
            "namespace": settings.ray_namespace,
            "get_if_exists": True,
            "max_restarts": settings.ray_max_restarts,
            "max_task_retries": 0,  # a push may have committed: the client retries, not Ray
            "max_concurrency": 1000,
            "num_cpus": cpus,
            "runtime_env": env,
        }
        if not local:
            # Shared by every HTTP server of the cluster: they outlive any one of them.
            options["lifetime"] = "detached"
        actors.append(remote.options(**options).remote(settings.model_dump(), index, n_actors))
    ray.get([actor.pid.remote() for actor in actors])  # constructed (restored or failed)
    return actors, local, started


def stop_ray(actors: list[Any], owned: bool, started: bool, timeout: float) -> None:
    """Close our own actors gracefully (writes finished, models snapshotted), then Ray."""
    import ray

    if owned:
        with contextlib.suppress(Exception):
            ray.get([actor.close.remote() for actor in actors], timeout=timeout)
        for actor in actors:
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)
    if started:
        ray.shutdown()


class RayTransport:
    """Calls into the named shard actors (`service.sharded_engine.Transport`)."""

    def __init__(self, actors: list[Any]) -> None:
        self.actors = actors
        self.n_hosts = len(actors)

    async def invoke(self, index: int, method: str, *args: Any) -> Any:
        import ray.exceptions

        try:
            return await getattr(self.actors[index], method).remote(*args)
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError):
            raise HostUnavailable(index) from None

    def forget(self, index: int, method: str, *args: Any) -> None:
        with contextlib.suppress(Exception):
            getattr(self.actors[index], method).remote(*args)


class RayEngine(ShardedEngine):
    """`service.engine.Engine` over named shard actors (calls go to the series' owner)."""

    host_kind = "shard actor"

    def __init__(
        self, settings: Settings, actors: list[Any], n_shards: int, metrics: Metrics
    ) -> None:
        super().__init__(settings, RayTransport(actors), n_shards, metrics)
        self.actors = actors
