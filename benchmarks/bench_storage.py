"""Storage backends side by side: acknowledged pushes and commits per second, SQLite vs PostgreSQL.

    python benchmarks/bench_storage.py                       # a throwaway PostgreSQL server
    python benchmarks/bench_storage.py --database postgresql://user@host/db   # an existing one

The same ingest runs on each backend, through the service's committer (no HTTP, no
models: the publisher discards the effects), with full durability on both sides:
SQLite in WAL mode with ``synchronous=FULL``, PostgreSQL with ``fsync=on`` and
``synchronous_commit=on`` (the throwaway server's settings; an existing server is used
as it is configured). Two workloads:

* **serial**: one client, one observation per push: every push is its own commit, so
  this is the backend's commit latency (an fsync, plus round trips for PostgreSQL);
* **concurrent**: many clients, each pushing batches to its own series: pushes that queue
  while a commit syncs share the next one (group commit).

The throwaway server needs the PostgreSQL binaries (``apt-get install postgresql``).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bare_committer import start_committer

from service.ingest import ParsedBatch
from service.settings import Settings
from service.storage import Storage, storage_for_url
from service.storage.records import Ingest
from service.timestamps import parse_t

# The tests' throwaway server (a fresh cluster on a free port) serves here too.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from postgres_server import throwaway_server


def run(storage: Storage, clients: int, pushes: int, batch: int) -> dict[str, float]:
    """``clients`` threads, each sending ``pushes`` pushes of ``batch`` observations."""
    storage.initialise()
    committer = start_committer(storage, "bench")
    tag = f"{clients}x{batch}-{time.monotonic_ns()}"
    start_line = threading.Barrier(clients + 1)

    def client(k: int) -> None:
        series_id = f"bench-{tag}-{k}"
        batches = [
            ParsedBatch(
                [parse_t(float(i * batch + j)) for j in range(batch)],
                [float(j) for j in range(batch)],
            )
            for i in range(pushes)
        ]
        start_line.wait()
        for parsed in batches:
            committer.submit(Ingest(series_id, parsed)).result()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for thread in threads:
        thread.start()
    start_line.wait()
    began, commits = time.perf_counter(), committer.commits
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    commits = committer.commits - commits
    committer.stop()
    total = clients * pushes
    return {
        "pushes/s": total / elapsed,
        "commits/s": commits / elapsed,
        "obs/s": total * batch / elapsed,
        "pushes/commit": total / commits,
    }


def _number(x: float) -> str:
    return f"{x:,.0f}" if x >= 10 else f"{x:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database", default="", help="an existing postgresql:// URL")
    parser.add_argument("--serial-pushes", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--pushes", type=int, default=200, help="per concurrent client")
    parser.add_argument("--batch", type=int, default=100, help="observations per push")
    args = parser.parse_args()

    server = throwaway_server(args.database)
    url = server.url if server is not None else args.database
    workdir = Path(tempfile.mkdtemp(prefix="bench-storage-"))
    try:
        backends = {
            "SQLite": storage_for_url("", Settings(data_dir=workdir)),
            "PostgreSQL": storage_for_url(url, Settings(data_dir=workdir)),
        }
        workloads = {
            "serial (1 client, 1 obs/push)": (1, args.serial_pushes, 1),
            f"concurrent ({args.clients} clients, {args.batch} obs/push)": (
                args.clients,
                args.pushes,
                args.batch,
            ),
        }
        results: dict[tuple[str, str], dict[str, Any]] = {}
        for workload, (clients, pushes, batch) in workloads.items():
            for name, storage in backends.items():
                results[workload, name] = run(storage, clients, pushes, batch)
        columns = ["pushes/s", "commits/s", "obs/s", "pushes/commit"]
        print(f"| workload | backend | {' | '.join(columns)} |")
        print("| --- | --- |" + " ---: |" * len(columns))
        for (workload, name), row in results.items():
            cells = " | ".join(_number(row[c]) for c in columns)
            print(f"| {workload} | {name} | {cells} |")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
