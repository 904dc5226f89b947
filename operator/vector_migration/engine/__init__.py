"""The engine: outcomes, the migration run, plans as data, journal records, bounded transactions, the runner.

Phases are typed functions of a run that return an outcome (advance, wait, hold, fail); a
strategy (engine.strategy) is a unit holding its phase table, checks and plan; the runner
(engine.runner) looks the strategy up and drives its phases. Nothing here imports kopf or rich.

The entry points are ``engine.runner.run`` (drive to the end: the command line) and
``engine.runner.drive`` (phases back to back until one waits: the operator's reconciliation).
Safety rests on three facts:

1. A converting step is one transaction. Every statement of the plan, the content checksums
   before and after, and the journal record saying it happened commit together or not at all;
   a checksum mismatch raises inside the transaction, so it never commits.
2. The journal, not the status, says what is done: a re-run after a crash reads it and
   continues after the swap instead of swapping twice.
3. One migration per database: the run holds a session advisory lock from start to end.
"""
