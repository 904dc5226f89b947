"""The numbers that prove a migration: row counts, content checksums, recall@k and latency.

Checksums are order-independent (a sum of 64-bit row hashes) and format-independent for
vector columns: each vector is hashed as the float4[] its text form parses to, so a target
that prints ``1.0`` where pgvector printed ``1`` still checks equal, while any changed value,
lost row or duplicated row does not.
"""

# size: one module for every number the status shows (checksums, recall, latency), sharing their SQL

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import time
from dataclasses import dataclass
from typing import Any

import asyncpg

from ..api import LatencyMs, TableVerification
from ..vocabulary import ChecksumMode
from .sql import operator_ref, qualify, quote_ident

SAMPLE_SEED = 20_240_601  # TABLESAMPLE REPEATABLE seed: the same data gives the same queries
WARM_UP_QUERIES = 5
# Below this many queries a p95 has no two-sided 95% interval (see quantile_interval) and is the
# third or fourth slowest query, which one stall on a busy machine moves: judge the median. At 60
# queries beside a CPU hog the baseline's p95 ratio read 1.5x to 7.3x across runs, its p50 0.9x to
# 1.1x, and a 3x slower index passed against the inflated p95 (a clean-clone CI run).
TAIL_PERCENTILE_MIN_QUERIES = 72
# Source and target may round a distance differently in its last bits: within this (relative and
# absolute) margin of exact search's k-th distance, a result is a true neighbour.
DISTANCE_TOLERANCE = 1e-6


@dataclass(frozen=True)
class TableChecksum:
    """Row count and content checksum of one table."""

    rows: int
    checksum: str

    def against(self, name: str, after: TableChecksum) -> TableVerification:
        """The status's record of this table's rows and checksum (before) beside another's (after)."""
        return TableVerification(
            name=name, rows_before=self.rows, rows_after=after.rows, checksum_before=self.checksum,
            checksum_after=after.checksum,
        )  # fmt: skip


@dataclass(frozen=True)
class IndexTarget:
    """What to query to exercise one vector index."""

    index_name: str
    schema: str
    table: str
    column: str
    operator_schema: str
    operator: str
    type_sql: str  # the column's type, qualified, for casting query vectors
    predicate: str | None


@dataclass(frozen=True)
class IndexMeasurement:
    """Recall@k and index-scan latency over a set of query vectors."""

    queries: int
    recall: float | None
    p50_ms: float
    p95_ms: float
    p99_ms: float
    usable: bool
    used_by_planner: bool
    # Exact search's answer per query: how many neighbours it found (k, or fewer rows) and the
    # distance of the farthest, read in the same snapshot as the index's answers.
    truth: tuple[tuple[int, float], ...] | None = None
    # Recall's counts: true neighbours found, and neighbours asked for (queries x k, fewer rows).
    hits: int | None = None
    trials: int | None = None
    # Each index query's time divided by the control query's, run right after it: p50 and p95 of
    # that ratio, and the control's own median. None in measurements journaled before they existed.
    relative_p50: float | None = None
    relative_p95: float | None = None
    control_p50_ms: float | None = None
    # 95% distribution-free intervals of those two ratios, from order statistics: (low, high), high
    # None when too few queries ran to bound that percentile from above
    relative_p50_interval: tuple[float, float | None] | None = None
    relative_p95_interval: tuple[float, float | None] | None = None

    @property
    def tail(self) -> bool:
        """Whether enough queries ran for p95 to mean something (else p50 is judged)."""
        return self.queries >= TAIL_PERCENTILE_MIN_QUERIES

    @property
    def judged_percentile(self) -> tuple[str, float]:
        """The latency figure a regression is judged on: p95, or p50 when too few queries ran."""
        if self.tail:
            return "p95", self.p95_ms
        return "p50", self.p50_ms

    @property
    def judged_relative(self) -> float | None:
        """The control-relative latency figure a regression is judged on (p95, or p50), when measured."""
        return self.relative_p95 if self.tail else self.relative_p50

    @property
    def judged_relative_interval(self) -> tuple[float, float | None] | None:
        """The 95% interval of the judged control-relative figure (p95, or p50), when measured."""
        return self.relative_p95_interval if self.tail else self.relative_p50_interval

    @property
    def recall_interval(self) -> tuple[float, float] | None:
        """The 95% Wilson score interval of recall, a proportion of hits over trials."""
        if not self.hits and not self.trials:
            return None
        return wilson_interval(self.hits or 0, self.trials or 0)


