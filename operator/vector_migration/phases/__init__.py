"""The phases, one per file: checklist, probe, backup, approval, swap, reindex, verify, rollback, restore.

Each is an async function of the run returning an outcome. InPlace and Rebuild use them all;
Parallel uses the checklist, backup and approval, and its own for the rest. post_migration holds
what a verified migration applies for RuVector's own features.
"""
