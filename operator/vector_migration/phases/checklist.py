"""Checklist: read the database, refuse what cannot be migrated, plan, take the baseline."""

from __future__ import annotations

from ..api import (
    ColumnInventory,
    DependentInventory,
    IndexInventory,
    IndexVerification,
    Inventory,
    SettingInventory,
    TableInventory,
    Verification,
)
from ..database import journal
from ..database.catalog import (
    MIN_SERVER_VERSION_NUM,
    Blocker,
    SourceInventory,
    available_versions,
    default_version,
    read_extension,
    read_server,
    untrusted_code,
)
from ..database.inventory import read_inventory
from ..database.measure import (
    IndexTarget,
    latency_ms,
    measure_index,
    sample_queries,
)
from ..database.sql import (
    qualify,
)
from ..database.surface import TargetSurface
from ..database.table_copy import copy_format
from ..engine import records
from ..engine.context import Migration
from ..engine.outcomes import Advance, Fail, Hold, Outcome
from ..engine.plan import MigrationPlan, PlanningError
from ..engine.probe import Probe
from ..engine.strategy import PlanInputs, strategy_of
from ..engine.transactions import (
    Ready,
    bounded_reads,
)
from ..status import adopt, record_plan, record_verification, set_condition, warn
from ..vocabulary import (
    ConditionType,
    Phase,
    Reason,
)
from .approval import next_after_backup
from .drift import drift_from
from .probe import ProbeFailed, probe_surface


async def run_checklist(m: Migration) -> Outcome:
    """Read the database, refuse what cannot be migrated, plan, and take the baseline."""
    return await bounded_reads(m, "checklist", _checklist)


async def _checklist(m: Migration) -> Outcome:
    done = await _continue_from_journal(m)
    if done is not None:
        return done
    inventory = await _read_source(m)
    if isinstance(inventory, Fail):
        return inventory
    planned = await _plan(m, inventory)
    if isinstance(planned, Fail):
        return planned
    return await _take_baseline(m, planned)


async def _continue_from_journal(m: Migration) -> Outcome | None:
    """Where a run goes when the journal says the migration got further than the checklist."""
    recorded = await records.read(m.session, m.name)
    verified = recorded.verified
    if verified is not None:
        adopt(m.status, verified.status)
        if m.decisions.rollback:
            return Advance(Phase.ROLLING_BACK, "migrated and verified; rolling back as requested")
        drifted = await drift_from(m, recorded.first_change)
        if drifted:
            return Fail(
                Reason.DRIFTED,
                f"the journal says this migration succeeded, but the database no longer matches: {'; '.join(drifted)}. "
                "Nothing was changed. To migrate it again, apply a migration under a new name.",
            )
        return Advance(Phase.SUCCEEDED, await _finished(m))
    return strategy_of(m.spec).resume(m, recorded)


async def _read_source(m: Migration) -> SourceInventory | Fail:
    """The server, the source extension, the target's availability, and the inventory: every blocker at once."""
    conn = m.session
    server = await read_server(conn)
    if server.version_num < MIN_SERVER_VERSION_NUM:
        return Fail(Reason.UNSUPPORTED_SERVER, f"PostgreSQL {server.version} is too old; RuVector needs 14 or newer")
    source = await read_extension(conn, m.spec.source.extension)
    if source is None:
        others = await journal.other_migrations(conn, m.name)
        already = f"; migration(s) {', '.join(others)} already swapped this database" if others else ""
        return Fail(
            Reason.SOURCE_EXTENSION_MISSING,
            f"extension {m.spec.source.extension} is not installed in database {server.database}{already}",
        )
    target = m.spec.target.extension
    versions = await available_versions(conn, target)
    if not versions:
        return Fail(
            Reason.TARGET_EXTENSION_UNAVAILABLE,
            f"extension {target} is not available on this server (not in pg_available_extensions); "
            "install its package on every PostgreSQL instance first",
        )
    if m.spec.target.version and m.spec.target.version not in versions:
        return Fail(
            Reason.TARGET_EXTENSION_UNAVAILABLE,
            f"extension {target} version {m.spec.target.version} is not available "
            f"(available: {', '.join(sorted(versions))})",
        )
    version = m.spec.target.version or await default_version(conn, target) or ""
    needs_superuser, trusted = versions.get(version, (True, False))

    m.reporter.progress("inventory", note="reading the catalog")
    inventory = await read_inventory(conn, m.spec, server, source)
    m.reporter.task_done("inventory")
    if needs_superuser and not trusted and not (server.superuser or server.login_superuser):
        # Reported together with every other problem, so one run lists all a person must fix.
        inventory.blockers.insert(
            0,
            Blocker(
                Reason.INSUFFICIENT_PRIVILEGE,
                f"creating extension {target} needs a superuser (it is not trusted); role {server.user} is not one "
                "(an admin login for the extension alone: spec.database.adminSecretRef, --admin-database-url)",
            ),
        )
    for message in inventory.warnings:
        warn(m.status, message)
    if inventory.blockers:
        first = inventory.blockers[0]
        return Fail(first.reason, "; ".join(b.message for b in inventory.blockers))
    return inventory


