"""A session's heartbeat: a server that stops answering ends the phase instead of hanging it.

A statement waits on its socket for as long as the server is silent. A server that restarted
closes the socket and the wait ends at once; one that is frozen (stopped, stuck on its storage)
or cut off by a partition that drops packets does not, and a COPY or an index build would wait
until statementTimeout (6h by default), or for ever. So beside the session a second, idle
connection asks the server every ``interval`` whether the session's backend still exists. When
it gets no answer ``misses`` times in a row, or hears that the backend is gone, the session is
ended and the phase stops with DatabaseUnavailable, which every caller already treats as an
outage: the command line reconnects until ``--reconnect-for`` runs out, the operator retries
with backoff, and the journal says what is done.

A server that answers, however slowly or however full, is never declared dead: "too many
connections" is an answer, and the probe connection is opened once and kept, so a busy server
does not make it miss. A probe that cannot be opened at all leaves the session unwatched rather
than guessing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TypeVar

import asyncpg

from .sql import ConnectionParams, DatabaseUnavailable, connect

T = TypeVar("T")


@dataclass(frozen=True)
class HeartbeatSettings:
    """How often the server is asked, and how many unanswered questions end the session."""

    interval: float = 10.0
    misses: int = 3


# InternalClientError: what asyncpg may raise on a connection the server ended while it was idle
_SILENCE = (OSError, TimeoutError, asyncpg.InterfaceError, asyncpg.InternalClientError, asyncpg.PostgresConnectionError)


@dataclass
class Heartbeat:
    """The probe of one session; ``silent`` is set (with ``reason``) when the server stopped answering."""

    params: ConnectionParams
    session: asyncpg.Connection
    settings: HeartbeatSettings
    silent: asyncio.Event = field(default_factory=asyncio.Event)
    reason: str = ""
    # The probe's backend: a switchover that ends every other session on the database keeps it.
    probe_pid: int | None = None
    _task: asyncio.Task[None] | None = None

    @classmethod
    async def start(
        cls, params: ConnectionParams, session: asyncpg.Connection, settings: HeartbeatSettings
    ) -> Heartbeat | None:
        """Open the probe connection and start asking; None when no probe can be opened."""
        try:
            probe = await connect(params, timeout=settings.interval)
        except DatabaseUnavailable:
            return None
        heartbeat = cls(params, session, settings, probe_pid=probe.get_server_pid())
        heartbeat._task = asyncio.create_task(heartbeat._beat(probe), name="vector-migration heartbeat")
        return heartbeat

    async def stop(self) -> None:
        """Stop asking and close the probe."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _beat(self, probe: asyncpg.Connection | None) -> None:
        pid = self.session.get_server_pid()
        interval, missed = self.settings.interval, 0
        try:
            while True:
                await asyncio.sleep(interval)
                try:
                    probe = probe if probe is not None and not probe.is_closed() else await self._reopen()
                    alive = await probe.fetchval(
                        "SELECT EXISTS (SELECT FROM pg_catalog.pg_stat_activity WHERE pid = $1)", pid, timeout=interval
                    )
                except asyncpg.PostgresError:
                    missed = 0  # an answer, if not the one asked for (too many connections, a cancel)
                    continue
                except (*_SILENCE, DatabaseUnavailable):
                    if probe is not None:
                        probe.terminate()
                    probe, missed = None, missed + 1
                    if missed >= self.settings.misses:
                        self._end(f"the server did not answer {missed} heartbeats in a row, {interval:g}s apart")
                        return
                    continue
                if not alive:
                    self._end(f"the session's backend (pid {pid}) is gone from the server")
                    return
                missed = 0
        finally:
            if probe is not None:
                probe.terminate()  # never close(): a polite goodbye waits on the very server that is silent

    async def _reopen(self) -> asyncpg.Connection:
        probe = await connect(self.params, timeout=self.settings.interval)
        self.probe_pid = probe.get_server_pid()
        return probe

    def _end(self, reason: str) -> None:
        self.reason = reason
        self.session.terminate()
        self.silent.set()


async def while_server_answers(heartbeat: Heartbeat | None, work: Awaitable[T]) -> T:
    """Await ``work``; if the heartbeat finds the server silent first, stop it and raise DatabaseUnavailable.

    Stopping the work cancels it: a pg_dump it started is killed (backup._run), and its statements
    end with the session the heartbeat already terminated.
    """
    if heartbeat is None:
        return await work
    task = asyncio.ensure_future(work)
    silent = asyncio.ensure_future(heartbeat.silent.wait())
    try:
        await asyncio.wait({task, silent}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        # The caller was stopped: so is the work, and its clean-up (a pg_dump killed) is done
        # before the caller hears it, as when the work ran in the caller's own task.
        task.cancel()
        await asyncio.wait({task})
        raise
    finally:
        silent.cancel()
    if task.done():
        return task.result()
    task.cancel()
    task.add_done_callback(lambda done: done.cancelled() or done.exception())  # its error is ours now
    # Its clean-up may wait on another connection to the same silent server: give it one interval.
    await asyncio.wait({task}, timeout=heartbeat.settings.interval)
    raise DatabaseUnavailable(f"{heartbeat.reason}; the session was ended")
