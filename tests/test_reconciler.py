"""What the controller does after a reconciliation: the engine's one backoff rule, and the status it writes."""

from __future__ import annotations

from vector_migration.engine.outcomes import Wait
from vector_migration.engine.runner import MAX_RETRY_DELAY, retry_delay
from vector_migration.vocabulary import Reason


def test_a_lock_held_by_the_application_is_retried_with_exponential_backoff_up_to_a_cap() -> None:
    held = Wait(Reason.LOCK_TIMEOUT, "a table stayed locked", delay=5.0)
    delays = [retry_delay(held, retry) for retry in range(8)]
    assert delays == [5.0, 10.0, 20.0, 40.0, 80.0, 160.0, MAX_RETRY_DELAY, MAX_RETRY_DELAY]


def test_waiting_on_a_running_job_keeps_its_pace() -> None:
    running = Wait(Reason.IN_PROGRESS, "backup Job is running", delay=5.0)
    assert retry_delay(running, 7) == 5.0


def test_a_status_field_cleared_by_the_engine_is_sent_as_null_so_the_server_clears_it_too() -> None:
    from vector_migration.api import VectorMigrationStatus
    from vector_migration.kube.merge_patch import merge_patch_of

    status = VectorMigrationStatus.model_validate({"phase": "RolledBack", "cutover": {"step": 1, "weight": 50}})
    status.cutover = None  # what a rollback does

    patch = merge_patch_of(status)

    assert patch["cutover"] is None  # a merge patch without the key would keep the server's 50%
    assert patch["phase"] == "RolledBack"
    assert all(key == key[0].lower() + key[1:] and "_" not in key for key in patch)  # the CRD's names
