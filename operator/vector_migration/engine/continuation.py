"""Continuing a migration from its journal: the facts recorded with the swap, loaded into a run that lost its memory.

Apart from records.py (the record types) so that the records never import the run (engine.context).
"""

from __future__ import annotations

from typing import Any

from ..api import SPEC_MUTABLE_AFTER_SWAP, VectorMigrationSpec, frozen_spec
from ..database.catalog import VectorColumn
from ..status import adopt, adopt_swapped, set_condition
from ..vocabulary import ConditionType, Phase, Reason
from .context import Migration
from .outcomes import Advance, Fail, Outcome
from .records import SWAPPED, Journal, ProbeRecord, SourceRecord, SwapRecord, read


def _vector_tables(columns: list[VectorColumn]) -> list[list[Any]]:
    tables: dict[tuple[str, str], list[str]] = {}
    for column in columns:
        tables.setdefault((column.schema, column.table), []).append(column.column)
    return [[schema, table, sorted(names)] for (schema, table), names in sorted(tables.items())]


def swap_record(m: Migration) -> SwapRecord:
    """What the swap records of this run: the source, the checksum mode, the spec, the status, builds and probes."""
    inventory = m.facts.inventory
    source = inventory.source if inventory else None
    return SwapRecord(
        source=SourceRecord(extension=source.name, version=source.version, source_schema=source.schema)
        if source
        else None,
        checksum_mode=m.facts.checksum_mode,
        spec=frozen_spec(m.spec),
        # the vector tables by (schema, table, columns): display names like "a.b.c" are ambiguous
        tables=_vector_tables(inventory.columns if inventory else []),
        status=m.status.model_copy(deep=True),
        rebuilds=list(m.facts.rebuilds),
        probes=[ProbeRecord.of(p) for p in m.facts.probes],
    )


def load_swap_record(m: Migration, record: SwapRecord, plan_hash: str) -> None:
    """Take the facts recorded with the swap: what to rebuild, what to measure, what was before."""
    adopt_swapped(m.status, record.status, plan_hash)
    m.facts.rebuilds = list(record.rebuilds)
    m.facts.tables = [(str(schema), str(table)) for schema, table, _ in record.tables]
    m.facts.checksum_mode = record.checksum_mode  # what the samples proved valid
    m.facts.swap_loaded = True
    m.facts.probes = [p.probe() for p in record.probes]
    for kind in (ConditionType.CHECKLIST_PASSED, ConditionType.EXTENSION_SWAPPED):
        set_condition(m.status, kind, True, Reason.ALREADY_DONE, "recorded in the migration journal", m.generation)


def already_done(m: Migration, recorded: Journal) -> Outcome | None:
    """Where a run continues when the journal says the migration was verified, or the swap committed."""
    verified = recorded.verified
    if verified is not None:
        adopt(m.status, verified.status)
        return Advance(Phase.SUCCEEDED, "already migrated and verified; nothing to do")
    swapped = recorded.swapped
    if swapped is not None:
        load_swap_record(m, swapped, recorded.plan_hash(SWAPPED))
        return Advance(Phase.REINDEX, "the swap had already committed; continuing with the reindex")
    return None


async def ensure_swap_facts(m: Migration) -> Outcome | None:
    """Make sure the facts recorded with the swap are loaded; an Outcome when they cannot be.

    A run that starts in Reindex or Verify (an operator restarted, a status read back) has an
    empty memory: without this, there would be nothing to rebuild and nothing to measure, and
    verification would pass vacuously.
    """
    if m.facts.swap_loaded:
        return None
    recorded = await read(m.session, m.name)
    if recorded.verified is not None:
        return already_done(m, recorded)
    swapped = recorded.swapped
    if swapped is None:
        return Advance(Phase.CHECKLIST, "no committed swap is recorded; starting from the checklist")
    changed = spec_changes(m, swapped)
    if changed is not None:
        return changed
    load_swap_record(m, swapped, recorded.plan_hash(SWAPPED))
    return None


def spec_changes(m: Migration, record: SwapRecord) -> Fail | None:
    """A spec changed after the swap in a way the committed swap cannot follow: the person decides."""
    if record.spec is None:
        return None
    # Read back through the model: a field added since the swap was recorded takes its default, and
    # a default is no change a person made.
    swapped_with = frozen_spec(VectorMigrationSpec.model_validate(record.spec))
    now = frozen_spec(m.spec)
    if swapped_with == now:
        return None
    changed = sorted(key for key in now.keys() | swapped_with.keys() if now.get(key) != swapped_with.get(key))
    return Fail(
        Reason.SPEC_CHANGED_AFTER_SWAP,
        f"spec.{', spec.'.join(changed)} changed after the swap committed; only "
        f"{', '.join(sorted(SPEC_MUTABLE_AFTER_SWAP))} may change now. Restore the previous values to continue.",
    )
