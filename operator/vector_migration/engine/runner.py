"""The runner: look the strategy up, run its phases, apply outcomes, retry waits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import asyncpg

from .. import strategies  # noqa: F401 - importing the strategies registers them
from ..api import (
    VectorMigrationStatus,
)
from ..database.liveness import while_server_answers
from ..database.sql import (
    DatabaseUnavailable,
)
from ..status import add_to_timing, condition, fail, hold, set_message, set_phase, summarize, timing_key
from ..vocabulary import (
    ConditionType,
    Phase,
    Reason,
    RollbackPolicy,
)
from .context import Migration, close_session, open_session
from .outcomes import Advance, Fail, Hold, Outcome, Wait
from .records import UnreadableJournal
from .strategy import strategy_of

# What a lost connection raises. asyncpg reports a session the server terminated while it sat idle
# as InternalClientError ("cannot switch to state 15; another operation (2) is in progress") on
# its next statement (MagicStack/asyncpg#784, #1069; SQLAlchemy treats it as a disconnect since
# sqlalchemy#13241): an outage to reconnect from, not a crash.
CONNECTION_LOST = (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError)

# A spec changed under a swapped database: the person who changed it decides, not the engine.
_NO_ROLLBACK = frozenset({Reason.SPEC_CHANGED_AFTER_SWAP})


async def step(m: Migration) -> Outcome:
    """Run the current phase once and apply its outcome to the status."""
    phase = m.status.phase
    strategy = strategy_of(m.spec)
    function = strategy.phases.get(phase)
    if function is None:
        return Hold(Reason.IN_PROGRESS, f"phase {phase.value} has no engine step")
    if phase is Phase.PENDING:
        set_phase(m.status, Phase.CHECKLIST, "checking the database", m.generation)
    m.reporter.phase_started(m.status.phase)
    started = time.perf_counter()
    try:
        outcome = await while_server_answers(m.heartbeat, function(m))
    except (DatabaseUnavailable, *CONNECTION_LOST) as error:
        outcome = Wait(Reason.DATABASE_UNAVAILABLE, f"{m.status.phase.value}: {error}")
    except UnreadableJournal as error:
        outcome = Fail(Reason.JOURNAL_UNREADABLE, f"{error}; nothing was changed")
    except asyncpg.PostgresError as error:
        # A statement no phase expected to fail: what it was part of rolled back; the journal says what is done.
        outcome = Fail(
            Reason.INTERNAL_ERROR,
            f"{m.status.phase.value}: unexpected database error ({type(error).__name__}: {error})",
        )
    key = timing_key(m.status.phase)
    if not isinstance(outcome, Wait):
        add_to_timing(m.status, key, time.perf_counter() - started)
    if isinstance(outcome, Fail) and m.status.phase in strategy.undo_on_failure and outcome.reason not in _NO_ROLLBACK:
        m.facts.failure = outcome
        if m.spec.rollback.on_failure is RollbackPolicy.AUTOMATIC:
            outcome = Advance(Phase.ROLLING_BACK, f"{outcome.message} Rolling back (rollback.onFailure: Automatic).")
        else:
            outcome = Fail(
                outcome.reason,
                f"{outcome.message} {strategy.kept_after_failure(m.status.phase)}; rollback.onFailure is Manual.",
            )
    apply(m, outcome)
    if m.status.phase is Phase.ROLLED_BACK and isinstance(outcome, Advance):
        # Rolled back is not healthy: Stalled with the reason the migration failed for (remembered
        # by this run, or recorded in the failed phase's condition when an earlier run saw it).
        requested = Fail(Reason.ROLLBACK_REQUESTED, "") if m.decisions.rollback else None
        failure = m.facts.failure or requested or _recorded_failure(m.status)
        if failure.message:
            set_message(m.status, f"{failure.message} Rolled back: {m.status.message}.")
        summarize(m.status, failure.reason, m.status.message, m.generation)
    return outcome


def request_rollback(m: Migration, by: str) -> bool:
    """Turn a succeeded migration into one rolling back, when a person asked; whether it did."""
    if not m.decisions.rollback:
        return False
    abortable = m.status.phase in strategy_of(m.spec).abortable
    if m.status.phase is not Phase.SUCCEEDED and not abortable:
        return False
    set_phase(m.status, Phase.ROLLING_BACK, f"rollback requested by {by}", m.generation)
    return True


def _recorded_failure(status: VectorMigrationStatus) -> Fail:
    for kind in (ConditionType.VERIFIED, ConditionType.INDEXES_REBUILT):
        recorded = condition(status, kind)
        if recorded is not None and recorded.status == "False" and recorded.reason in Reason.__members__.values():
            return Fail(Reason(recorded.reason), recorded.message)
    return Fail(Reason.ROLLED_BACK, "")


def apply(m: Migration, outcome: Outcome) -> None:
    """Write an outcome into the status through the named mutations."""
    if isinstance(outcome, Advance):
        set_phase(m.status, outcome.phase, outcome.message, m.generation)
    elif isinstance(outcome, Fail):
        fail(m.status, outcome.reason, outcome.message, m.generation)
    else:
        hold(m.status, outcome.reason, outcome.message, m.generation)


PhaseObserver = Callable[[Phase, Outcome], Awaitable[None]]
StopCheck = Callable[[Phase], Awaitable[Outcome | None]]


async def drive(m: Migration, *, stop: StopCheck | None = None, observe: PhaseObserver | None = None) -> Outcome:
    """Run phases back to back until one does not advance, or the migration is done; the last outcome.

    The one loop the command line and the operator share. ``stop`` may end the run before a phase
    (the operator's resource being deleted); ``observe`` hears every phase change and the last
    outcome (the operator writes the status there, so a watcher sees the migration move).
    """
    outcome: Outcome = Advance(m.status.phase)
    while isinstance(outcome, Advance) and not m.status.phase.terminal:
        before = m.status.phase
        stopped = await stop(before) if stop is not None else None
        if stopped is not None:
            return stopped
        opened = await _open_session(m) if m.conn is None else None
        if opened is not None:
            apply(m, opened)
            outcome = opened
        else:
            outcome = await step(m)
        # Observed when the phase moves, stops, or advances within itself (a batch of InPlace's committed).
        if observe is not None and (
            m.status.phase != before or not isinstance(outcome, Advance) or outcome.phase is before
        ):
            await observe(before, outcome)
    return outcome


# What PostgreSQL says to a login on a database with ALLOW_CONNECTIONS false.
CLOSED_DATABASE = "is not currently accepting connections"


async def _open_session(m: Migration) -> Outcome | None:
    """Open the control session; a database a cut-off step of the strategy closed is opened again first."""
    opened = await open_session(m)
    if isinstance(opened, Wait) and opened.reason is Reason.DATABASE_UNAVAILABLE and CLOSED_DATABASE in opened.message:
        move = strategy_of(m.spec).database_move
        try:
            recovered = await move.recover_connection(m) if move is not None else False
        except DatabaseUnavailable:
            recovered = False
        if recovered:
            m.reporter.warning(f"{m.params.dbname} was left closed by an interrupted switchover; opened it again")
            opened = await open_session(m)
    return opened


# Waits that are retries of something that failed (a lock held by the application, a database
# away) back off exponentially; waits on progress elsewhere (a running Job, a pause) keep their pace.
BACKOFF_REASONS = frozenset({Reason.LOCK_TIMEOUT, Reason.MIGRATION_LOCKED, Reason.DATABASE_UNAVAILABLE})
MAX_RETRY_DELAY = 300.0


def retry_delay(outcome: Wait, retry: int) -> float:
    """Seconds before retrying after a Wait, the ``retry``-th in a row (0 first): the one backoff rule."""
    if outcome.reason in BACKOFF_REASONS:
        return float(min(outcome.delay * 2 ** min(retry, 10), MAX_RETRY_DELAY))
    return outcome.delay


async def run(
    m: Migration,
    *,
    max_waits: int = 3,
    give_up_on: frozenset[Reason] = frozenset(),
    reconnect_for: float = 0.0,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> VectorMigrationStatus:
    """Drive phases until success, failure or a hold; retry waits with backoff a bounded number of times.

    Waits whose reason is in ``give_up_on`` fail at once (a command line should not sit out
    another migration's lock; an operator should). With ``reconnect_for`` seconds, a connection
    lost after it was made (a server restart, a failover) is tried again with backoff until that
    deadline, whatever ``give_up_on`` says: the journal tells the new session what is done. A
    database that was never reached is still given up on at once (a wrong URL is no outage).
    A pause the spec asks for (a cutover step's duration) is sat out, not counted as a retry.
    """
    waits = 0
    lost_since: float | None = None
    request_rollback(m, "the caller")
    try:
        while not m.status.phase.terminal:
            phase, sessions = m.status.phase, m.sessions_opened
            outcome = await drive(m)
            if m.status.phase is not phase or m.sessions_opened != sessions:
                waits, lost_since = 0, None  # progress (or a new session) since the last wait
            if not isinstance(outcome, Wait):
                break  # done, held for a person, or failed
            if outcome.reason is Reason.CUTOVER_PAUSED:
                await sleep(outcome.delay)
                continue
            if outcome.reason is Reason.DATABASE_UNAVAILABLE:
                await close_session(m)
                if m.sessions_opened:
                    lost_since = lost_since or time.monotonic()
                    if time.monotonic() - lost_since < reconnect_for:
                        m.reporter.warning(f"{outcome.message}; reconnecting (for up to {reconnect_for:.0f}s)")
                        await sleep(retry_delay(Wait(outcome.reason, outcome.message, 2.0), min(waits, 4)))
                        waits += 1
                        continue
            waits += 1
            if outcome.reason in give_up_on:
                fail(m.status, outcome.reason, outcome.message, m.generation)
                break
            if waits > max_waits:
                fail(m.status, outcome.reason, f"gave up after {waits} attempts: {outcome.message}", m.generation)
                break
            m.reporter.warning(outcome.message)
            await sleep(retry_delay(outcome, waits - 1))
    finally:
        await close_session(m)
    return m.status
