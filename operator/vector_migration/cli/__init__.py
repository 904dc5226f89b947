"""The command line: `vector-migration plan | migrate | rollback | demo | operator | crd`."""

from .commands import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "main"]
