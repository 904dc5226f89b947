"""Verify: data equal, source gone, indexes valid and used, recall and latency held."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from ..api import (
    CatalogCheck,
    TableVerification,
    Verification,
)
from ..database.catalog import (
    index_state,
    read_extension,
)
from ..engine import records
from ..engine.context import Migration
from ..engine.continuation import ensure_swap_facts
from ..engine.outcomes import Advance, Fail, Hold, Outcome
from ..engine.transactions import (
    bounded_reads,
)
from ..status import record_verification, set_condition, set_phase
from ..vocabulary import (
    ChecksumMode,
    ConditionType,
    Phase,
    Reason,
)
from .judge import judge_probes
from .post_migration import apply_post_migration


async def run_verify(m: Migration) -> Outcome:
    """Prove the result: data equal, source gone, indexes valid and used, recall and latency held."""
    return await bounded_reads(m, "verification", _verify)


async def _verify(m: Migration) -> Outcome:
    conn = m.session
    missing = await ensure_swap_facts(m)
    if missing is not None:
        return missing
    spec = m.spec.verify
    problems: list[tuple[Reason, str]] = []
    verification = m.status.verification or Verification(k=spec.k)
    for table in verification.tables:
        if (table.rows_after, table.checksum_after) != (table.rows_before, table.checksum_before):
            problems.append((Reason.DATA_MISMATCH, f"{table.name}: content differs from before the swap"))
    if await read_extension(conn, m.spec.source.extension) is not None:
        problems.append((Reason.VERIFICATION_FAILED, f"extension {m.spec.source.extension} is still installed"))
    for rebuild in m.facts.rebuilds:
        state = await index_state(conn, rebuild.index_schema, rebuild.name)
        if state is None or not state[0] or state[1] != rebuild.method:
            problems.append(
                (
                    Reason.VERIFICATION_FAILED,
                    f"index {rebuild.name} is missing, INVALID or not on {rebuild.method}",
                )
            )
    judgement = await judge_probes(m, m.facts.probes, verification)
    problems += judgement.problems
    verification.passed = not problems and not judgement.held
    record_verification(m.status, verification)
    if problems:
        backup = f" The pre-migration backup is {m.status.backup.location}." if m.status.backup else ""
        return fail_verification(m, problems, "verification failed: ", after=f".{backup}")
    if judgement.held:
        return hold_for_a_decision(m, judgement.held, "the data is migrated and equal, the indexes valid")
    await apply_post_migration(m)
    recalls = [v.recall_after for v in verification.indexes if v.recall_after is not None]
    message = (
        f"{sum(t.rows_after or 0 for t in verification.tables)} rows in {len(verification.tables)} table(s) equal "
        f"before and after; {len(m.facts.rebuilds)} index(es) valid"
        + (f"; lowest recall@{spec.k} {min(recalls):.3f}" if recalls else "")
        + (f"; catalog: {_catalog_summary(verification.catalog)}" if verification.catalog else "")
    )
    set_condition(m.status, ConditionType.VERIFIED, True, Reason.PASSED, message, m.generation)
    await record_success(m, message)
    return Advance(Phase.SUCCEEDED, message)


def _catalog_summary(catalog: CatalogCheck) -> str:
    """``35 objects equal, 13 changed as planned``: the catalog comparison, for a message."""
    return f"{catalog.equal} objects equal, {catalog.changed_as_planned} changed as planned"


async def record_success(m: Migration, message: str) -> None:
    """Journal the succeeded status before the status says so: a re-run finds it and does nothing."""
    final = m.status.model_copy(deep=True)
    set_phase(final, Phase.SUCCEEDED, message, m.generation)
    await records.write(
        m.session, m.name, records.VERIFIED, m.status.plan_hash or "", records.VerifiedRecord(status=final)
    )


def unequal(table: TableVerification) -> bool:
    """Whether a table's two sides differ in rows or content."""
    return (table.rows_before, table.checksum_before) != (table.rows_after, table.checksum_after)


async def compare_content(
    m: Migration, measure: Callable[[], Awaitable[list[TableVerification]]]
) -> list[TableVerification]:
    """Checksums of both sides of each table: the cheap mode first, parsed values when it shows a difference.

    A cheap mode (binary, text) was chosen on samples: a difference may be one of form (the two
    types send or print a value differently), so it is measured again with parsed values before
    it counts, and the run keeps that mode from then on.
    """
    compared = await measure()
    if m.facts.checksum_mode.cheap and any(unequal(t) for t in compared):
        m.facts.checksum_mode = ChecksumMode.NORMALIZED
        compared = await measure()
    return compared


def fail_verification(
    m: Migration, problems: list[tuple[Reason, str]], what: str, *, reason: Reason | None = None, after: str = ""
) -> Fail:
    """A failed verification: the Verified condition and the Fail name every problem, the first one's reason."""
    message = "; ".join(text for _, text in problems)
    reason = reason or problems[0][0]
    set_condition(m.status, ConditionType.VERIFIED, False, reason, message, m.generation)
    return Fail(reason, f"{what}{message}{after}")


def hold_for_a_decision(m: Migration, held: list[str], what_holds: str) -> Outcome:
    """Latency still over its bound after every round: a person decides, nothing is rolled back."""
    message = "; ".join(held)
    set_condition(m.status, ConditionType.VERIFIED, False, Reason.VERIFICATION_INCONCLUSIVE, message, m.generation)
    return Hold(
        Reason.VERIFICATION_INCONCLUSIVE,
        f"latency stayed over its bound: {message}. {what_holds[0].upper()}{what_holds[1:]}. Awaiting a decision: "
        'promote to accept it (annotation ruvector.dev/promote: "true", or --promote), or roll back '
        '(annotation ruvector.dev/rollback: "true", or the rollback command)',
    )