async def _plan(m: Migration, inventory: SourceInventory) -> Ready | Fail:
    """Probe the target, ask the strategy for its checks and its plan; the Fail when either refuses."""
    conn = m.session
    target = m.spec.target.extension
    target_schema = m.target_schema(inventory)
    try:
        # Replicate's other server holds the target; the source's may not have it installed.
        surface = await probe_surface(
            m, inventory, target_schema, inventory.server.can_create_database, m.inputs.target_server
        )
    except ProbeFailed as error:
        return Fail(error.reason, str(error))
    m.facts.copy_format = copy_format(m.facts.checksum_mode)
    inputs = PlanInputs(
        inventory, surface, target_schema, await read_extension(conn, target) is not None, m.facts.copy_format
    )
    strategy = strategy_of(m.spec)
    # What the mapping refuses and what the strategy refuses, named together in one run.
    blockers = []
    try:
        conversion = strategy.convert(m, inputs)
    except PlanningError as error:
        blockers.append(Blocker(error.reason, str(error)))
    blockers += await strategy.check(m, inventory, surface)
    if blockers:
        return Fail(blockers[0].reason, "; ".join(b.message for b in blockers))
    try:
        plan = await strategy.plan(m, inputs, conversion)
    except PlanningError as error:
        return Fail(error.reason, str(error))
    for message in plan.warnings:
        warn(m.status, message)
    m.facts.inventory, m.facts.surface, m.facts.plan = inventory, surface, plan
    record_plan(m.status, plan.plan_hash, inventory_model(inventory, plan.conversion, surface))
    return Ready(plan, inventory, surface)


async def _take_baseline(m: Migration, planned: Ready) -> Outcome:
    """Measure every source index (what the target must match), then go on: dry run, backup, approval or swap."""
    plan, inventory, surface = planned.plan, planned.inventory, planned.surface
    m.facts.probes = await _baseline(m, inventory, plan.conversion, surface)
    record_verification(
        m.status,
        Verification(
            k=m.spec.verify.k,
            indexes=[
                IndexVerification(
                    name=probe.index,
                    queries=len(probe.queries),
                    recall_before=probe.baseline.recall if probe.baseline else None,
                    latency_before=latency_ms(probe.baseline),
                )
                for probe in m.facts.probes
            ],
        ),
    )
    summary = (
        f"{len(inventory.columns)} vector column(s) in {len(inventory.tables())} table(s), "
        f"{len(inventory.indexes)} index(es), {len(inventory.views)} dependent view(s); plan {plan.plan_hash}"
    )
    set_condition(m.status, ConditionType.CHECKLIST_PASSED, True, Reason.PASSED, summary, m.generation)
    if m.spec.dry_run:
        return Hold(Reason.DRY_RUN, f"dry run: checklist passed, nothing changed; {summary}")
    if m.spec.backup.enabled:
        return Advance(Phase.BACKUP, summary)
    set_condition(m.status, ConditionType.BACKUP_COMPLETED, False, Reason.SKIPPED, "backup disabled in spec")
    return Advance(next_after_backup(m), summary)


