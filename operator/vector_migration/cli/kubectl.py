"""``kubectl vmig``: steer a VectorMigration from kubectl, as ``kubectl cnpg`` and ``kubectl argo rollouts`` do.

A console script named ``kubectl-vmig``: ``pip install`` puts it on PATH, and kubectl runs it for
``kubectl vmig …``. It logs in as kubectl does (the current kubeconfig context, ``--kubeconfig``,
``--context``; in a pod its service account) and changes nothing but the annotations the operator
reads, each written only on the version of the resource it showed the person (a merge patch that
carries ``resourceVersion``: the API server refuses it when anything changed in between).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from ..api import VectorMigrationStatus
from ..kube.builders import object_name
from ..kube.client import KubeClient, KubeError, LoginError, person_login
from ..phases.restore import restore_token
from ..status import WAITING_ON_A_PERSON as WAITING
from ..vocabulary import (
    ANNOTATION_APPROVE,
    ANNOTATION_PAUSED,
    ANNOTATION_PROMOTE,
    ANNOTATION_RESTORE,
    ANNOTATION_ROLLBACK,
    ConditionType,
    Phase,
)
from .help import completion_script, enable_completion, subcommand
from .output import EXIT_FAILED, EXIT_HELD, print_plan, print_summary

EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2
EXIT_CODES = """exit codes:
  0  done (or, for status, the migration was read)
  1  refused: a confirmation was declined, the plan changed since it was shown, or the migration is
     not in a state for it
  2  bad input: an unknown migration, no cluster login, an unreadable answer"""

Ask = Callable[[str], str]


class Refused(RuntimeError):
    """The command will not do what was asked; the message says why (exit 1)."""


class Unusable(RuntimeError):
    """Bad input or no way to the cluster; the message names it (exit 2)."""


@dataclass
class Session:
    """One invocation: the client, the namespace, where to print, and how to ask."""

    client: KubeClient
    namespace: str
    console: Console
    ask: Ask
    out: TextIO

    async def migration(self, name: str) -> dict[str, Any]:
        """The resource as the API server has it now."""
        found = await self.client.read_migration(self.namespace, name)
        if found is None:
            raise Unusable(f"vectormigration {name} not found in namespace {self.namespace}")
        return found

    async def annotate(self, name: str, annotations: dict[str, str | None], version: str | None) -> None:
        """Annotate the version of the resource the person saw; Refused when it changed since."""
        try:
            await self.client.annotate_migration(self.namespace, name, annotations, version)
        except KubeError as error:
            if error.status == 409:
                raise Refused(f"vectormigration {name} changed since it was shown; run the command again") from None
            raise

    def confirm(self, question: str, expected: str, yes: bool) -> None:
        """Ask, unless --yes; Refused unless the answer is ``expected``."""
        if yes:
            return
        answer = self.ask(question).strip()
        if answer != expected:
            raise Refused("not confirmed; nothing was changed")


def status_of(resource: dict[str, Any]) -> VectorMigrationStatus:
    """The resource's status as the engine's model (empty before the operator wrote one)."""
    try:
        return VectorMigrationStatus.model_validate(resource.get("status") or {})
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise Unusable(
            f"the status cannot be read (status.{where}: {first['msg']}); is the plugin older than the operator?"
        ) from None


def condition_of(status: VectorMigrationStatus, kind: ConditionType) -> Any:
    """One condition of the status, or None."""
    return next((c for c in status.conditions if c.type == kind.value), None)


# ----------------------------------------------------------------------------------------- verbs


async def show_status(s: Session, args: argparse.Namespace) -> int:
    """Phase, conditions, plan hash, progress, timings and the verification table; -w follows it."""
    seen: tuple[str, str] | None = None
    while True:
        resource = await s.migration(args.name)
        status = status_of(resource)
        if args.output != "text":
            dump(s.out, resource, args.output)
        elif (status.phase.value, status.message) != seen:
            seen = (status.phase.value, status.message)
            print_status(s.console, args.name, status)
        if not args.watch:
            return EXIT_OK
        if _stalled(status):
            return EXIT_FAILED
        if status.phase.terminal:
            return EXIT_OK
        if _held(status):
            return EXIT_HELD
        await asyncio.sleep(args.interval)


def _stalled(status: VectorMigrationStatus) -> bool:
    """Failed, or rolled back by itself: nothing moves without a change."""
    stalled = condition_of(status, ConditionType.STALLED)
    return bool(stalled is not None and stalled.status == "True")


def _held(status: VectorMigrationStatus) -> bool:
    """Waiting for a person: approval, a pause, promotion, consent to restore."""
    reconciling = condition_of(status, ConditionType.RECONCILING)
    return bool(reconciling is not None and reconciling.status == "True" and reconciling.reason in WAITING)


def print_status(console: Console, name: str, status: VectorMigrationStatus) -> None:
    """A person's view of the status."""
    console.print(f"[bold]{escape(name)}[/]: {escape(status.phase.value)}  {escape(status.message)}", soft_wrap=True)
    if status.plan_hash:
        console.print(f"plan {escape(status.plan_hash)}")
    table = Table(title="Conditions")
    for column in ("type", "status", "reason", "message"):
        table.add_column(column, overflow="fold")
    for c in status.conditions:
        table.add_row(Text(c.type), Text(c.status), Text(c.reason), Text(c.message))
    console.print(table)
    for line in progress_lines(status):
        console.print(Text(line))
    print_summary(console, status)


