"""One database connection per thread, for the readers of both backends (any thread reads)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

log = logging.getLogger("episodic_koopman.service")


class Closable(Protocol):
    """A connection (SQLite's or psycopg's)."""

    def close(self) -> None: ...


C = TypeVar("C", bound=Closable)


class ConnectionPerThread(Generic[C]):
    """A connection per thread, opened at its first use there; `close` closes them all.

    ``usable`` is asked before each use: a connection that a failure left unusable (closed,
    a dropped server, a transaction a failed statement left open) is closed and replaced
    by a new one, rather than failing, or reading a stale snapshot, on every later use."""

    def __init__(self, open_: Callable[[], C], usable: Callable[[C], bool]) -> None:
        self._open = open_
        self._usable = usable
        self._local = threading.local()
        self._all: list[C] = []
        self._lock = threading.Lock()

    def get(self) -> C:
        conn: C | None = getattr(self._local, "conn", None)
        if conn is not None and not self._usable(conn):
            self._discard(conn)
            conn = None
        if conn is None:
            conn = self._open()
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def _discard(self, conn: C) -> None:
        self._local.conn = None
        with self._lock:
            self._all = [other for other in self._all if other is not conn]
        try:
            conn.close()
        except Exception:  # already broken: closing is only to free it
            log.debug("closing an unusable connection failed", exc_info=True)

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
