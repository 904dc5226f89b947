"""vector-migration: declarative, lossless pgvector → RuVector migrations for PostgreSQL."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("vector-migration-operator")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
