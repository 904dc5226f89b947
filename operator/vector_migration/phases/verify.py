"""Verify: data equal, source gone, indexes valid and used, recall and latency held."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from ..api import (
    IndexVerification,
    TableVerification,
    Verification,
)
from ..database.catalog import (
    index_state,
    read_extension,
)
from ..database.measure import (
    latency_ms,
    measure_index,
)
from ..engine import records
from ..engine.context import Migration, Probe
from ..engine.outcomes import Advance, Fail, Outcome
from ..engine.records import ensure_swap_facts
from ..engine.transactions import (
    bounded_reads,
)
from ..status import set_condition, set_phase
from ..vocabulary import (
    ChecksumMode,
    ConditionType,
    Phase,
    Reason,
)
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
    problems += await judge_probes(m, m.facts.probes, verification)
    verification.passed = not problems
    m.status.verification = verification
    if problems:
        message = "; ".join(text for _, text in problems)
        set_condition(m.status, ConditionType.VERIFIED, False, problems[0][0], message, m.generation)
        backup = f" The pre-migration backup is {m.status.backup.location}." if m.status.backup else ""
        return Fail(problems[0][0], f"verification failed: {message}.{backup}")
    await apply_post_migration(m)
    recalls = [v.recall_after for v in verification.indexes if v.recall_after is not None]
    message = (
        f"{sum(t.rows_after or 0 for t in verification.tables)} rows in {len(verification.tables)} table(s) equal "
        f"before and after; {len(m.facts.rebuilds)} index(es) valid"
        + (f"; lowest recall@{spec.k} {min(recalls):.3f}" if recalls else "")
    )
    set_condition(m.status, ConditionType.VERIFIED, True, Reason.PASSED, message, m.generation)
    await record_success(m, message)
    return Advance(Phase.SUCCEEDED, message)


async def record_success(m: Migration, message: str) -> None:
    """Journal the succeeded status before the status says so: a re-run finds it and does nothing."""
    final = m.status.model_copy(deep=True)
    set_phase(final, Phase.SUCCEEDED, message, m.generation)
    await records.write(
        m.session, m.name, records.VERIFIED, m.status.plan_hash or "", records.VerifiedRecord(status=final)
    )


async def judge_probes(m: Migration, probes: list[Probe], verification: Verification) -> list[tuple[Reason, str]]:
    """Measure each probe's index now; what fell below the baseline's recall or above its latency bound."""
    conn = m.session
    spec = m.spec.verify
    problems: list[tuple[Reason, str]] = []
    by_name = {v.name: v for v in verification.indexes}
    for position, probe in enumerate(probes):
        m.reporter.progress("verify", position, len(probes), f"measuring {probe.index}")
        if not probe.queries:
            continue
        truth = probe.baseline.truth if probe.baseline else None
        after = await measure_index(conn, probe.after, probe.queries, spec.k, truth)
        entry = by_name.setdefault(probe.index, IndexVerification(name=probe.index, queries=len(probe.queries)))
        entry.recall_after = after.recall
        entry.latency_after = latency_ms(after)
        entry.used_by_planner = after.used_by_planner
        if not after.usable and (probe.baseline is None or probe.baseline.usable):
            # Only what the source served is demanded of the target: a partial index the source's
            # planner could not use for the sampled query either is no failure of the migration.
            problems.append((Reason.VERIFICATION_FAILED, f"index {probe.index} cannot serve its distance query"))
        before = probe.baseline
        baseline_recall = before.recall if before is not None else None
        if (
            after.recall is not None
            and baseline_recall is not None
            and (after.recall < baseline_recall - spec.max_recall_drop)
        ):
            problems.append(
                (
                    Reason.RECALL_DROPPED,
                    f"index {probe.index}: recall@{spec.k} {after.recall:.3f} is more than "
                    f"{spec.max_recall_drop} below the baseline {baseline_recall:.3f}",
                )
            )
        if after.recall is not None and spec.min_recall is not None and after.recall < spec.min_recall:
            problems.append(
                (Reason.RECALL_DROPPED, f"index {probe.index}: recall@{spec.k} {after.recall:.3f} < {spec.min_recall}")
            )
        if before is not None:
            label, baseline_ms = before.judged_percentile
            after_ms = after.judged_percentile[1]
            bound = baseline_ms * spec.max_latency_regression + spec.latency_slack_ms
            if after_ms > bound:
                problems.append(
                    (
                        Reason.LATENCY_REGRESSED,
                        f"index {probe.index}: {label} {after_ms:.2f} ms exceeds {bound:.2f} ms "
                        f"({spec.max_latency_regression}x baseline {baseline_ms:.2f} ms + {spec.latency_slack_ms} ms)",
                    )
                )
    verification.indexes = list(by_name.values())
    m.reporter.task_done("verify")
    return problems


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
