"""The database layer: SQL quoting and sessions, the catalog, the target's surface, measurement, the journal.

Nothing here knows about phases, strategies, Kubernetes or the command line.
"""
