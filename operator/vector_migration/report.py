"""The migration report: one self-contained HTML page of the numbers that prove the result.

A pure builder from a status (what ``--status-out`` writes and the resource's ``.status`` holds):
the outcome, every condition, the checksums under the swap's lock, each index's recall and
latency with their intervals and verdicts, the timings and the warnings. No script, no external
resource: it opens from a file, a ticket or a mail. Every text a user or a database controls (a
table's name, a message) is escaped, never interpreted as markup.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from html import escape

from .api import ColumnInventory, IndexVerification, Inventory, LatencyMs, VectorMigrationStatus
from .report_charts import latency_chart, recall_chart, timeline_chart

_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 72rem; color: #1b1f24; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.15rem; margin-top: 2rem; }
table { border-collapse: collapse; width: 100%; margin: .5rem 0; }
th, td { border: 1px solid #d0d7de; padding: .3rem .5rem; text-align: left; vertical-align: top; }
th { background: #f6f8fa; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.Pass, .True { color: #1a7f37; } .Fail, .False { color: #cf222e; } .Inconclusive, .Unknown { color: #9a6700; }
.outcome { font-size: 1.1rem; padding: .6rem .8rem; border-radius: 6px; background: #f6f8fa; }
figure { margin: 1rem 0; } figure svg { max-width: 100%; height: auto; }
"""
_ROW_VERDICTS = frozenset({"Pass", "Fail", "Inconclusive", "True", "False", "Unknown"})


def render_report(
    status: VectorMigrationStatus, title: str, rows_shown: int | None = None, whole_report: str = ""
) -> str:
    """The report of one migration's status, as an HTML document.

    ``rows_shown`` caps every table and list (a database of thousands of tables, a page too large
    for a ConfigMap); what is left out is counted, beside ``whole_report``, the command that writes
    it all.
    """
    section = functools.partial(_section, rows_shown=rows_shown, whole_report=whole_report)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f'<p class="outcome"><strong>{escape(status.phase.value)}</strong>: {escape(status.message)}</p>',
    ]
    if status.plan_hash:
        parts.append(f"<p>Plan hash <code>{escape(status.plan_hash)}</code></p>")
    parts += _figure("timeline", timeline_chart(status))
    parts += section(
        "Conditions",
        ("type", "status", "reason", "message", "since"),
        [(c.type, c.status, c.reason, c.message, c.last_transition_time) for c in status.conditions],
    )
    parts += _verification(status, section, rows_shown)
    if status.inventory is not None:
        parts += _carried(status.inventory, section)
    parts += section(
        "Timings (seconds)", ("what", "seconds"), [(name, seconds) for name, seconds in sorted(status.timings.items())]
    )
    parts += section("Warnings", ("warning",), [(warning,) for warning in status.warnings])
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _verification(
    status: VectorMigrationStatus, section: Callable[..., list[str]], rows_shown: int | None
) -> list[str]:
    """Each table's rows and checksums, each index's recall and latency, and their charts."""
    verification = status.verification
    if verification is None:
        return []
    parts = section(
        "Data (the swap's checksums before and after the conversion, proven under its lock)",
        ("table", "rows before", "rows after", "checksum before", "checksum after", "equal"),
        [
            (
                t.name,
                t.rows_before,
                t.rows_after,
                t.checksum_before,
                t.checksum_after,
                "Pass" if (t.rows_before, t.checksum_before) == (t.rows_after, t.checksum_after) else "Fail",
            )
            for t in verification.tables
        ],
    )
    catalog = verification.catalog
    if catalog is not None:
        parts += section(
            "Catalog (every object the application depends on, compared before and after the change)",
            ("objects equal", "changed as the plan says", "anything else"),
            [(catalog.equal, catalog.changed_as_planned, len(catalog.differences))],
        )
        parts += section("Catalog differences the plan does not make", ("object: what differs",),
                         [(difference,) for difference in catalog.differences])  # fmt: skip
    parts += section(
        f"Indexes (recall@{verification.k} against exact search; latency beside a control query)",
        (
            "index", "queries", "recall before", "recall after", "95% interval", "recall verdict",
            "held-out queries", "p95 before (ms)", "p95 after (ms)", "ratio before", "ratio after",
            "ratio 95% interval", "latency verdict", "rounds",
        ),
        [_index_row(i) for i in verification.indexes],
    )  # fmt: skip
    parts += _figure("recall", recall_chart(status, rows_shown))
    parts += _figure("latency", latency_chart(status, rows_shown))
    return parts


