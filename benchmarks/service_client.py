"""Driving a real server from the service benchmarks: the process, and a cheap HTTP client.

Only loopback addresses are used. Every wait is bounded in time.
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

HOST = "127.0.0.1"


class RawConnection:
    """A minimal HTTP/1.1 keep-alive client connection (far cheaper per request than httpx,
    so the load generator leaves the CPU to the server it measures)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(
        self, method: str, path: str, body: bytes = b"", ctype: str = ""
    ) -> tuple[int, bytes]:
        head = f"{method} {path} HTTP/1.1\r\nhost: {self.host}\r\n"
        if body or method in ("POST", "PUT"):
            head += (
                f"content-length: {len(body)}\r\ncontent-type: {ctype or 'application/json'}\r\n"
            )
        status_line = b""
        for _ in range(2):  # the server closes idle keep-alive connections: reconnect once
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            self.writer.write(head.encode() + b"\r\n" + body)
            assert self.reader is not None
            try:
                status_line = await self.reader.readline()
            except ConnectionError:
                status_line = b""
            if status_line:
                break
            self.close()
        assert self.reader is not None
        status = int(status_line.split()[1])
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the server's shard processes hold its models)."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except FileNotFoundError:
            continue
        for tid in tasks:
            try:
                children = Path(f"/proc/{current}/task/{tid}/children").read_text().split()
            except FileNotFoundError:
                continue
            queue.extend(int(child) for child in children)
    return found


def rss_mib(pid: int) -> float:
    """Resident set size of the process and its descendants, MiB."""
    total = 0
    for member in process_tree(pid):
        try:
            lines = Path(f"/proc/{member}/status").read_text().splitlines()
        except FileNotFoundError:
            continue
        total += sum(int(line.split()[1]) for line in lines if line.startswith("VmRSS:"))
    return total / 1024


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of the process and its live descendants."""
    ticks = 0
    for member in process_tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


class ServerProcess:
    """``episodic-koopman serve`` on a free loopback port, as a subprocess.

    `start` returns the seconds from spawning to the first ready ``/readyz`` (models
    restored) and sets ``answered_after``, the seconds until its first answer of any
    kind. `stop` sends SIGTERM (the server snapshots within its shutdown budget) and
    returns the seconds until it exited.
    """

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.env = {**os.environ, **(env or {})}
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.answered_after = math.nan

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 600.0) -> float:
        script = Path(sys.executable).with_name("episodic-koopman")
        command = [str(script), "serve", "--host", HOST, "--port", str(self.port)]
        command += ["--data-dir", str(self.data_dir), "--log-level", "warning"]
        began = time.perf_counter()
        self.process = subprocess.Popen(command, env=self.env)
        deadline = began + timeout
        self.answered_after = math.nan
        with httpx.Client(timeout=2) as client:
            while True:
                try:
                    status = client.get(f"{self.url}/readyz").status_code
                    if math.isnan(self.answered_after):
                        self.answered_after = time.perf_counter() - began
                    if status == 200:
                        return time.perf_counter() - began
                except httpx.HTTPError:
                    pass
                if self.process.poll() is not None:
                    raise RuntimeError(f"the server exited with {self.process.returncode}")
                if time.perf_counter() > deadline:
                    self.kill()
                    raise RuntimeError(f"the server was not ready within {timeout:.0f} s")
                time.sleep(0.02)

    def stop(self, timeout: float = 180.0) -> float:
        if self.process is None or self.process.poll() is not None:
            return 0.0
        began = time.perf_counter()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        return time.perf_counter() - began

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)