def progress_lines(status: VectorMigrationStatus) -> list[str]:
    """Each table's copy or backfill progress, the lag, the cutover's weight."""
    lines = []
    if status.parallel is not None:
        for table in status.parallel.tables:
            share = f" ({100 * table.rows_copied / table.rows_total:.0f}%)" if table.rows_total else ""
            lines.append(f"backfill {table.name}: {table.rows_copied}/{table.rows_total} rows{share}")
    if status.replicate is not None:
        replicate = status.replicate
        for replicated in replicate.tables:
            rows = f", {replicated.rows} rows copied" if replicated.rows is not None else ""
            lines.append(f"replicate {replicated.name}: {replicated.state}{rows}")
        if replicate.lag_bytes is not None:
            lines.append(f"replication lag: {replicate.lag_bytes} bytes")
        if replicate.switchover_seconds is not None:
            lines.append(f"switchover: writes blocked {replicate.switchover_seconds}s")
    if status.cutover is not None:
        lines.append(f"cutover step {status.cutover.step}, weight {status.cutover.weight}%")
    return lines


async def show_plan(s: Session, args: argparse.Namespace) -> int:
    """The published plan (<name>-plan) as text, JSON or YAML."""
    resource = await s.migration(args.name)
    document = await published_plan(s, args.name)
    if args.output != "text":
        dump(s.out, document, args.output)
    else:
        print_plan(s.console, document, status_of(resource))
    return EXIT_OK


async def published_plan(s: Session, name: str) -> dict[str, Any]:
    """The plan document the operator published for approval; Refused when there is none yet."""
    configmap = await s.client.read_configmap(s.namespace, object_name(name, "plan"))
    text = ((configmap or {}).get("data") or {}).get("plan.json")
    if not text:
        raise Refused(f"vectormigration {name} has no published plan yet (ConfigMap {object_name(name, 'plan')})")
    document: dict[str, Any] = json.loads(text)
    return document


async def approve(s: Session, args: argparse.Namespace) -> int:
    """Show the plan's summary and hash, ask, and approve exactly that hash on exactly that version."""
    resource = await s.migration(args.name)
    status = status_of(resource)
    shown = status.plan_hash
    if not shown:
        raise Refused(f"vectormigration {args.name} has no plan yet (phase {status.phase.value})")
    if args.hash and args.hash != shown:
        raise Refused(f"the plan is {shown}, not {args.hash}: it changed since you read it; review it again")
    document = await published_plan(s, args.name)
    if document.get("planHash") != shown:
        raise Refused(f"the published plan ({document.get('planHash')}) is not the status's ({shown}) yet; try again")
    stages = {key: len(value) for key, value in document.items() if isinstance(value, list) and key != "warnings"}
    s.console.print(f"Plan [bold]{escape(shown)}[/] for {escape(args.name)}: " + escape(
        ", ".join(f"{count} {stage}" for stage, count in stages.items() if count)
    ))  # fmt: skip
    for warning in document.get("warnings", []):
        s.console.print(f"[yellow]! {escape(str(warning))}[/]")
    s.confirm(f"Approve plan {shown}? Type yes: ", "yes", args.yes)
    now = status_of(await s.migration(args.name)).plan_hash
    if now != shown:
        raise Refused(f"the plan changed from {shown} to {now} since it was shown; nothing was approved")
    await s.annotate(args.name, {ANNOTATION_APPROVE: shown}, resource["metadata"].get("resourceVersion"))
    s.console.print(f"approved {escape(shown)}")
    return EXIT_OK


