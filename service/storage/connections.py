"""One database connection per thread, for the readers of both backends (any thread reads)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar


class Closable(Protocol):
    """A connection (SQLite's or psycopg's)."""

    def close(self) -> None: ...


C = TypeVar("C", bound=Closable)


class ConnectionPerThread(Generic[C]):
    """A connection per thread, opened at its first use there (and again when ``usable``
    says the old one is not: a broken server connection); `close` closes them all."""

    def __init__(self, open_: Callable[[], C], usable: Callable[[C], bool] | None = None) -> None:
        self._open = open_
        self._usable = usable
        self._local = threading.local()
        self._all: list[C] = []
        self._lock = threading.Lock()

    def get(self) -> C:
        conn: C | None = getattr(self._local, "conn", None)
        if conn is None or (self._usable is not None and not self._usable(conn)):
            conn = self._open()
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