def _carried(inventory: Inventory, section: Callable[..., list[str]]) -> list[str]:
    """What the migration found, and what it carried, rebuilt or dropped."""
    parts = section(
        "Tables",
        ("table", "rows", "vector columns"),
        [(t.name, t.rows, ", ".join(_column(c) for c in t.columns)) for t in inventory.tables],
    )
    parts += section(
        "Indexes (as they were, and as rebuilt)",
        ("index", "table", "definition before", "definition after", "handling"),
        [(i.name, i.table, i.definition, i.target_definition, i.handling) for i in inventory.indexes],
    )
    parts += section(
        "Dependent objects (carried or dropped)",
        ("kind", "name", "handling"),
        [(d.kind, d.name, d.handling) for d in inventory.dependents],
    )
    parts += section(
        "Settings",
        ("scope", "setting", "value", "carried as"),
        [(st.scope, st.name, st.value, st.target_name) for st in inventory.settings],
    )
    return parts


def _column(column: ColumnInventory) -> str:
    return f"{column.name} {column.type} -> {column.target_type or column.type}"


def pointer_page(name: str, command: str) -> str:
    """The page that stands for a report too large to keep: the command that writes it from the status."""
    return (
        f'<!DOCTYPE html><html lang="en"><meta charset="utf-8"><title>{escape(name)}</title>'
        f"<p>This migration's report is larger than a ConfigMap holds: <code>{escape(command)}</code> "
        "writes it from the status.</p></html>\n"
    )


def _figure(name: str, svg: str | None) -> list[str]:
    """A chart (already inert: report_charts strips scripts and escapes text), or nothing."""
    return [f'<figure class="chart" id="chart-{name}">{svg}</figure>'] if svg else []


def _index_row(index: IndexVerification) -> tuple[object, ...]:
    return (
        index.name,
        index.queries,
        index.recall_before,
        index.recall_after,
        _interval(index.recall_after_interval),
        index.recall_verdict,
        index.held_out_queries,
        _p95(index.latency_before),
        _p95(index.latency_after),
        index.relative_latency_before,
        index.relative_latency_after,
        _interval(index.relative_latency_interval),
        index.latency_verdict,
        index.latency_rounds,
    )


def _p95(latency: LatencyMs | None) -> float | None:
    return latency.p95 if latency is not None else None


def _interval(interval: Sequence[float | None] | None) -> str | None:
    if not interval:
        return None
    low, high = interval[0], interval[1] if len(interval) > 1 else None
    return f"{low:.3f} to {'unbounded' if high is None else f'{high:.3f}'}"


def _section(
    heading: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[object]],
    rows_shown: int | None = None,
    whole_report: str = "",
) -> list[str]:
    rows = list(rows)
    if not rows:
        return []
    lines = [f"<h2>{escape(heading)}</h2><table><thead><tr>"]
    lines += [f"<th>{escape(column)}</th>" for column in columns]
    lines.append("</tr></thead><tbody>")
    for row in rows[:rows_shown]:
        lines.append("<tr>" + "".join(_cell(value) for value in row) + "</tr>")
    lines.append("</tbody></table>")
    if rows_shown is not None and len(rows) > rows_shown:
        where = f": <code>{escape(whole_report)}</code> writes them all" if whole_report else ""
        lines.append(f'<p class="more">{len(rows) - rows_shown:,} more rows not shown here{where}.</p>')
    return lines


def _cell(value: object) -> str:
    if value is None:
        return "<td></td>"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f'<td class="num">{escape(str(value))}</td>'
    text = str(value)
    css = f' class="{text}"' if text in _ROW_VERDICTS else ""
    return f"<td{css}>{escape(text)}</td>"
