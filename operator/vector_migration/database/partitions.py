"""Partitioned tables: the trees under the migrated columns' tables, and their indexes' places in them.

A partitioned table holds no rows: its partitions do, each with the column under the same name
(its number may differ: a partition made apart and attached). ALTER TABLE on the root converts the
column in every partition, and LOCK TABLE on the root locks them all. An index on the root has one
index per partition attached to it; each is dropped with the root's and made again under its own
name, then attached where it was.
"""

from __future__ import annotations

import asyncpg

from ..vocabulary import Reason
from .catalog import Blocker, PartitionColumn, SourceInventory


async def read_partitions(conn: asyncpg.Connection, inv: SourceInventory) -> None:
    """Each migrated column of a partitioned table as every partition of its tree has it (by name)."""
    roots = [c for c in inv.columns if c.partitioned]
    if not roots:
        return
    rows = await conn.fetch(
        """
        SELECT r.root, n.nspname, c.relname, c.oid::bigint AS oid, a.attname, a.attnum, t.isleaf,
               c.relkind = 'f' AS foreign_table
          FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.oid[]), pg_catalog.unnest($2::text[])) AS r(root, attname)
          CROSS JOIN LATERAL pg_catalog.pg_partition_tree(r.root) t
          JOIN pg_catalog.pg_class c ON c.oid = t.relid
          JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
          JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attname = r.attname AND NOT a.attisdropped
         WHERE t.level > 0
         ORDER BY n.nspname, c.relname, a.attnum
        """,
        [c.table_oid for c in roots],
        [c.column for c in roots],
    )
    tables = {c.table_oid: (c.schema, c.table) for c in roots}
    for row in rows:
        if row["foreign_table"]:
            # ALTER TABLE changes a foreign table's declared type only: the rows stay pgvector's, elsewhere
            inv.refused.add((row["oid"], row["attnum"]))
            inv.blockers.append(
                Blocker(
                    Reason.UNSUPPORTED_COLUMN,
                    f"column {row['nspname']}.{row['relname']}.{row['attname']} belongs to a foreign table, a "
                    "partition of a migrated table, not supported yet (its rows are on another server)",
                )
            )
    inv.partition_columns = [
        PartitionColumn(
            root=tables[row["root"]],
            schema=row["nspname"],
            table=row["relname"],
            oid=row["oid"],
            column=row["attname"],
            attnum=row["attnum"],
            leaf=row["isleaf"],
        )
        for row in rows
    ]
