"""The processes engine (`--engine processes`): shard hosts as local child processes.

One Python process applies observations on one core (the GIL), and a model's
``learn_one`` is most of an observation's cost. So the HTTP server (parsing,
validation, routing) stays in the parent, and the series are split over child
processes, one per core by default: each child is the one-process service for its
storage shards (`service.ray_engine.actor.ShardActor`: its own `Registry` of models
and `Committer` over the shared database), as a Ray shard actor is, without Ray.

* **Same guarantees as one process.** A series lives in exactly one child, which
  commits its pushes, applies them in sequence order and answers its reads after
  catching up (read-your-writes); a forecast is the same pure function of the
  series' parameters and observations in any process.
* **Transport.** One Unix socket pair per child carries pickled frames (`frame`):
  ``(request id, method, args)`` one way, ``(request id, ok, result)`` back; many
  calls are in flight at once. The child runs `ShardActor`'s methods on its loop.
* **Failure.** A child that dies fails its calls in flight with 503 (a push's retry
  is idempotent) and is started again: the new one acquires its shards (fencing off
  the old one) and restores its models from snapshots and the database.
* **Shutdown.** The parent asks each child to close (finish its writes, snapshot its
  models). A child whose parent vanished (its socket closed) exits at once, as the
  whole server would in a crash. Children ignore SIGINT and SIGTERM: a terminal's
  Ctrl-C or a service manager's stop reaches the parent too, which closes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import logging
import os
import pickle
import signal
import socket
import struct
import sys
from collections.abc import AsyncIterator
from typing import Any

from .deps import ServiceState
from .settings import Settings
from .sharded_engine import HostUnavailable, ShardedEngine
from .snapshots import pin_malloc_arenas

log = logging.getLogger("episodic_koopman.service")

_HEADER = struct.Struct("<Q")
#: Seconds a child may take to start (imports, acquiring its shards, loading records).
START_TIMEOUT_SECONDS = 120.0


def frame(message: Any) -> bytes:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(body)) + body


async def read_frame(reader: asyncio.StreamReader) -> Any:
    """The next message, or None at the end of the stream."""
    try:
        header = await reader.readexactly(_HEADER.size)
        return pickle.loads(await reader.readexactly(_HEADER.unpack(header)[0]))
    except (asyncio.IncompleteReadError, ConnectionError):
        return None


class _Child:
    """One child process and its socket; calls in flight wait on futures by request id."""

    def __init__(self, process: asyncio.subprocess.Process, reader: Any, writer: Any) -> None:
        self.process = process
        self.reader: asyncio.StreamReader = reader
        self.writer: asyncio.StreamWriter = writer
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.ids = itertools.count(1)
        self.alive = True


class ShardProcesses:
    """Starts, calls and supervises the child processes (`service.sharded_engine.Transport`)."""

    def __init__(self, settings: Settings, n_hosts: int) -> None:
        self.settings = settings
        self.n_hosts = n_hosts
        self.children: list[_Child | None] = [None] * n_hosts
        self.closing = False
        self._supervisors: set[asyncio.Task[None]] = set()
        self.loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        await asyncio.gather(*(self._spawn(i) for i in range(self.n_hosts)))

    async def _spawn(self, index: int) -> None:
        parent_end, child_end = socket.socketpair()
        level = logging.getLogger("episodic_koopman.service").getEffectiveLevel()
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "service.shard_processes",
                str(index),
                str(self.n_hosts),
                str(child_end.fileno()),
                str(level),
                pass_fds=(child_end.fileno(),),
            )
        finally:
            child_end.close()
        reader, writer = await asyncio.open_unix_connection(sock=parent_end)
        try:
            # The child imports what this process would (the same sys.path, as
            # multiprocessing's spawn passes it), then hosts its shards under these settings.
            writer.write(frame((self.settings.model_dump(), sys.path)))
            ready = await asyncio.wait_for(read_frame(reader), START_TIMEOUT_SECONDS)
            if ready is None or ready[1] != "ready":
                raise RuntimeError(f"shard process {index} failed to start: {ready!r}")
        except BaseException:
            writer.close()
            if process.returncode is None:
                process.kill()
            await process.wait()
            raise
        child = _Child(process, reader, writer)
        self.children[index] = child
        task = asyncio.get_running_loop().create_task(self._receive(index, child))
        self._supervisors.add(task)
        task.add_done_callback(self._supervisors.discard)

    async def _receive(self, index: int, child: _Child) -> None:
        """Resolve the child's replies; when it goes, fail its calls and start another."""
        while (message := await read_frame(child.reader)) is not None:
            request_id, ok, value = message
            future = child.pending.pop(request_id, None)
            if future is not None and not future.done():
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(RuntimeError(f"shard process {index}: {value}"))
        child.alive = False
        for future in child.pending.values():
            if not future.done():
                future.set_exception(HostUnavailable(index))
        child.pending.clear()
        child.writer.close()
        code = await child.process.wait()
        if self.closing:
            return
        log.error("shard process %d exited (%s); starting another", index, code)
        delay = 0.1
        while not self.closing:
            try:
                await self._spawn(index)
                return
            except Exception:
                log.exception("shard process %d failed to start again", index)
                await asyncio.sleep(delay)
                delay = min(5.0, delay * 2)

    async def close(self, timeout: float) -> None:
        """Ask every child to finish its writes and snapshot its models, then reap them."""
        self.closing = True

        async def close_one(index: int, child: _Child) -> None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.invoke(index, "close"), timeout)
            child.writer.close()
            try:
                await asyncio.wait_for(child.process.wait(), 10)
            except TimeoutError:
                child.process.kill()
                await child.process.wait()

        await asyncio.gather(
            *(close_one(i, c) for i, c in enumerate(self.children) if c is not None)
        )
        for task in list(self._supervisors):
            task.cancel()

    # ------------------------------------------------------------------ calls
    async def invoke(self, index: int, method: str, *args: Any) -> Any:
        child = self.children[index]
        if child is None or not child.alive:
            raise HostUnavailable(index)
        request_id = next(child.ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        child.pending[request_id] = future
        try:
            child.writer.write(frame((request_id, method, args)))
            await child.writer.drain()
        except ConnectionError:
            child.pending.pop(request_id, None)
            raise HostUnavailable(index) from None
        return await future

    def forget(self, index: int, method: str, *args: Any) -> None:
        child = self.children[index]
        if child is not None and child.alive:
            with contextlib.suppress(Exception):
                child.writer.write(frame((0, method, args)))  # request 0: no one waits

    def call_from_thread(self, index: int, method: str, *args: Any, timeout: float = 60) -> Any:
        """`invoke` from a thread other than the server's loop (tests use the actors' ``run``)."""
        assert self.loop is not None, "not started"
        call = self.invoke(index, method, *args)
        return asyncio.run_coroutine_threadsafe(call, self.loop).result(timeout)

    def pid(self, index: int) -> int | None:
        child = self.children[index]
        return child.process.pid if child is not None and child.alive else None


class ProcessEngine(ShardedEngine):
    """`service.engine.Engine` over local shard processes."""

    host_kind = "shard process"

    def __init__(
        self, settings: Settings, processes: ShardProcesses, n_shards: int, state: ServiceState
    ) -> None:
        super().__init__(settings, processes, n_shards, state.metrics)
        self.processes = processes


@contextlib.asynccontextmanager
async def running_processes(
    state: ServiceState, n_shards: int, n_hosts: int
) -> AsyncIterator[None]:
    """The HTTP server's lifespan over shard processes."""
    settings = state.settings
    processes = ShardProcesses(settings, n_hosts)
    try:
        await processes.start()
    except BaseException:
        await processes.close(timeout=10)
        raise
    state.engine = ProcessEngine(settings, processes, n_shards, state)
    log.info("serving through %d shard processes", n_hosts)
    try:
        yield
    finally:
        state.engine = None
        await processes.close(settings.shutdown_snapshot_seconds + 10)


# ---------------------------------------------------------------------- the child's side
async def serve_child(sock: socket.socket, index: int, n_hosts: int) -> None:
    """Host a `ShardActor` and answer the parent's calls until it says close or goes."""
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    first = await read_frame(reader)
    if first is None:
        return
    settings, sys.path[:] = first
    # (the settings arrive as a dict: the one `ShardActor` takes)
    pin_malloc_arenas(int(settings["malloc_arenas"]))  # as the one-process server does
    from .ray_engine.actor import ShardActor

    # Imports live as long as the child: kept out of the full collections that restoring
    # many models triggers, as `serve` does in the parent.
    gc.freeze()
    actor = ShardActor(settings, index, n_hosts)
    writer.write(frame((0, "ready", os.getpid())))
    tasks: set[asyncio.Task[None]] = set()
    closed = asyncio.Event()

    async def answer(request_id: int, method: str, args: tuple[Any, ...]) -> None:
        try:
            result, ok = await getattr(actor, method)(*args), True
        except Exception as exc:  # the actor returns ApiErrors as values: this is a bug
            log.exception("shard process %d: %s failed", index, method)
            result, ok = f"{type(exc).__name__}: {exc}", False
        if request_id:
            writer.write(frame((request_id, ok, result)))
        if method == "close":
            closed.set()

    while not closed.is_set():
        message = await read_frame(reader)
        if message is None:
            # The parent is gone, so no one waits for an answer: exit at once, as if the
            # whole server had crashed (what was acknowledged is committed; a restart
            # replays), rather than linger beside the next server.
            os._exit(0)
        task = asyncio.get_running_loop().create_task(answer(*message))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        if message[1] == "close":
            await task
    with contextlib.suppress(ConnectionError):
        await writer.drain()
    writer.close()


def child_main(argv: list[str]) -> None:
    index, n_hosts, fd, level = (int(value) for value in argv)
    # The parent decides when children stop (a terminal's Ctrl-C, or a service manager
    # signalling the whole group, reaches it too): they close when it says, or when it dies.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=level, format=f"%(levelname)s:     [shard {index}] %(message)s")
    asyncio.run(serve_child(socket.socket(fileno=fd), index, n_hosts))


if __name__ == "__main__":
    child_main(sys.argv[1:])
