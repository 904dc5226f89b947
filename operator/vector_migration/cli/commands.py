"""The ``vector-migration`` command line: plan, migrate, demo, crd.

Exit codes: 0 done (or a dry run/plan that passed), 1 the migration failed (the message says
why and what state the database is in), 2 bad input, 3 held for approval.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from .. import __version__
from ..api import VectorMigrationStatus, describe_validation_error
from ..database.backup import LocalBackup
from ..database.sql import ConnectionParams, DatabaseUnavailable
from ..engine.context import Decisions, Migration, RunInputs
from ..engine.runner import run
from ..phases.drift import check_once
from ..vocabulary import Phase, Reason
from .help import completion_script, enable_completion, subcommand
from .logins import ADMIN_DATABASE_URL_ENV, DATABASE_URL_ENV, TARGET_DATABASE_URL_ENV, load
from .operator_run import DEFAULT_PEERING, run_operator
from .output import EXIT_FAILED, EXIT_OK, EXIT_USAGE, RichReporter, finish, print_plan, print_summary

EXIT_CODES = """exit codes:
  0  done (a plan or dry run that passed, a migration that succeeded)
  1  failed: the message says why and what state the database is in
  2  bad input: a manifest, URL or file that cannot be used (nothing was changed)
  3  held for a person: approval, a promotion, or consent to restore"""

# Each subcommand's examples, shown under its --help with the exit codes.
EXAMPLES = {
    "plan": ["DATABASE_URL=postgresql://app@db/shop vector-migration plan -f migration.yaml",
             "vector-migration plan -f migration.yaml -o json"],
    "migrate": ["DATABASE_URL=postgresql://app@db/shop vector-migration migrate -f migration.yaml",
                "vector-migration migrate -f migration.yaml --approve sha256:0123456789abcdef -o json"],
    "rollback": ["vector-migration rollback -f migration.yaml", "vector-migration rollback -f migration.yaml -o yaml"],
    "status": ["vector-migration status -f migration.yaml", "vector-migration status -f migration.yaml -o json"],
    "check": ["vector-migration check -f migration.yaml"],
    "report": ["vector-migration migrate -f migration.yaml --status-out status.json",
               "vector-migration report --status status.json -o report.html"],
    "demo": ["vector-migration demo", "vector-migration demo --surface script --rows 5000",
             "vector-migration demo --target real --ruvector-pg-config ~/.cache/vector-migration/pgserver-0.1.4/"
             "pgserver/pginstall/bin/pg_config"],
    "operator": ["vector-migration operator -A", "vector-migration operator -n shop --standalone"],
    "crd": ["vector-migration crd | kubectl apply -f -"],
    "completion": ["source <(vector-migration completion bash)", "vector-migration completion fish | source"],
}  # fmt: skip


def _command(commands: Any, name: str, summary: str) -> argparse.ArgumentParser:
    """A subcommand with its examples and the exit codes."""
    return subcommand(commands, name, summary, EXAMPLES[name], EXIT_CODES)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``vector-migration`` command."""
    parser = _parser()
    enable_completion(parser)
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_USAGE
    code: int = args.handler(args)
    return code