def combined(first: IndexMeasurement, more: IndexMeasurement) -> IndexMeasurement:
    """Recall over both sets of queries (hits and trials added); latency stays the first's."""
    hits, trials = (first.hits or 0) + (more.hits or 0), (first.trials or 0) + (more.trials or 0)
    return dataclasses.replace(
        first, queries=first.queries + more.queries, hits=hits, trials=trials, recall=hits / trials if trials else None
    )


def wilson_interval(successes: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson's score interval for a binomial proportion (sound near 0 and 1, unlike the normal one)."""
    if trials <= 0:
        return 0.0, 1.0
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)


# A fixed amount of executor work that touches no table: what the machine's load does to it, it
# does to the index's queries measured beside it. Its type does not change with the migration.
CONTROL_QUERY = "/* vector-migration: control */ SELECT pg_catalog.sum(g) FROM pg_catalog.generate_series(1, 4000) g"


def normalized_vector(column_sql: str) -> str:
    """SQL for a vector column as float4[] parsed from its text form (format-independent)."""
    return (
        f"pg_catalog.string_to_array(pg_catalog.btrim({column_sql}::pg_catalog.text, '[]{{}} '), ',')"
        "::pg_catalog.float4[]"
    )


# How content is compared: one vocabulary (ChecksumMode); the names stay for readability here.
BINARY, TEXT, NORMALIZED = ChecksumMode.BINARY, ChecksumMode.TEXT, ChecksumMode.NORMALIZED
# The marker a NULL vector hashes as in binary mode: a send function's output for any vector is
# longer (a header and at least one element), so no value hashes like NULL.
_NULL_BYTES = "'\\x00'::pg_catalog.bytea"


async def table_checksum(
    conn: asyncpg.Connection,
    schema: str,
    table: str,
    vector_columns: set[str],
    mode: ChecksumMode = ChecksumMode.NORMALIZED,
) -> TableChecksum:
    """Count rows and sum a 64-bit hash of each row's content (see row_hash_sql)."""
    row_hash = await row_hash_sql(conn, schema, table, vector_columns, mode)
    rows, total = await one_row_through_copy(
        conn, f"SELECT pg_catalog.count(*), COALESCE(pg_catalog.sum({row_hash}), 0) FROM {qualify(schema, table)}"
    )
    return TableChecksum(rows=int(rows), checksum=fold_sum(int(total)))


async def row_hash_sql(
    conn: asyncpg.Connection, schema: str, table: str, vector_columns: set[str], mode: ChecksumMode
) -> str:
    """SQL for a 64-bit hash of one row's content, its columns as the catalog has them now.

    A row's hash chains its vector columns onto the hash of its other columns, so moving a
    vector to another row changes the sum. How a vector is hashed depends on ``mode``:
    "binary" hashes its binary send form (cheapest: no float formatting), valid when source and
    target send sampled values identically; "text" its text form as printed (about a tenth of
    the cost of parsing it), valid when both print values identically; "normalized" the
    float4[] the text parses to, valid for any printing.
    """
    columns = await conn.fetch(
        """
        SELECT a.attname, sn.nspname AS send_schema, sp.proname AS send_name, t.typcategory = 'A' AS is_array
          FROM pg_catalog.pg_attribute a
          JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
          LEFT JOIN pg_catalog.pg_proc sp ON sp.oid = t.typsend
          LEFT JOIN pg_catalog.pg_namespace sn ON sn.oid = sp.pronamespace
         WHERE a.attrelid = $1::pg_catalog.regclass AND a.attnum > 0 AND NOT a.attisdropped
         ORDER BY a.attnum
        """,
        qualify(schema, table),
    )
    plain = [quote_ident(r["attname"]) for r in columns if r["attname"] not in vector_columns]
    row_hash = f"pg_catalog.hashtextextended(ROW({', '.join(plain)})::pg_catalog.text, 0)"
    for record in columns:
        if record["attname"] not in vector_columns:
            continue
        vector = quote_ident(record["attname"])
        # An array's send form names its element type, and its text is not one vector's: its printed
        # form is compared, whatever the mode (a target printing differently fails safe).
        array = record["is_array"]
        if mode == BINARY and record["send_name"] and not array:
            sent = f"{qualify(record['send_schema'], record['send_name'])}({vector})"
            row_hash = f"pg_catalog.hashbyteaextended(COALESCE({sent}, {_NULL_BYTES}), {row_hash})"
            continue
        printed = array or mode in (TEXT, BINARY)
        text = f"{vector}::pg_catalog.text" if printed else f"{normalized_vector(vector)}::pg_catalog.text"
        # NULL hashes as a marker no vector prints as, so NULL and a value differ.
        row_hash = f"pg_catalog.hashtextextended(COALESCE({text}, 'NULL'), {row_hash})"
    return row_hash