async def promote(s: Session, args: argparse.Namespace) -> int:
    """End the current indefinite cutover pause, or accept a latency verdict held for a person."""
    resource = await s.migration(args.name)
    status = status_of(resource)
    if status.phase not in (Phase.CUTOVER, Phase.VERIFY):
        raise Refused(f"nothing awaits promotion: vectormigration {args.name} is {status.phase.value}")
    s.confirm(f"Promote {args.name} ({status.message})? Type yes: ", "yes", args.yes)
    await s.annotate(args.name, {ANNOTATION_PROMOTE: "true"}, resource["metadata"].get("resourceVersion"))
    s.console.print(f"promoted {escape(args.name)}; the operator removes the annotation once it is used")
    return EXIT_OK


async def pause(s: Session, args: argparse.Namespace) -> int:
    """Hold the migration between phases (or let it go on)."""
    resource = await s.migration(args.name)
    value = "true" if args.verb == "pause" else None
    await s.annotate(args.name, {ANNOTATION_PAUSED: value}, resource["metadata"].get("resourceVersion"))
    s.console.print(f"{'paused' if value else 'resumed'} {escape(args.name)}")
    return EXIT_OK


async def rollback(s: Session, args: argparse.Namespace) -> int:
    """Undo the migration; what it undoes is shown first, and the name must be typed back."""
    resource = await s.migration(args.name)
    status = status_of(resource)
    s.console.print(
        f"{escape(args.name)} is {escape(status.phase.value)}: {escape(status.message)}\n"
        "A rollback converts the tables back to pgvector in SQL (Replicate: turns the databases' names back); "
        "writes made since are kept. If it cannot be done in SQL, it stops and asks for `restore`.",
        soft_wrap=True,
    )
    s.confirm(f"Type the migration's name ({args.name}) to roll it back: ", args.name, args.yes)
    await s.annotate(args.name, {ANNOTATION_ROLLBACK: "true"}, resource["metadata"].get("resourceVersion"))
    s.console.print(f"rollback requested for {escape(args.name)}")
    return EXIT_OK


async def restore(s: Session, args: argparse.Namespace) -> int:
    """Consent to restoring the verified backup: every write since it is lost, so the name must be typed."""
    resource = await s.migration(args.name)
    backup = status_of(resource).backup
    if backup is None or not backup.verified:
        raise Refused(f"vectormigration {args.name} has no verified backup to restore")
    token = restore_token(backup)
    s.console.print(
        f"Restoring {escape(backup.location)} (taken before the swap, sha256 {escape(backup.sha256[:16])}) "
        "replaces every object in it with its content at backup time: [bold red]every write made since is "
        "lost[/].",
        soft_wrap=True,
    )
    s.confirm(f"Type the migration's name ({args.name}) to restore its backup: ", args.name, args.yes)
    await s.annotate(args.name, {ANNOTATION_RESTORE: token}, resource["metadata"].get("resourceVersion"))
    s.console.print(f"restore consented with {escape(token)}")
    return EXIT_OK


async def report(s: Session, args: argparse.Namespace) -> int:
    """The migration report (one self-contained HTML page) from the status."""
    resource = await s.migration(args.name)
    from ..report import render_report  # its charts' library costs 8 MB: loaded for a report only

    args.report_file.write_text(render_report(status_of(resource), f"{s.namespace}/{args.name}"))
    s.console.print(f"wrote {escape(str(args.report_file))}")
    return EXIT_OK


def dump(out: TextIO, document: dict[str, Any], form: str) -> None:
    """JSON or YAML, as kubectl -o prints them."""
    if form == "json":
        out.write(json.dumps(document, indent=2, sort_keys=True) + "\n")
    else:
        out.write(yaml.safe_dump(document, sort_keys=True))


VERBS: dict[str, Callable[[Session, argparse.Namespace], Any]] = {
    "status": show_status,
    "plan": show_plan,
    "approve": approve,
    "promote": promote,
    "pause": pause,
    "resume": pause,
    "rollback": rollback,
    "restore": restore,
    "report": report,
}


# ---------------------------------------------------------------------------------------- parser

