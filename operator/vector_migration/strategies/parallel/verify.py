"""Verify and analyse: the copies equal the originals in one snapshot, indexes valid, recall and latency held.

Because the sync trigger is synchronous, any snapshot sees a table and its copy equal: the
comparison runs in one REPEATABLE READ transaction while the application goes on writing.
"""

from __future__ import annotations

from dataclasses import asdict

from ...api import CutoverStatus, TableVerification
from ...database.catalog import index_state
from ...database.measure import IndexTarget, table_checksum
from ...engine.context import Migration
from ...engine.outcomes import Advance, Outcome
from ...engine.probe import Probe
from ...phases.judge import Judgement, judge_probes
from ...phases.verify import compare_content, fail_verification, hold_for_a_decision, unequal
from ...status import record_checksums, set_condition, set_cutover
from ...vocabulary import ConditionType, Phase, Reason
from .recorded import ShadowTable
from .shadow import START_OVER, recorded_shadows


async def checksum_pair(m: Migration, table: ShadowTable, left: str, right: str) -> TableVerification:
    """Rows and checksums of two relations holding one table's rows (original and copy), as seen now."""
    conn = m.session
    mode = m.facts.checksum_mode
    names = set(table.vector_columns)
    a = await table_checksum(conn, table.table_schema, left, names, mode)
    b = await table_checksum(conn, table.table_schema, right, names, mode)
    return a.against(table.name, b)


async def analyse(m: Migration, tables: list[ShadowTable], relation: str) -> Judgement:
    """The checks a verify and every cutover step run: equal content, valid indexes, recall, latency.

    ``relation`` "shadow" checks the shadows against the originals; "final" (after the finalize)
    the migrated tables against the old ones.
    """
    pairs = [(t, t.table, t.shadow) if relation == "shadow" else (t, t.old, t.table) for t in tables]

    async def in_one_snapshot() -> list[TableVerification]:
        async with m.session.transaction(isolation="repeatable_read", readonly=True):
            return [await checksum_pair(m, table, a, b) for table, a, b in pairs]

    compared = await compare_content(m, in_one_snapshot)
    verification = record_checksums(m.status, m.spec.verify.k, compared, m.facts.checksum_mode)
    problems: list[tuple[Reason, str]] = [
        (Reason.DATA_MISMATCH, f"{t.name}: {t.rows_before} rows/{t.checksum_before} in the original, "
                               f"{t.rows_after} rows/{t.checksum_after} in the copy")
        for t in compared
        if unequal(t)
    ]  # fmt: skip
    for table in tables:
        for index in table.vector_indexes:
            name = index.name if relation == "shadow" else index.original
            state = await index_state(m.session, table.table_schema, name)
            if state is None or not state[0] or state[1] != index.method:
                problems.append(
                    (Reason.VERIFICATION_FAILED, f"index {name} is missing, INVALID or not on {index.method}")
                )
    judgement = await judge_probes(m, _probes_on(m, tables, relation), verification)
    judgement.problems[:0] = problems
    verification.passed = not judgement.problems and not judgement.held
    return judgement


def _probes_on(m: Migration, tables: list[ShadowTable], relation: str) -> list[Probe]:
    """The probes, pointed at the shadows' indexes, or after the finalize at the migrated tables'."""
    if relation == "shadow":
        return m.facts.probes
    originals = {(t.table_schema, i.name): (t.table, i.original) for t in tables for i in t.vector_indexes}
    probes = []
    for probe in m.facts.probes:
        table_name, index_name = originals.get(
            (probe.after.schema, probe.after.index_name), (probe.after.table, probe.index)
        )
        target = IndexTarget(**{**asdict(probe.after), "table": table_name, "index_name": index_name})
        probes.append(Probe(probe.index, probe.table_rows, target, probe.queries, probe.baseline))
    return probes


async def run_shadow_verify(m: Migration) -> Outcome:
    """Prove the shadows while the application still runs on pgvector."""
    _, tables = await recorded_shadows(m)
    if tables is None:
        return START_OVER
    judgement = await analyse(m, tables, "shadow")
    problems = judgement.problems
    if problems:
        return fail_verification(m, problems, "the shadow tables failed verification: ")
    if judgement.held:
        return hold_for_a_decision(
            m, judgement.held, "the shadows equal the tables; the application still runs on them"
        )
    rows = sum(t.rows_after or 0 for t in (m.status.verification.tables if m.status.verification else []))
    message = (
        f"shadow tables equal to the originals in one snapshot ({rows} rows); indexes valid, recall and latency held"
    )
    set_condition(m.status, ConditionType.SHADOW_SYNCED, True, Reason.PASSED, message, m.generation)
    set_cutover(m.status, m.status.cutover or CutoverStatus())
    return Advance(Phase.CUTOVER, message)