async def one_row_through_copy(conn: asyncpg.Connection, query: str) -> list[str]:
    """The fields of a one-row query's answer, read through COPY so that it may run in parallel.

    PostgreSQL plans a COPY's query in parallel, but not a query run through the extended
    protocol's Execute, and the full scans read here are where the swap's lock is held: with two
    workers a checksum of 100,000 x 384 takes 0.15 s instead of 0.25 s here.
    """
    answer = bytearray()

    async def collect(chunk: bytes) -> None:
        answer.extend(chunk)

    await conn.copy_from_query(query, output=collect)
    return answer.decode().rstrip("\n").split("\t")


async def send_function(conn: asyncpg.Connection, type_sql: str) -> str | None:
    """The qualified binary send function of a type, if it has one."""
    record = await conn.fetchrow(
        """
        SELECT n.nspname, p.proname FROM pg_catalog.pg_type t
          JOIN pg_catalog.pg_proc p ON p.oid = t.typsend
          JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
         WHERE t.oid = $1::pg_catalog.regtype
        """,
        type_sql,
    )
    return qualify(record["nspname"], record["proname"]) if record else None


async def sends_identically(conn: asyncpg.Connection, samples: list[tuple[str, bytes]], target_type_sql: str) -> bool:
    """Whether the target's send form of every sampled value equals the source's send form of it."""
    send = await send_function(conn, target_type_sql)
    if send is None:
        return False
    if not samples:
        return True
    differing: int = await conn.fetchval(
        f"""
        SELECT pg_catalog.count(*)
          FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.text[]), pg_catalog.unnest($2::pg_catalog.bytea[]))
               AS s(value, sent)
         WHERE {send}(s.value::{target_type_sql}) IS DISTINCT FROM s.sent
        """,
        [text for text, _ in samples],
        [sent for _, sent in samples],
    )
    return differing == 0


async def prints_identically(conn: asyncpg.Connection, samples: list[str], target_type_sql: str) -> bool:
    """Whether the target prints every sampled source value exactly as the source printed it."""
    if not samples:
        return True
    differing: int = await conn.fetchval(
        f"""
        SELECT pg_catalog.count(*) FROM pg_catalog.unnest($1::pg_catalog.text[]) AS s(value)
         WHERE s.value IS DISTINCT FROM s.value::{target_type_sql}::pg_catalog.text
        """,
        samples,
    )
    return differing == 0


def fold_sum(total: int) -> str:
    """A 64-bit hex digest of the (possibly negative, possibly huge) hash sum."""
    return format(total % (1 << 64), "016x")


async def sample_queries(
    conn: asyncpg.Connection, target: IndexTarget, count: int, rows: int, seed: int = SAMPLE_SEED
) -> list[str]:
    """Query vectors drawn from the indexed rows themselves, deterministically for the same data and seed."""
    where = f"{quote_ident(target.column)} IS NOT NULL"
    if target.predicate:
        where += f" AND ({target.predicate})"
    table = qualify(target.schema, target.table)
    percent = min(100.0, 100.0 * 4 * count / max(rows, 1))
    values: list[str] = [
        r[0]
        for r in await conn.fetch(
            f"SELECT {quote_ident(target.column)}::pg_catalog.text FROM {table} "
            f"TABLESAMPLE BERNOULLI ($1) REPEATABLE ($2) WHERE {where} LIMIT $3",
            percent,
            seed,
            count,
        )
    ]
    if len(values) < count:
        values = [
            r[0]
            for r in await conn.fetch(
                f"SELECT {quote_ident(target.column)}::pg_catalog.text FROM {table} WHERE {where} LIMIT $1", count
            )
        ]
    return values


