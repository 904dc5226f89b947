"""What the command lines share about explaining themselves: subcommands with examples and exit codes, completion."""

from __future__ import annotations

import argparse
from typing import Any


def subcommand(commands: Any, name: str, summary: str, examples: list[str], exit_codes: str) -> argparse.ArgumentParser:
    """A subcommand whose --help has a description, examples and the exit codes."""
    shown = "\n".join(f"  {example}" for example in examples)
    parser: argparse.ArgumentParser = commands.add_parser(
        name,
        help=summary,
        description=summary[0].upper() + summary[1:] + ".",
        epilog=f"examples:\n{shown}\n\n{exit_codes}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser


def enable_completion(parser: argparse.ArgumentParser) -> None:
    """Answer a shell's completion request from the parser itself (argcomplete), then carry on as usual."""
    try:
        import argcomplete
    except ImportError:  # pragma: no cover - completion is optional at run time
        return
    argcomplete.autocomplete(parser)


def completion_script(program: str, shell: str) -> str:
    """The shell's completion script for ``program`` (bash, zsh or fish), from argcomplete."""
    from argcomplete.shell_integration import shellcode

    script: str = shellcode([program], shell=shell)
    return script
