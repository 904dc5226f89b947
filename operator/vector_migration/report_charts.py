"""The migration report's charts: SVG drawn by pygal, made inert for a page that runs no script.

pygal writes a ``<script>`` of its configuration into every chart, the axis labels among it: a
table named ``</script>...`` would end that script early in an HTML page. Every script element is
removed and the SVG serialized again by ElementTree, which escapes all text, so a chart carries a
name as text and nothing else. Each builder is pure: a status in, an SVG string (or None) out.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET  # parses pygal's own output, never user input as XML

import pygal
from pygal.style import Style

from .api import VectorMigrationStatus
from .status import timing_key
from .vocabulary import Phase, Timing

# Importing pygal appends a finder to sys.meta_path for its map plugins (pygal.maps.*, unused
# here) that has only the find_module API Python 3.4 deprecated: every later import in the
# process then warns (ImportWarning). It is taken out again.
sys.meta_path[:] = [finder for finder in sys.meta_path if type(finder).__module__ != "pygal"]

SVG = "http://www.w3.org/2000/svg"
_BLUE, _GREEN, _RED = "#0969da", "#1a7f37", "#cf222e"
_PERCENTILES = ("#54aeff", "#0969da", "#0a3069", "#ffb77c", "#e16f24", "#762c00")  # before blues, after oranges
# Seconds in status.timings during which the application's writes waited, by what held them.
WRITE_BLOCKING = {
    Timing.WRITE_BLOCKED: "writes blocked",
    Timing.PROOF_HELD_WRITES: "writes held for the proof",
    Timing.ROLLBACK_WRITE_BLOCKED: "writes blocked by the rollback",
}


def timeline_chart(status: VectorMigrationStatus) -> str | None:
    """Each phase's seconds, first at the top, and the write-blocking windows below them in red."""
    timings = status.timings
    phases = [(phase.value, timings[timing_key(phase)]) for phase in Phase if timing_key(phase) in timings]
    blocked = [(label, timings[key]) for key, label in WRITE_BLOCKING.items() if key in timings]
    if not phases and not blocked:
        return None
    rows = [*phases, *blocked][::-1]  # a horizontal chart draws its first label at the bottom
    chart = _chart(pygal.HorizontalStackedBar, "Phases and write-blocking windows (seconds)", len(rows), (_BLUE, _RED))
    chart.x_labels = [label for label, _ in rows]
    phase_names = {name for name, _ in phases}
    chart.add("phase", [seconds if label in phase_names else None for label, seconds in rows])
    chart.add("writes waited", [None if label in phase_names else seconds for label, seconds in rows])
    return _inert(chart.render(is_unicode=True))


def latency_chart(status: VectorMigrationStatus, limit: int | None = None) -> str | None:
    """Each index's p50, p95 and p99 before and after, in milliseconds (the first ``limit`` indexes)."""
    indexes = [i for i in (status.verification.indexes if status.verification else []) if i.latency_before][:limit]
    if not indexes:
        return None
    chart = _chart(pygal.Bar, "Latency before and after (ms)", len(indexes), _PERCENTILES, values=False)
    chart.x_labels = [i.name for i in indexes]
    for when in ("before", "after"):
        for percentile in ("p50", "p95", "p99"):
            values = [getattr(getattr(i, f"latency_{when}"), percentile, None) for i in indexes]
            chart.add(f"{percentile} {when}", values)
    return _inert(chart.render(is_unicode=True))


def recall_chart(status: VectorMigrationStatus, limit: int | None = None) -> str | None:
    """Each index's recall before and after, the after with its 95% interval (the first ``limit`` indexes)."""
    k = status.verification.k if status.verification else 0
    measured = status.verification.indexes if status.verification else []
    indexes = [i for i in measured if i.recall_after is not None][:limit]
    if not indexes:
        return None
    chart = _chart(pygal.Bar, f"Recall@{k} before and after (95% interval)", len(indexes), (_BLUE, _GREEN))
    chart.range = (0, 1)
    chart.x_labels = [i.name for i in indexes]
    chart.add("before", [i.recall_before for i in indexes])
    after: list[object] = []
    for index in indexes:
        interval = index.recall_after_interval
        if interval and len(interval) > 1 and interval[0] is not None and interval[1] is not None:
            after.append({"value": index.recall_after, "ci": {"low": interval[0], "high": interval[1]}})
        else:
            after.append(index.recall_after)
    chart.add("after", after)
    return _inert(chart.render(is_unicode=True))


def _chart(
    kind: type[pygal.graph.graph.Graph], title: str, rows: int, colors: tuple[str, ...], *, values: bool = True
) -> pygal.graph.graph.Graph:
    style = Style(background="white", plot_background="white", font_family="system-ui, sans-serif", colors=colors,
                  value_font_size=11, title_font_size=16, label_font_size=11, legend_font_size=12)  # fmt: skip
    return kind(
        title=title,
        style=style,
        width=900,
        height=max(260, 90 + 30 * rows),
        js=[],
        disable_xml_declaration=True,
        print_values=values,
        print_zeroes=False,
        value_formatter=lambda value: f"{value:g}",
        legend_at_bottom=True,
        truncate_label=-1,
    )


def _inert(svg: str) -> str:
    """The chart without pygal's script, serialized again with every text escaped."""
    ET.register_namespace("", SVG)
    root = ET.fromstring(svg)  # noqa: S314 - pygal's output: user text in it is escaped, and it has no DTD
    for parent in list(root.iter()):
        for child in list(parent):
            if child.tag in (f"{{{SVG}}}script", "script"):
                parent.remove(child)
    return ET.tostring(root, encoding="unicode")