async def measure_index(
    conn: asyncpg.Connection,
    target: IndexTarget,
    queries: list[str],
    k: int,
) -> IndexMeasurement:
    """Recall@k of the index against exact search, and index-scan latency, on the same queries.

    A result counts as a true neighbour when it is no farther than exact search's k-th one
    (rows tied at that distance are all correct answers). The index's answers and exact search's
    are read in one snapshot: the application writes while a migration verifies, and a neighbour
    it deleted in between would count against the index (a healthy index read 0.60 against
    neighbours found before the application deleted a third of the rows, and was rolled back).
    """
    searched = _Search(target, k)
    latencies: list[float] = []
    controls: list[float] = []
    answers: list[list[float]] = []
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        # Forbidding sequential scans makes the planner use the index whenever it can serve the query.
        await _set_local(conn, plan_cache_mode="force_custom_plan", enable_seqscan="off")
        plan = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {searched.body}", queries[0]) if queries else None
        usable = _plan_uses(plan, target.index_name)
        for vector in queries[:WARM_UP_QUERIES]:
            # untimed: the first scans load caches, not the index's speed
            await conn.fetch(searched.index_query, vector)
        for vector in queries:
            started = time.perf_counter()
            answers.append([row[0] for row in await conn.fetch(searched.index_query, vector)])
            latencies.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            await conn.fetchval(CONTROL_QUERY)
            controls.append((time.perf_counter() - started) * 1000)
        truth = await _exact_search(conn, searched, queries, answers)
    found_per_query = [
        (expected, min(expected, sum(1 for d in found if d <= _within(farthest))))
        for (expected, farthest), found in zip(truth, answers, strict=True)
        if expected
    ]
    recalls = [hits / expected for expected, hits in found_per_query]
    ratios = [latency / control for latency, control in zip(latencies, controls, strict=True) if control > 0]
    default_plan = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {searched.body}", queries[0]) if queries else None
    return IndexMeasurement(
        queries=len(queries),
        recall=round(statistics.fmean(recalls), 4) if recalls else None,
        p50_ms=_percentile(latencies, 50),
        p95_ms=_percentile(latencies, 95),
        p99_ms=_percentile(latencies, 99),
        usable=usable,
        used_by_planner=_plan_uses(default_plan, target.index_name),
        truth=truth,
        hits=sum(hits for _, hits in found_per_query),
        trials=sum(expected for expected, _ in found_per_query),
        relative_p50=_percentile(ratios, 50) if ratios else None,
        relative_p95=_percentile(ratios, 95) if ratios else None,
        control_p50_ms=_percentile(controls, 50) if controls else None,
        relative_p50_interval=quantile_interval(ratios, 0.50) if ratios else None,
        relative_p95_interval=quantile_interval(ratios, 0.95) if ratios else None,
    )


class _Search:
    """The SQL of one index's k-nearest-neighbour search, by the index and exactly."""

    def __init__(self, target: IndexTarget, k: int) -> None:
        self.k = k
        column = quote_ident(target.column)
        self.rows = f"FROM {qualify(target.schema, target.table)} WHERE {column} IS NOT NULL"
        if target.predicate:
            self.rows += f" AND ({target.predicate})"
        self.operator = operator_ref(target.operator_schema, target.operator)
        self.type_sql = target.type_sql
        distance = f"{column} {self.operator} $1::pg_catalog.text::{target.type_sql}"
        self.body = f"SELECT ({distance})::pg_catalog.float8 {self.rows} ORDER BY {distance} LIMIT {int(k)}"
        # Distinct texts, and custom plans: a prepared statement otherwise keeps the generic plan it
        # made under the other mode's settings (a sequential scan timed as if it were the index).
        self.index_query = f"/* vector-migration: index */ {self.body}"
        self.exact_query = f"/* vector-migration: exact */ {self.body}"
        # The candidates of every bounded query in one scan. The table's rows are read in a
        # subquery, so the partial index's predicate sees the table's columns and nothing else.
        self.bounded_query = (
            f"/* vector-migration: exact, bounded */ SELECT q.n, (t.v {self.operator} q.v)::pg_catalog.float8 "
            f"FROM (SELECT {column} AS v {self.rows}) AS t, "
            f"ROWS FROM (pg_catalog.unnest($1::pg_catalog.text[]::{target.type_sql}[]), "
            f"pg_catalog.unnest($2::pg_catalog.float8[])) WITH ORDINALITY AS q(v, bound, n) "
            f"WHERE (t.v {self.operator} q.v) <= q.bound"
        )