async def _baseline(
    m: Migration, inventory: SourceInventory, plan: MigrationPlan, surface: TargetSurface
) -> list[Probe]:
    """Recall and latency of every source index on sampled queries: what the target must match."""
    probes = []
    conversions = {(c.column.schema, c.column.table, c.column.column): c for c in plan.conversions}
    for position, rebuild in enumerate(plan.rebuilds, start=1):
        index = rebuild.saved
        conversion = conversions[index.column_key]
        column = conversion.column
        rows = inventory.row_counts.get((index.table_schema, index.table), 0)
        if index.ordering_operator is None:
            continue  # not a similarity index: nothing to measure recall of
        before = IndexTarget(
            index_name=index.name,
            schema=index.table_schema,
            table=index.table,
            column=index.column,
            operator_schema=inventory.source.schema,
            operator=index.ordering_operator,
            type_sql=qualify(column.type_schema, column.type_name),
            predicate=index.predicate,
        )
        after = IndexTarget(
            index_name=index.name,
            schema=index.table_schema,
            table=index.table,
            column=index.column,
            operator_schema=surface.schema,
            operator=rebuild.opclass.ordering_operator or index.ordering_operator,
            type_sql=qualify(surface.schema, conversion.target_type.name),
            predicate=rebuild.predicate,
        )
        m.reporter.progress("baseline", position - 1, len(plan.rebuilds), f"measuring {index.name}")
        untrusted = await untrusted_code(m.session, index.oid) if index.predicate else []
        if untrusted:
            # Sampling evaluates the predicate with this session's privileges: another role's code
            # there could use them (a table owner could make itself superuser). Not measured.
            m.warn(f"index {index.name} is not measured: its predicate calls {', '.join(untrusted)}")
            rows = 0
        queries = await sample_queries(m.session, before, m.spec.verify.sample_queries, rows) if rows else []
        baseline = await measure_index(m.session, before, queries, m.spec.verify.k) if queries else None
        probes.append(Probe(index.name, rows, after, queries, baseline))
    m.reporter.task_done("baseline")
    return probes


async def _finished(m: Migration) -> str:
    """A finished migration run again: nothing to do, except what its strategy left until it is due."""
    leftovers = strategy_of(m.spec).leftovers
    remaining = leftovers.due_in(m.status) if leftovers is not None else None
    if leftovers is None or remaining is None:
        return "already migrated and verified; nothing to do"
    if remaining == 0:
        return await leftovers.clean_up(m)
    return f"migrated and verified; {leftovers.kept_for(remaining)}"


def inventory_model(inventory: SourceInventory, plan: MigrationPlan, surface: TargetSurface) -> Inventory:
    """The inventory as the status reports it: tables, columns and their target types, indexes, settings."""
    conversions = {(c.column.schema, c.column.table, c.column.column): c for c in plan.conversions}
    rebuilds = {(r.saved.schema, r.saved.name): r for r in plan.rebuilds}
    return Inventory(
        server_version=inventory.server.version,
        source_version=inventory.source.version,
        target_version=surface.version,
        tables=[
            TableInventory(
                name=f"{schema}.{table}",
                rows=inventory.row_counts.get((schema, table), 0),
                columns=[
                    ColumnInventory(
                        name=c.column,
                        type=c.type_name,
                        dims=c.dims,
                        array=c.array or None,
                        target_type=conversions[(c.schema, c.table, c.column)].target_type_sql,
                    )
                    for c in inventory.columns_of(schema, table)
                ],
            )
            for schema, table in inventory.tables()
        ],
        indexes=[
            IndexInventory(
                name=i.name,
                table=f"{i.table_schema}.{i.table}",
                column=i.column,
                method=i.method,
                opclass=i.opclass,
                definition=i.definition,
                target_definition=rebuilds[(i.schema, i.name)].definition,
            )
            for i in inventory.indexes
        ]
        + [
            IndexInventory(
                name=i.name,
                table=f"{i.table_schema}.{i.table}",
                column="(expression or several keys)",
                method=i.method,
                opclass=", ".join(key.name for key in i.keys),
                definition=i.definition,
                handling=(
                    "dropped (indexes.unmappable: Drop)"
                    if i.definition in plan.dropped_indexes
                    else "rewritten for the target"
                ),
            )
            for i in inventory.carried_indexes
        ],
        dependents=[DependentInventory(kind=d.kind, name=d.name, handling=d.handling) for d in inventory.dependents],
        settings=[
            SettingInventory(scope=c.saved.scope, name=c.saved.name, value=c.saved.value, target_name=c.target_name)
            for c in plan.settings
        ],
    )
