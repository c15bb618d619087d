"""Disk bytes written per observation by the SQLite committer alone (no HTTP, no models).

    python benchmarks/bench_storage_disk.py [--rate 2000] [--seconds 30]

The write pattern of ``bench_service_rows.py``'s steady ingest, without the server around
it: ``--series`` series are loaded with 2,000 observations each (pushes of 100), then
8 client threads push ``--batch`` observations at a time, paced to ``--rate`` obs/s in
all, each waiting for its acknowledgement, through the service's `Committer` with the
server's commit spacing; this process's ``write_bytes`` (``/proc/self/io``) over the
steady part, per observation. Less noisy than the whole server on a loaded machine, so it
is the quick A/B for storage layouts; the bar and goal are issue 8's, which ``make
bench-service`` judges on the real server.

Checkpoints: the server copies the WAL into the database every ``CHECKPOINT_SECONDS``
(30 s) from its start. Here that timer would fire wherever the loading's length puts it
in the steady window, and copy the loading's pages too. So the benchmark checkpoints
itself: once after loading (not counted), and once at the end of the steady window,
counted. With the default window of one checkpoint period, the bytes are one period of
the server's steady state: the WAL's writes and one checkpoint of the pages they dirtied.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from bare_committer import start_committer
from measure import Row, dir_bytes, io_counters, print_table

from service.ingest import ParsedBatch
from service.settings import Settings
from service.storage import sqlite as sqlite_backend
from service.storage import storage_for_url
from service.storage.records import Ingest
from service.timestamps import parse_t

CLIENTS = 8


def checkpoint(path: Path, mode: str) -> None:
    """Copy the WAL into the database as the server's checkpointer does (on its own
    connection); ``TRUNCATE`` also empties the WAL."""
    conn = sqlite_backend.connect(path)
    try:
        conn.execute(f"PRAGMA wal_checkpoint({mode})")
    finally:
        conn.close()


def main() -> None:
    period = sqlite_backend.CHECKPOINT_SECONDS
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--series", type=int, default=40)
    parser.add_argument("--rate", type=float, default=2000.0, help="obs/s in all")
    parser.add_argument("--batch", type=int, default=10, help="obs per steady push")
    parser.add_argument(
        "--seconds", type=float, default=period, help="the steady window (a checkpoint ends it)"
    )
    args = parser.parse_args()

    # The benchmark's checkpoints replace the background ones (see the docstring).
    sqlite_backend.CHECKPOINT_SECONDS = threading.TIMEOUT_MAX
    data_dir = Path(tempfile.mkdtemp(prefix="bench-storage-disk-"))
    try:
        settings = Settings(data_dir=data_dir)
        storage = storage_for_url("", settings)
        storage.initialise()
        committer = start_committer(
            storage,
            "bench",
            max_series=args.series + 1,
            commit_spacing=settings.commit_spacing_seconds,
            in_flight=lambda: CLIENTS,  # pushes always in flight: commits are spaced
        )
        rng = np.random.default_rng(0)
        sent = [0] * args.series

        def push(i: int, n: int) -> None:
            keys = [parse_t(float(sent[i] + j)) for j in range(n)]
            values = [float(v) for v in rng.poisson(100, n)]
            command = Ingest(f"s{i:04d}", ParsedBatch(keys, values))
            committer.submit(command).result(timeout=60)
            sent[i] += n

        for i in range(args.series):
            for _ in range(20):
                push(i, 100)
        checkpoint(settings.db_path, "TRUNCATE")  # the loading's pages: not counted
        before, first, commits = io_counters()["write_bytes"], sum(sent), committer.commits
        stop = time.monotonic() + args.seconds

        def client(k: int) -> None:
            mine = list(range(k, args.series, CLIENTS))
            due, j = time.monotonic(), 0
            while time.monotonic() < stop:
                push(mine[j % len(mine)], args.batch)
                j += 1
                due += CLIENTS * args.batch / args.rate
                time.sleep(max(0.0, due - time.monotonic()))

        threads = [threading.Thread(target=client, args=(k,)) for k in range(CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        checkpoint(settings.db_path, "PASSIVE")  # the window's pages: counted
        written = io_counters()["write_bytes"] - before
        obs, commits = sum(sent) - first, committer.commits - commits
        committer.stop()
        size = dir_bytes(data_dir)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    print_table(
        "SQLite committer alone, steady ingest",
        [
            Row(
                "disk bytes written per acknowledged obs (committer alone)",
                written / max(obs, 1),
                "B",
                bar=200,
                goal=100,
                note=(
                    f"{obs:,} obs in pushes of {args.batch} over {args.seconds:g} s, "
                    f"{commits:,} commits ({obs / max(commits, 1):.0f} obs each), "
                    "one checkpoint; "
                    f"database {size / 1e6:.1f} MB at the end"
                ),
            )
        ],
    )


if __name__ == "__main__":
    main()