async def _exact_search(
    conn: asyncpg.Connection, searched: _Search, queries: list[str], answers: list[list[float]]
) -> tuple[tuple[int, float], ...]:
    """Exact search's answer per query (how many neighbours, the farthest's distance).

    The index's answer bounds it: the index returned k real rows, so the true k-th neighbour is
    no farther than the index's k-th. One scan of the table keeps, for all such queries at once,
    the rows within their bounds, and PostgreSQL can run it in parallel: 0.67 s for 100 queries
    over 100,000 x 384 here, against 4.8 s for a scan per query. A query the index answered with
    fewer than k rows, or with a distance that is not a number, has no bound: it gets its own scan.
    """
    k = searched.k
    bounded = [i for i, found in enumerate(answers) if len(found) >= k and all(math.isfinite(d) for d in found)]
    found_within: dict[int, list[float]] = {i: [] for i in bounded}
    async with conn.transaction():  # inside measure_index's: the snapshot its index answers were read in
        await _set_local(
            conn,
            plan_cache_mode="force_custom_plan",
            enable_seqscan="on",
            enable_indexscan="off",
            enable_bitmapscan="off",
            enable_indexonlyscan="off",
            # The planner expects a third of all (row, query) pairs back, and so a serial plan;
            # a bounded search returns about k rows per query, which costs a parallel plan nothing.
            parallel_tuple_cost="0",
        )
        if bounded:
            rows = await conn.fetch(
                searched.bounded_query,
                [queries[i] for i in bounded],
                [_within(max(answers[i])) for i in bounded],
            )
            for n, distance in rows:
                found_within[bounded[n - 1]].append(distance)
        truth: list[tuple[int, float]] = []
        for i, vector in enumerate(queries):
            nearest = sorted(found_within.get(i, []))[:k]
            if len(nearest) < k:  # unbounded, or (floating point aside) the bound held fewer than k
                nearest = [row[0] for row in await conn.fetch(searched.exact_query, vector)]
            truth.append((len(nearest), max(nearest, default=0.0)))
    return tuple(truth)


def _within(farthest: float) -> float:
    """The distance up to which a result counts as being as near as ``farthest``."""
    return farthest + abs(farthest) * DISTANCE_TOLERANCE + DISTANCE_TOLERANCE


async def _set_local(conn: asyncpg.Connection, **settings: str) -> None:
    for name, value in settings.items():
        await conn.execute("SELECT pg_catalog.set_config($1, $2, true)", name, value)


def quantile_interval(values: list[float], quantile: float, confidence: float = 0.95) -> tuple[float, float | None]:
    """A distribution-free interval for a quantile, from order statistics.

    The number of values below the true quantile is Binomial(n, quantile); the ranks l and u are
    chosen so that the l-th and u-th smallest values enclose it with at least ``confidence``. The
    upper end is None when even the largest value cannot bound it (too few values for that
    quantile: a p95 needs 72 for a two-sided 95% interval).
    """
    ordered = sorted(values)
    n, alpha = len(ordered), (1 - confidence) / 2
    cumulative, ranks = 0.0, []
    for below in range(n + 1):
        cumulative += _binomial_pmf(n, below, quantile)
        ranks.append(cumulative)  # P(at most `below` values lie below the quantile)
    lower = max((j for j in range(1, n + 1) if ranks[j - 1] <= alpha), default=1)
    upper = next((j for j in range(1, n + 1) if ranks[j - 1] >= 1 - alpha), None)
    return round(ordered[lower - 1], 3), round(ordered[upper - 1], 3) if upper is not None else None


def _binomial_pmf(n: int, k: int, p: float) -> float:
    """P(Binomial(n, p) = k), in log space so that thousands of trials neither overflow nor vanish."""
    if p <= 0 or p >= 1:
        return float(k == (0 if p <= 0 else n))
    log = math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * math.log(p) + (n - k) * math.log1p(-p)
    return math.exp(log)


def _percentile(values: list[float], percent: int) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(percent / 100 * len(ordered) + 0.5) - 1))
    return round(ordered[rank], 3)


def _plan_uses(plan: Any, index_name: str) -> bool:
    """Whether an EXPLAIN (FORMAT JSON) plan scans the named index."""
    if plan is None:
        return False
    document = json.loads(plan) if isinstance(plan, str) else plan

    def walk(node: Any) -> bool:
        if isinstance(node, dict):
            if node.get("Index Name") == index_name:
                return True
            return any(walk(value) for value in node.values())
        if isinstance(node, list):
            return any(walk(item) for item in node)
        return False

    return walk(document)


def latency_ms(measurement: IndexMeasurement | None) -> LatencyMs | None:
    """A measurement's latency percentiles as the status reports them."""
    if measurement is None:
        return None
    return LatencyMs(p50=measurement.p50_ms, p95=measurement.p95_ms, p99=measurement.p99_ms)
