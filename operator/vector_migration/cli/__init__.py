"""The command line: `vector-migration plan | migrate | rollback | demo | operator | crd`."""

from .commands import main
from .output import EXIT_FAILED, EXIT_HELD, EXIT_OK, EXIT_USAGE

__all__ = ["EXIT_FAILED", "EXIT_HELD", "EXIT_OK", "EXIT_USAGE", "main"]
