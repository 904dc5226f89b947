"""`python -m vector_migration.cli`: the same entry point as the console script."""

import sys

from .commands import main

sys.exit(main())
