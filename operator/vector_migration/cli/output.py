"""What the command line shows: progress while it runs, the plan, and the numbers that prove the result.

User text (table names, messages, SQL) is printed as text, never read as markup.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from ..api import VectorMigrationStatus
from ..engine.plan import stages
from ..vocabulary import ConditionType, Phase

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_HELD = 0, 1, 2, 3


class RichReporter:
    """Progress bars for long steps, one line per phase, warnings in yellow."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.bars = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            TextColumn("{task.fields[note]}", markup=False),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self) -> RichReporter:
        self.bars.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.bars.stop()

    def phase_started(self, phase: Phase) -> None:
        """Print the phase as it begins."""
        self.console.print(f"[bold cyan]▶ {phase.value}[/]")

    def progress(self, task: str, done: int | None = None, total: int | None = None, note: str = "") -> None:
        """Advance (or start) a progress bar."""
        if task not in self.tasks:
            self.tasks[task] = self.bars.add_task(task, total=total, note=note)
        self.bars.update(self.tasks[task], completed=done or 0, total=total, note=note)

    def task_done(self, task: str) -> None:
        """Remove a finished bar."""
        task_id = self.tasks.pop(task, None)
        if task_id is not None:
            self.bars.remove_task(task_id)

    def warning(self, message: str) -> None:
        """Print a warning."""
        self.console.print(f"[yellow]! {escape(message)}[/]")


def print_plan(console: Console, document: dict[str, Any], status: VectorMigrationStatus) -> None:
    """The plan's hash, its warnings, and every statement of every stage, in order."""
    console.print(
        f"[bold]Plan {escape(str(document.get('planHash')))}[/] "
        f"({escape(str(document.get('strategy') or 'route: ' + str(document.get('route'))))})"
    )
    for warning in status.warnings:
        console.print(f"[yellow]! {escape(str(warning))}[/]")
    for title, statements in stages(document):
        console.print(f"[bold]{escape(title)}:[/]")
        for number, statement in enumerate(statements, start=1):
            run_as = f" [dim](as {escape(statement['runAs'])})[/]" if statement.get("runAs") else ""
            console.print(
                f"  {number:>3}. [dim]{escape(statement['step'])}[/]{run_as}  {escape(statement['sql'].strip())}",
                soft_wrap=True,
            )


def finish(
    console: Console, status: VectorMigrationStatus, status_out: Path | None, *, summary_on_stderr: bool = False
) -> int:
    """Print the summary (on stderr when stdout carries data), write --status-out, choose the exit code."""
    if status_out is not None:
        status_out.write_text(status.model_dump_json(by_alias=True, indent=2, exclude_none=True) + "\n")
    print_summary(Console(soft_wrap=False, width=max(Console().width, 120), stderr=summary_on_stderr), status)
    ready = next((c for c in status.conditions if c.type == ConditionType.READY.value), None)
    if status.phase is Phase.SUCCEEDED or (status.phase is Phase.ROLLED_BACK and ready and ready.status == "True"):
        console.print(f"[green]✔ {escape(status.message)}[/]")
        return EXIT_OK
    if status.phase in (Phase.FAILED, Phase.ROLLED_BACK):
        console.print(f"[red]✘ {escape(status.message)}[/]")
        return EXIT_FAILED
    console.print(f"[yellow]⏸ {escape(status.message)}[/]")
    return EXIT_OK if "dry run" in status.message else EXIT_HELD


def print_summary(console: Console, status: VectorMigrationStatus) -> None:
    """Tables of the numbers that prove the result."""
    verification = status.verification
    if verification and verification.tables:
        table = Table(title="Data (checksums taken with writes blocked)")
        for column in ("table", "rows before", "rows after", "checksum before", "checksum after", "equal"):
            table.add_column(column, overflow="fold")
        for row in verification.tables:
            equal = (row.rows_before, row.checksum_before) == (row.rows_after, row.checksum_after)
            table.add_row(
                Text(row.name),
                str(row.rows_before),
                str(row.rows_after),
                row.checksum_before,
                row.checksum_after or "",
                "[green]yes[/]" if equal else "[red]NO[/]",
            )
        console.print(table)
    if verification and verification.indexes:
        table = Table(title=f"Indexes (recall@{verification.k} against exact search, latency in ms)")
        for column in ("index", "queries", "recall before", "recall after", "p95 before", "p95 after"):
            table.add_column(column, overflow="fold")
        for index in verification.indexes:
            table.add_row(
                Text(index.name),
                str(index.queries),
                _number(index.recall_before),
                _number(index.recall_after),
                _number(index.latency_before.p95 if index.latency_before else None),
                _number(index.latency_after.p95 if index.latency_after else None),
            )
        console.print(table)
    if status.timings:
        console.print("Timings: " + ", ".join(f"{name} {seconds:.2f}s" for name, seconds in status.timings.items()))


def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"