# size: every subcommand's arguments and help declared in one place, read top to bottom
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vector-migration", description="Migrate PostgreSQL databases from pgvector to RuVector, losing nothing."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command")

    def scratch_option(command: argparse.ArgumentParser) -> None:
        command.add_argument(
            "--scratch-dir",
            type=Path,
            default=None,
            help="where strategy Rebuild exports the tables during its transaction (the system temp directory)",
        )

    def reconnect_option(command: argparse.ArgumentParser) -> None:
        command.add_argument(
            "--reconnect-for",
            type=float,
            default=300.0,
            metavar="SECONDS",
            help="after a lost connection (a restart, a failover), reconnect with backoff for this long (300)",
        )

    def database_options(command: argparse.ArgumentParser) -> None:
        command.add_argument("-f", "--file", type=Path, required=True, help="VectorMigration manifest (YAML)")
        command.add_argument(
            "--database-url",
            help=f"postgresql:// URL; prefer the {DATABASE_URL_ENV} environment variable, which ps cannot show",
        )
        command.add_argument(
            "--admin-database-url",
            help=f"a second login (its user and password) for CREATE/DROP EXTENSION and restores only; the session "
            f"acts as the first URL's user for everything else; prefer {ADMIN_DATABASE_URL_ENV}",
        )
        command.add_argument(
            "--target-database-url",
            help="strategy Replicate with replicate.target: a superuser login on the other server (its host, port, "
            f"user and password; the database is replicate.targetDatabase); prefer {TARGET_DATABASE_URL_ENV}",
        )

    plan = _command(commands, "plan", "run the checklist and print the plan; changes nothing")
    database_options(plan)
    plan.add_argument("-o", "--output", choices=["text", "yaml", "json"], default="text")
    plan.set_defaults(handler=_plan)

    migrate = _command(commands, "migrate", "run every phase until the migration ends or waits for a person")
    database_options(migrate)
    migrate.add_argument("--status-out", type=Path, help="write the final status as JSON")
    migrate.add_argument(
        "-o", "--output", choices=["text", "json", "yaml"], default="text", help="the final status's form on stdout"
    )
    migrate.add_argument("--backup-dir", type=Path, default=Path("backups"), help="where pg_dump writes (./backups)")
    scratch_option(migrate)
    reconnect_option(migrate)
    migrate.add_argument("--pg-bin-dir", type=Path, action="append", default=[], help="where pg_dump/pg_restore are")
    migrate.add_argument("--approve", metavar="PLAN_HASH", help="approve this plan hash (spec.approval: Manual)")
    migrate.add_argument(
        "--promote", action="store_true", help="end the current indefinite cutover pause (strategy Parallel)"
    )
    migrate.add_argument(
        "--restore",
        metavar="TOKEN",
        help="consent to restoring the backup with this token when a swap cannot be reversed in SQL "
        "(loses every write made since the backup; the token is in the message that asks for it)",
    )
    migrate.set_defaults(handler=_migrate)

    rollback = _command(
        commands, "rollback", "undo a migration's committed swap (in SQL; from the backup only with --restore)"
    )
    database_options(rollback)
    rollback.add_argument("--status-out", type=Path, help="write the final status as JSON")
    rollback.add_argument(
        "-o", "--output", choices=["text", "json", "yaml"], default="text", help="the final status's form on stdout"
    )
    rollback.add_argument("--pg-bin-dir", type=Path, action="append", default=[], help="where pg_restore is")
    reconnect_option(rollback)
    rollback.add_argument(
        "--restore",
        metavar="TOKEN",
        help="consent to restoring the backup with this token when the swap cannot be reversed in SQL",
    )
    rollback.set_defaults(handler=_rollback)

    check = _command(
        commands,
        "check",
        "check that a succeeded migration still holds (pgvector not back, no column of its types, "
        "no INVALID index); changes nothing. Exit 0 in sync, 1 drifted or not migrated, 2 bad input",
    )
    database_options(check)
    check.set_defaults(handler=_check)

    report = _command(
        commands,
        "report",
        "write the migration report (HTML) from a status that migrate --status-out wrote; "
        "exit 0, or 2 when the status cannot be read",
    )
    report.add_argument("--status", type=Path, required=True, help="the status JSON (migrate --status-out)")
    report.add_argument("-o", "--output", type=Path, help="where to write the HTML (standard output)")
    report.add_argument("--title", default="VectorMigration report", help="the page's title")
    report.set_defaults(handler=_report)

    demo = _command(commands, "demo", "migrate a seeded embedded PostgreSQL to a RuVector stand-in (or the real one)")
    demo.add_argument(
        "--target",
        choices=["standin", "real"],
        default="standin",
        help="standin (default, no Rust needed) or real: the RuVector make ruvector built (PostgreSQL 16)",
    )
    demo.add_argument(
        "--ruvector-pg-config",
        type=Path,
        help="make ruvector's last line, for --target real (default: $VMIG_RUVECTOR_PG_CONFIG)",
    )
    demo.add_argument(
        "--surface",
        choices=["published", "script", "v2"],
        default="published",
        help="which RuVector SQL spelling the stand-in reproduces (default: the documented ruhnsw names)",
    )
    demo.add_argument("--rows", type=int, default=20_000, help="rows to seed across the demo tables (20000)")
    demo.add_argument("--workdir", type=Path, default=Path(".demo"), help="where the demo keeps its files")
    demo.set_defaults(handler=_demo)

    operator = _command(commands, "operator", "run the Kubernetes operator (kopf)")
    scope = operator.add_mutually_exclusive_group(required=True)
    scope.add_argument("-n", "--namespace", action="append", default=[], help="watch this namespace (repeatable)")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace")
    peering = operator.add_mutually_exclusive_group()
    peering.add_argument(
        "--peering",
        metavar="NAME",
        help="kopf peering object through which replicas keep one active (default in a pod: "
        f"{DEFAULT_PEERING}; outside a cluster: none, as --standalone)",
    )
    peering.add_argument("--standalone", action="store_true", help="no peering: only for exactly one process")
    operator.add_argument(
        "--priority",
        type=int,
        default=None,
        help="peering priority (default: derived from the pod name, so replicas differ; equal ones freeze)",
    )
    operator.add_argument("--liveness", default="http://0.0.0.0:8080/healthz", help="kopf's liveness endpoint")
    operator.add_argument("--metrics-port", type=int, default=9090, help="serve Prometheus /metrics here (0: off)")
    operator.add_argument(
        "--log-format",
        choices=["plain", "json"],
        default="plain",
        help="plain: timestamp, logger, level, message; json: one object a line for log collectors",
    )
    operator.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], default="info", help="(default: info)"
    )
    scratch_option(operator)
    operator.set_defaults(handler=run_operator)

    crd = _command(commands, "crd", "print the CustomResourceDefinition generated from the models")
    crd.set_defaults(handler=_crd)

    status = _command(commands, "status", "print the status the migration's journal records; changes nothing")
    database_options(status)
    status.add_argument("-o", "--output", choices=["text", "json", "yaml"], default="text")
    status.set_defaults(handler=_status)

    completion = _command(commands, "completion", "print a shell completion script (bash, zsh or fish)")
    completion.add_argument("shell", choices=["bash", "zsh", "fish"])
    completion.set_defaults(handler=_completion)
    return parser


