"""Service settings, read from ``EPISODIC_KOOPMAN_*`` environment variables.

Every limit the API enforces is here, so an operator can tune it without code.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Most shard actors under Ray: an actor owns whole storage shards, and a database has 64
#: (`service.storage.DEFAULT_SHARDS`); more actors would own nothing (docs/ray.md: sizing).
MAX_SHARD_ACTORS = 64


class Settings(BaseSettings):
    """Configuration of one server process (``EPISODIC_KOOPMAN_<NAME>`` in the environment)."""

    model_config = SettingsConfigDict(env_prefix="EPISODIC_KOOPMAN_", extra="ignore")

    data_dir: Path = Field(Path("./var"), description="SQLite database and model snapshots.")
    api_key: str = Field(
        "",
        description="Bearer key, or a comma-separated list of keys (any one is accepted); empty "
        "leaves /v1 open (a warning is logged). The client and `replay` read the same variable.",
    )
    database: str = Field(
        "",
        description="Where series and observations live: empty for SQLite in the data dir, "
        "or a postgresql:// URL (the postgres extra). Snapshots stay in the data dir.",
    )
    api_keys: str = Field(
        "", description="The former name of API_KEY, still read (its keys are added)."
    )

    # -- the engine (docs/ray.md)
    engine: Literal["processes", "local", "ray"] = Field(
        "local",
        description="local: models in this process (one core); processes: models in child "
        "processes of this server, one per core (with one core, in this process); ray: in "
        "shard actors on a Ray cluster.",
    )
    processes: int = Field(
        0,
        ge=0,
        le=MAX_SHARD_ACTORS,
        description=f"Child processes of the processes engine, 1 to {MAX_SHARD_ACTORS} (0: one "
        "per CPU). With 1, the models stay in this process, as with the local engine.",
    )
    ray_address: str = Field(
        "",
        description="Ray cluster to join (ray://... or host:port); empty or 'local' starts a "
        "local Ray using every core of this machine.",
    )
    shards: int = Field(
        0,
        ge=0,
        le=MAX_SHARD_ACTORS,
        description=f"Shard actors under Ray, 1 to {MAX_SHARD_ACTORS} (0: one per CPU of the "
        f"Ray cluster, at most {MAX_SHARD_ACTORS}).",
    )
    ray_namespace: str = Field("episodic-koopman", description="Ray namespace of the actors.")
    ray_max_restarts: int = Field(
        -1, ge=-1, description="Restarts of a dead shard actor (-1: without limit)."
    )

    # -- request limits (each exceeded one gets a clear 4xx)
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1, description="Request body size (413).")
    max_observations_per_request: int = Field(100_000, ge=1, description="Per request (413).")
    max_horizon: int = Field(10_000, ge=1, description="Largest forecast horizon (422).")
    max_series: int = Field(100_000, ge=1, description="Series that may exist at once (403).")
    max_channels: int = Field(64, ge=1, description="Channels per observation (422).")
    max_abs_value: float = Field(
        1e100, gt=0, description="Largest |y|: larger finite values overflow the model's squares."
    )
    max_page_size: int = Field(1000, ge=1, description="Largest ``limit`` of paginated lists.")
    max_streams: int = Field(1000, ge=0, description="Concurrent SSE streams (429 beyond).")
    max_apply_backlog: int = Field(
        2_000_000,
        ge=1,
        description="Acknowledged observations not yet applied to models, over all series; "
        "pushes get 503 with Retry-After beyond it.",
    )

    # -- concurrency and timing
    apply_workers: int = Field(1, ge=1, description="Threads applying observations to models.")
    read_workers: int = Field(4, ge=1, description="Threads computing forecasts.")
    apply_slice: int = Field(
        16, ge=1, description="Observations applied per lock hold, so reads interleave."
    )
    apply_defer_seconds: float = Field(
        0.002,
        ge=0,
        description="While pushes are in flight, the apply worker polls this often for the "
        "moment it may run (acknowledgements first).",
    )
    apply_max_lag: float = Field(
        1.0,
        ge=0,
        description="Seconds a model may lag its acknowledged observations while pushes are in "
        "flight; past it (or as soon as a reader waits on the series) the model catches up.",
    )
    read_your_writes_timeout: float = Field(
        30.0, gt=0, description="Seconds a read waits for acknowledged observations (503 after)."
    )
    commit_spacing_seconds: float = Field(
        0.02,
        ge=0,
        description="Under concurrent pushes, the least time between the starts of two group "
        "commits: pushes arriving meanwhile share one sync (each sync writes at least a disk "
        "block). Adds at most this to an acknowledgement, and caps N clients that each wait for "
        "their answer at N pushes per spacing; a lone client pushing serially never waits.",
    )
    heartbeat_seconds: float = Field(15.0, gt=0, description="SSE heartbeat interval.")
    snapshot_interval_seconds: float = Field(
        60.0,
        gt=0,
        description="How often changed models are checked against the snapshot policy "
        "(SNAPSHOT_BYTES_PER_OBSERVATION, SNAPSHOT_MAX_AGE_SECONDS).",
    )
    snapshot_bytes_per_observation: float = Field(
        100.0,
        gt=0,
        description="Snapshot bytes written per applied observation, at most: a changed model is "
        "snapshotted once (new observations x this) reaches its last snapshot's size. Lower "
        "writes less, but a crash replays up to (snapshot size / this) observations per series.",
    )
    snapshot_max_age_seconds: float = Field(
        3600.0,
        gt=0,
        description="A model with new observations is snapshotted once its last snapshot is "
        "this old, whatever the byte budget (bounds replay for slowly growing series).",
    )
    snapshot_every: int = Field(
        20_000,
        ge=1,
        description="A model is snapshotted as soon as this many observations are new, whatever "
        "the byte budget: the most a crash replays per series.",
    )
    mmap_threshold_bytes: int = Field(
        128 * 1024,
        ge=0,
        description="glibc's mmap threshold, fixed: buffers above it are mapped and returned to "
        "the system when freed. Without it (0: glibc's dynamic threshold), a server restored "
        "from snapshots holds about 2 MiB more per series; with it, loading a snapshot takes "
        "longer (fresh pages for its buffers).",
    )
    malloc_arenas: int = Field(
        1,
        ge=0,
        description="glibc's malloc arenas, at most (0: glibc's default, eight per core). "
        "Worker threads' own arenas made restoring a model from its snapshot 15% slower.",
    )
    shutdown_snapshot_seconds: float = Field(
        30.0, ge=0, description="Time budget for snapshots at shutdown (the rest replays)."
    )
    preload: bool = Field(True, description="Restore every model at start-up (else on first use).")
    model_defaults: dict[str, Any] = Field(
        default_factory=lambda: {"capacity": 4000},
        description=(
            "Model parameters for new series, under each series' own (a JSON object). The "
            "default caps each series' memory at 4,000 episodes (about 10 MB)."
        ),
    )

    @cached_property
    def api_key_list(self) -> list[str]:
        keys = f"{self.api_key},{self.api_keys}".split(",")
        return list(dict.fromkeys(key.strip() for key in keys if key.strip()))

    @property
    def shard_processes(self) -> int:
        """Child processes holding the models: 0 when they live in this process."""
        if self.engine != "processes":
            return 0
        n = self.processes or _usable_cpus()
        return min(n, MAX_SHARD_ACTORS) if n > 1 else 0

    @property
    def db_path(self) -> Path:
        return self.data_dir / "observations.sqlite3"

    @property
    def snapshot_dir(self) -> Path:
        return self.data_dir / "snapshots"


def _usable_cpus() -> int:
    """CPUs this process may run on (its affinity, which a container's cpuset narrows)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1
