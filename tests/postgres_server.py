"""A throwaway PostgreSQL server for tests: a fresh cluster in a temp dir on a free port.

Uses the system's binaries (Debian: ``/usr/lib/postgresql/<version>/bin``, from the
``postgresql`` package; `.ci/run` installs it). ``initdb`` refuses to run as root, so
as root the cluster belongs to the ``postgres`` user. Only our own cluster is touched,
never a system one. Each test gets its own schema (`PostgresServer.fresh_url`).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

#: Test clusters skip fsync: tests check the logic, not the disk (the benchmark fsyncs).
_SERVER_OPTIONS = "-c fsync=off -c full_page_writes=off -c max_connections=200"


def postgres_bin() -> Path | None:
    """The newest installed PostgreSQL's bin dir, or None."""
    versions = [Path(p).parent.parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")]
    versions.sort(key=lambda v: int(v.name) if v.name.isdigit() else 0)
    if versions:
        return versions[-1] / "bin"
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    """Start with `start`, stop with `stop`; `fresh_url` gives an empty schema's URL."""

    def __init__(self, bin_dir: Path, fsync: bool = False) -> None:
        self.bin_dir = bin_dir
        self.fsync = fsync
        self.root = Path(tempfile.mkdtemp(prefix="ek-postgres-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = _free_port()
        self.as_postgres = os.geteuid() == 0
        self.user = "postgres" if self.as_postgres else None

    def _run(self, *args: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if self.as_postgres else []
        result = subprocess.run(
            [*prefix, *args], capture_output=True, text=True, timeout=120, check=False
        )
        if result.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"{args[0]} failed: {result.stderr or result.stdout}\n{log}")

    def start(self) -> PostgresServer:
        if self.as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        self._run(
            str(self.bin_dir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
        )
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        if not self.fsync:
            options += f" {_SERVER_OPTIONS}"
        # -l: without a log file the server inherits our pipes and run() never returns.
        self._run(
            str(self.bin_dir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            options,
            "-w",
            "start",
        )
        return self

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def fresh_url(self) -> str:
        """The URL of a new, empty schema (tests share the server, never their tables)."""
        import psycopg

        schema = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        return f"{self.url}?options=-csearch_path%3D{schema}"


def throwaway_server(database: str) -> PostgresServer | None:
    """For benchmarks: None when ``database`` (a URL) is given, else a started throwaway
    server with fsync on, as a real one; exits saying why when none can start."""
    if database:
        return None
    bin_dir = postgres_bin()
    if bin_dir is None:
        sys.exit("no PostgreSQL binaries: apt-get install postgresql, or pass --database")
    return PostgresServer(bin_dir, fsync=True).start()