_HELP = {
    "status": ("phase, conditions, plan hash, progress, timings and verification", [
        "kubectl vmig status shop", "kubectl vmig status shop -w", "kubectl vmig status shop -o yaml"]),
    "plan": ("the published plan (<name>-plan): every statement, stage by stage", [
        "kubectl vmig plan shop", "kubectl vmig plan shop -o json"]),
    "approve": ("approve the current plan hash, after showing it (spec.approval: Manual)", [
        "kubectl vmig approve shop", "kubectl vmig approve shop --hash sha256:0123456789abcdef --yes"]),
    "promote": ("end the current indefinite cutover pause, or accept a latency verdict held for a person", [
        "kubectl vmig promote shop"]),
    "pause": ("hold the migration between phases", ["kubectl vmig pause shop"]),
    "resume": ("let a paused migration go on", ["kubectl vmig resume shop"]),
    "rollback": ("undo the migration (in SQL; Replicate turns the databases' names back)", [
        "kubectl vmig rollback shop", "kubectl vmig rollback shop --yes"]),
    "restore": ("consent to restoring the verified backup: every write since it is lost", [
        "kubectl vmig restore shop"]),
    "report": ("write the migration report, one self-contained HTML page", [
        "kubectl vmig report shop -o report.html"]),
}  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """The arguments: kubectl's own login flags, one subcommand per verb."""
    parser = argparse.ArgumentParser(
        prog="kubectl vmig",
        description="Steer VectorMigrations (pgvector to RuVector) from kubectl.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_login_flags(parser, None)
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="COMMAND")
    for verb, (summary, examples) in _HELP.items():
        sub = subcommand(verbs, verb, summary, examples, EXIT_CODES)
        sub.add_argument("name", help="the VectorMigration's name")
        # after the name too, as kubectl takes them (`kubectl vmig approve shop -n shop`); given only
        # here, they must not reset what was given before the verb
        add_login_flags(sub, argparse.SUPPRESS)
        if verb == "status":
            sub.add_argument("-o", "--output", choices=["text", "json", "yaml"], default="text")
            sub.add_argument(
                "-w",
                "--watch",
                action="store_true",
                help="follow it until it ends (exit 0, or 1 when Failed) or waits for a person (exit 3)",
            )
            sub.add_argument("--interval", type=float, default=2.0, help=argparse.SUPPRESS)
        elif verb == "plan":
            sub.add_argument("-o", "--output", choices=["text", "json", "yaml"], default="text")
        elif verb == "report":
            sub.add_argument("-o", "--output", dest="report_file", type=Path, required=True, help="the HTML file")
        if verb in ("approve", "promote", "rollback", "restore"):
            sub.add_argument("-y", "--yes", action="store_true", help="do not ask (for scripts)")
        if verb == "approve":
            sub.add_argument("--hash", help="the plan hash you reviewed: refused if the plan is another now")
    completion = subcommand(
        verbs,
        "completion",
        "print a shell completion script (bash, zsh or fish)",
        ["source <(kubectl-vmig completion bash)", "kubectl-vmig completion fish | source"],
        EXIT_CODES,
    )
    completion.add_argument("shell", choices=["bash", "zsh", "fish"])
    return parser


def add_login_flags(parser: argparse.ArgumentParser, default: str | None) -> None:
    """The login flags kubectl takes: -n, --context and --kubeconfig."""
    parser.add_argument(
        "-n", "--namespace", default=default, help="the namespace (default: the context's, else default)"
    )
    parser.add_argument("--context", default=default, help="the kubeconfig context (default: the current one)")
    parser.add_argument(
        "--kubeconfig", default=default, help="the kubeconfig file (default: KUBECONFIG, else ~/.kube/config)"
    )


def _client(args: argparse.Namespace) -> tuple[KubeClient, str]:
    """The login kubectl would use, and the namespace: -n, else the context's, else default."""
    try:
        configuration, namespace = person_login(args.kubeconfig, args.context)
    except LoginError as error:
        raise Unusable(str(error)) from None
    return KubeClient(configuration, agent="kubectl-vmig"), args.namespace or namespace or "default"


def main(argv: list[str] | None = None, *, ask: Ask = input, out: TextIO | None = None) -> int:
    """The plugin's entry point; the exit code."""
    parser = build_parser()
    enable_completion(parser)
    args = parser.parse_args(argv)
    stream = out or sys.stdout
    console = Console(file=stream, soft_wrap=False, width=max(Console(file=stream).width, 120))
    if args.verb == "completion":
        stream.write(completion_script("kubectl-vmig", args.shell))
        return EXIT_OK
    try:
        client, namespace = _client(args)
    except Unusable as error:
        sys.stderr.write(f"kubectl vmig: {error}\n")
        return EXIT_USAGE
    return asyncio.run(_run(Session(client, namespace, console, ask, stream), args))


async def _run(s: Session, args: argparse.Namespace) -> int:
    try:
        result: int = await VERBS[args.verb](s, args)
        return result
    except Refused as error:
        s.console.print(Text(f"refused: {error}", style="red"))
        return EXIT_REFUSED
    except Unusable as error:
        sys.stderr.write(f"kubectl vmig: {error}\n")
        return EXIT_USAGE
    except KubeError as error:
        sys.stderr.write(f"kubectl vmig: {error}\n")
        return EXIT_USAGE
    finally:
        await s.client.close()
