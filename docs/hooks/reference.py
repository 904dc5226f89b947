"""mkdocs hook: the reference pages, generated from the code at build time, and the CHANGELOG.

- reference/spec.md and reference/status.md: every field of the CRD, which `vector-migration crd`
  generates from the pydantic models (their docstrings are the descriptions);
- reference/command-line.md: every command's --help, from the argparse parsers themselves (flags,
  examples, exit codes);
- reference/metrics.md: every series the operator's registry exports, with its type and labels;
- changelog.md: CHANGELOG.md as it is.

Nothing here is written by hand, so the pages cannot drift from the code.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]


def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Add the generated pages to the site's files (mkdocs' hook)."""
    for path, text in generated_pages().items():
        files.append(File.generated(config, path, content=text))
    return files


def generated_pages() -> dict[str, str]:
    """Each generated page's path in the site and its Markdown."""
    from vector_migration.kube.crd import crd_document

    version = crd_document()["spec"]["versions"][0]
    properties = version["schema"]["openAPIV3Schema"]["properties"]
    return {
        "reference/spec.md": fields_page("The spec", "spec", properties["spec"]),
        "reference/status.md": fields_page("The status", "status", properties["status"]),
        "reference/command-line.md": commands_page(),
        "reference/metrics.md": metrics_page(),
        "changelog.md": (ROOT / "CHANGELOG.md").read_text(),
    }


def fields_page(title: str, root: str, schema: dict[str, Any]) -> str:
    """A table of every field below the CRD's ``root`` (spec or status)."""
    rows = ["| field | type | default | description |", "| --- | --- | --- | --- |"]
    rows += [field_row(path, node, required) for path, node, required in walk(root, schema, set())]
    intro = (
        f"# {title}\n\nEvery field of `VectorMigration.{root}` (API `ruvector.dev/v1alpha1`), generated from the "
        "models that also generate the CRD, so `kubectl explain vectormigration." + root + "` says the same.\n\n"
    )
    return intro + "\n".join(rows) + "\n"


def walk(path: str, node: dict[str, Any], required: set[str]) -> list[tuple[str, dict[str, Any], bool]]:
    """Each field below ``node`` in document order, depth first, with whether its parent requires it."""
    found: list[tuple[str, dict[str, Any], bool]] = []
    children = node.get("properties", {})
    needed = set(node.get("required", []))
    for name, child in children.items():
        here = f"{path}.{name}"
        found.append((here, child, name in needed))
        found += walk(here, child, needed)
        items = child.get("items")
        if isinstance(items, dict) and items.get("properties"):
            found += walk(here + "[]", items, set())
    return found


def field_row(path: str, node: dict[str, Any], required: bool) -> str:
    """One field's row: its path, type (with enum or pattern), default and description."""
    kind = node.get("type", "object" if "properties" in node else "any")
    if kind == "array" and isinstance(node.get("items"), dict):
        kind = f"array of {node['items'].get('type', 'object')}"
    if "enum" in node:
        kind += ": " + ", ".join(f"`{value}`" for value in node["enum"])
    if "pattern" in node and "enum" not in node:
        kind += " (pattern)"
    default = f"`{node['default']}`" if "default" in node and node["default"] not in ({}, []) else ""
    description = " ".join(str(node.get("description", "")).split()).replace("|", "\\|")
    description = description.replace("<", "&lt;").replace(">", "&gt;")  # <cluster>-app is text, not a tag
    if required:
        description = "**Required.** " + description
    return f"| `{path}` | {kind} | {default} | {description} |"


def commands_page() -> str:
    """Every command's and subcommand's --help, from the two programs' parsers."""
    from vector_migration.cli.commands import _parser
    from vector_migration.cli.kubectl import build_parser

    os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal; a page has none
    parts = ["# Commands\n\nEvery command's `--help`, as the installed program prints it.\n"]
    for program, parser in (("vector-migration", _parser()), ("kubectl vmig", build_parser())):
        parts.append(f"## {program}\n\n```text\n{parser.format_help().rstrip()}\n```\n")
        for name, sub in subcommands(parser).items():
            parts.append(f"### {program} {name}\n\n```text\n{sub.format_help().rstrip()}\n```\n")
    return "\n".join(parts)


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """A parser's subcommands by name (argparse keeps them in a private action)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def metrics_page() -> str:
    """Every family the operator's registry exports, with its type, labels and help."""
    from vector_migration.kube.metrics import OperatorMetrics

    rows = ["| series | type | labels | what it says |", "| --- | --- | --- | --- |"]
    for family in OperatorMetrics().families():
        names = ", ".join(f"`{name}`" for name in family.series_names)
        labels = ", ".join(f"`{label}`" for label in family.labels)
        rows.append(f"| {names} | {family.kind} | {labels} | {family.documentation} |")
    intro = (
        "# Metrics\n\nWhat the operator serves on `:9090/metrics` (the chart's `metrics.port`), read from its "
        "registry. Each migration's own series carry `namespace` and `name`, and go when the resource does.\n\n"
    )
    return intro + "\n".join(rows) + "\n"