def _plan(args: argparse.Namespace) -> int:
    console = Console(stderr=True, soft_wrap=True)
    loaded = load(args, console)
    if loaded is None:
        return EXIT_USAGE
    resource, params, admin = loaded.resource, loaded.params, loaded.admin
    resource.spec.dry_run = True
    resource.spec.backup.enabled = False
    inputs = RunInputs(
        resource.metadata.name, resource.spec, params, admin_params=admin, target_server=loaded.target_server
    )
    migration = Migration(inputs)
    # A plan reports a locked table at once (after lockTimeout) rather than retrying like a migration.
    reasons = frozenset({Reason.MIGRATION_LOCKED, Reason.DATABASE_UNAVAILABLE, Reason.LOCK_TIMEOUT})
    status = asyncio.run(run(migration, give_up_on=reasons))
    if status.phase is Phase.FAILED:
        console.print(f"[red]checklist failed:[/] {escape(status.message)}")
        return EXIT_FAILED
    plan = migration.facts.plan
    document: dict[str, Any] = plan.as_document() if plan else {}
    document["inventory"] = status.inventory.model_dump(by_alias=True, mode="json") if status.inventory else None
    out = Console()
    if args.output == "json":
        out.print_json(json.dumps(document))
    elif args.output == "yaml":
        print(yaml.safe_dump(document, sort_keys=False, allow_unicode=True))
    else:
        print_plan(out, document, status)
    return EXIT_OK


def _check(args: argparse.Namespace) -> int:
    console = Console(stderr=True, soft_wrap=True)
    loaded = load(args, console)
    if loaded is None:
        return EXIT_USAGE
    resource, params = loaded.resource, loaded.params  # a check reads; it needs no admin
    inputs = RunInputs(resource.metadata.name, resource.spec, params, target_server=loaded.target_server)
    migration = Migration(inputs)
    try:
        found = asyncio.run(check_once(migration))
    except DatabaseUnavailable as error:
        console.print(f"[red]error:[/] {escape(str(error))}")
        return EXIT_FAILED
    if found.migrated and not found.differences:
        Console().print(f"[green]✔[/] {escape(found.message)}")
        return EXIT_OK
    reason = Reason.DRIFTED.value if found.migrated else "NotMigrated"
    console.print(f"[red]{reason}:[/] {escape(found.message)}")
    return EXIT_FAILED


STATUS_LIMIT = 8 << 20  # a status is tens of kilobytes; the API server keeps objects under 1.5 MiB


def _report(args: argparse.Namespace) -> int:
    console = Console(stderr=True, soft_wrap=True)
    try:
        if args.status.stat().st_size > STATUS_LIMIT:
            raise ValueError(f"larger than {STATUS_LIMIT >> 20} MiB")
        status = VectorMigrationStatus.model_validate_json(args.status.read_bytes())
    except ValidationError as error:
        console.print(f"[red]error:[/] --status {escape(str(args.status))}: {escape(describe_validation_error(error))}")
        return EXIT_USAGE
    except (OSError, ValueError) as error:
        reason = getattr(error, "strerror", None) or str(error).splitlines()[0]
        console.print(f"[red]error:[/] --status {escape(str(args.status))}: {escape(reason)}")
        return EXIT_USAGE
    from ..report import render_report  # its charts' library costs 8 MB: not loaded by the operator's process

    page = render_report(status, args.title)
    if args.output is None:
        sys.stdout.write(page)
        return EXIT_OK
    try:
        args.output.write_text(page, encoding="utf-8")
    except OSError as error:
        console.print(f"[red]error:[/] -o {escape(str(args.output))}: {escape(error.strerror or str(error))}")
        return EXIT_USAGE
    console.print(f"report written to {escape(str(args.output))}")
    return EXIT_OK


