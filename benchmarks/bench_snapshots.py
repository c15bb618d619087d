"""Snapshot write and load time per series: files beside SQLite vs rows in PostgreSQL.

Each store writes and then loads one snapshot of each of ``--series`` series (models at
the library's default parameters after ``--observations`` observations), with full
durability on both: files are fsynced (file, then directory), PostgreSQL runs with
``fsync=on`` (a throwaway server, or ``--database URL``). Writes are what the snapshot
writer does off the apply path (`SnapshotStore.save_bytes`); loads are what a restart
does per series (`SnapshotStore.load`). Prints the median and p90 per series.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bare_committer import start_committer

from episodic_koopman import EpisodicKoopman
from episodic_koopman.persistence import model_to_bytes
from service.settings import Settings
from service.storage import Storage, storage_for_url
from service.storage.records import Configure

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from postgres_server import throwaway_server


def model_file(n: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    model = EpisodicKoopman()
    model.learn_many(np.sin(2 * np.pi * t / 24) + 0.1 * rng.standard_normal(n))
    return model_to_bytes(model)


def measure(storage: Storage, directory: Path, data: list[bytes]) -> dict[str, list[float]]:
    committer = start_committer(storage, "bench-snapshots")
    epochs = committer.epochs
    try:
        for k in range(len(data)):
            committer.submit(Configure(f"s{k}", {})).result(timeout=60)
    finally:
        committer.stop()
    records = storage.load_records()
    store = storage.snapshot_store(directory, epochs)
    times: dict[str, list[float]] = {"write": [], "load": []}
    try:
        for k, blob in enumerate(data):
            record = records[f"s{k}"]
            start = time.perf_counter()
            assert store.save_bytes(record.id, record.sid, record.incarnation, 100 + k, blob)
            times["write"].append(time.perf_counter() - start)
        for k in range(len(data)):
            record = records[f"s{k}"]
            start = time.perf_counter()
            store.load(record.incarnation, 100 + k)
            times["load"].append(time.perf_counter() - start)
    finally:
        store.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--series", type=int, default=30)
    parser.add_argument("--observations", type=int, default=2000)
    parser.add_argument("--database", default="", help="a PostgreSQL URL (default: throwaway)")
    args = parser.parse_args()
    data = [model_file(args.observations, k) for k in range(args.series)]
    sizes = [len(d) for d in data]
    print(f"{args.series} models after {args.observations} observations: "
          f"{statistics.median(sizes) / 1e6:.2f} MB each (median)")  # fmt: skip
    server = throwaway_server(args.database)
    url = server.fresh_url() if server is not None else args.database
    try:
        with tempfile.TemporaryDirectory(prefix="bench-snapshots-", dir=".") as tmp:
            root = Path(tmp)
            for name, where in (("files (SQLite)", ""), ("PostgreSQL", url)):
                settings = Settings(data_dir=root / name.split()[0], database=where)
                storage = storage_for_url(where, settings)
                storage.initialise()
                times = measure(storage, settings.snapshot_dir, data)
                for what, values in times.items():
                    ms = sorted(v * 1e3 for v in values)
                    print(f"{name:15} {what:5}: median {statistics.median(ms):7.1f} ms, "
                          f"p90 {ms[int(0.9 * (len(ms) - 1))]:7.1f} ms per series")  # fmt: skip
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