def _migrate(args: argparse.Namespace) -> int:
    decisions = Decisions(approved_hash=args.approve, restore_consent=args.restore, promote=args.promote)
    return _drive(args, args.backup_dir, decisions, scratch=args.scratch_dir)


def _rollback(args: argparse.Namespace) -> int:
    decisions = Decisions(restore_consent=args.restore, rollback=True)
    return _drive(args, Path("backups"), decisions, status=VectorMigrationStatus(phase=Phase.ROLLING_BACK))


def _drive(
    args: argparse.Namespace,
    backup_dir: Path,
    decisions: Decisions,
    *,
    scratch: Path | None = None,
    status: VectorMigrationStatus | None = None,
) -> int:
    """Run the engine on the manifest's migration until it ends or waits for a person."""
    console = Console(stderr=True, soft_wrap=True)
    loaded = load(args, console)
    if loaded is None:
        return EXIT_USAGE
    resource, params, admin = loaded.resource, loaded.params, loaded.admin
    with RichReporter(console) as reporter:
        inputs = RunInputs(
            resource.metadata.name,
            resource.spec,
            params,
            backup=LocalBackup(backup_dir, tuple(args.pg_bin_dir)),
            scratch=scratch or Path(tempfile.gettempdir()),
            reporter=reporter,
            generation=resource.metadata.generation,
            admin_params=admin,
            target_server=loaded.target_server,
        )
        migration = Migration(inputs, decisions, status or VectorMigrationStatus())
        give_up_on = frozenset({Reason.MIGRATION_LOCKED, Reason.DATABASE_UNAVAILABLE})
        status = asyncio.run(run(migration, give_up_on=give_up_on, reconnect_for=args.reconnect_for))
    code = finish(console, status, args.status_out, summary_on_stderr=args.output != "text")
    print_status_as(status, args.output)
    return code


def print_status_as(status: VectorMigrationStatus, form: str) -> None:
    """The status on stdout as JSON or YAML (text: the summary, already on stderr)."""
    if form == "text":
        return
    document = status.model_dump(by_alias=True, mode="json", exclude_none=True)
    if form == "json":
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
    else:
        sys.stdout.write(yaml.safe_dump(document, sort_keys=False, allow_unicode=True))


def _status(args: argparse.Namespace) -> int:
    console = Console(stderr=True, soft_wrap=True)
    loaded = load(args, console)
    if loaded is None:
        return EXIT_USAGE
    resource, params = loaded.resource, loaded.params
    try:
        status = asyncio.run(recorded_status(resource.metadata.name, params))
    except DatabaseUnavailable as error:
        console.print(f"[red]error:[/] {escape(str(error))}")
        return EXIT_FAILED
    if status is None:
        console.print(f"[yellow]{escape(resource.metadata.name)}: nothing recorded in this database[/]")
        return EXIT_FAILED
    if args.output == "text":
        Console().print(
            f"[bold]{escape(resource.metadata.name)}[/]: {escape(status.phase.value)}  {escape(status.message)}"
        )
        print_summary(Console(soft_wrap=False, width=max(Console().width, 120)), status)
    else:
        print_status_as(status, args.output)
    return EXIT_OK


async def recorded_status(name: str, params: ConnectionParams) -> VectorMigrationStatus | None:
    """What the database's journal records of the migration (None: nothing)."""
    from ..database.sql import connect
    from ..engine import records

    conn = await connect(params)
    try:
        return records.latest_status(await records.read(conn, name))
    finally:
        await conn.close()


def _completion(args: argparse.Namespace) -> int:
    sys.stdout.write(completion_script("vector-migration", args.shell))
    return EXIT_OK


def _demo(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    return run_demo(
        surface=args.surface,
        rows=args.rows,
        workdir=args.workdir,
        target=args.target,
        pg_config=args.ruvector_pg_config,
    )


def _crd(args: argparse.Namespace) -> int:
    from ..kube.crd import render_crd

    sys.stdout.write(render_crd())
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
