"""kubectl vmig against the API emulator: what a person sees, and what it refuses to change.

Every call goes through the official client, over TLS, with a kubeconfig as a cloud CLI writes
one; the plugin runs in a worker thread as its own process would (its own event loop).
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import VMIG, Cluster, running_cluster
from vector_migration.cli.kubectl import EXIT_OK, EXIT_REFUSED, EXIT_USAGE, build_parser, main
from vector_migration.demo import EmbeddedPostgres
from vector_migration.vocabulary import ANNOTATION_APPROVE, ANNOTATION_PAUSED, ANNOTATION_PROMOTE, ANNOTATION_ROLLBACK

PLAN = "sha256:1111111111111111"
OTHER_PLAN = "sha256:2222222222222222"


@pytest.fixture
async def cluster(postgres: EmbeddedPostgres, tmp_path: Path) -> AsyncIterator[Cluster]:
    async with running_cluster(tmp_path, postgres.bin_dir) as (running, _):
        await running.apply(
            {
                "apiVersion": "ruvector.dev/v1alpha1",
                "kind": "VectorMigration",
                "metadata": {"name": "shop"},
                "spec": {"strategy": "Replicate", "approval": "Manual", "target": {"extension": "ruvector"}},
            }
        )
        yield running


async def set_status(cluster: Cluster, status: dict[str, Any], name: str = "shop") -> None:
    await cluster.request(
        "PATCH", f"{VMIG.format(namespace='default')}/{name}/status", {"status": status}, "application/merge-patch+json"
    )


async def publish_plan(cluster: Cluster, plan_hash: str) -> None:
    document = {
        "planHash": plan_hash,
        "strategy": "Replicate",
        "prepare": [{"step": "publish", "sql": "CREATE PUBLICATION x"}],
    }
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "shop-plan"},
        "data": {"plan.json": json.dumps(document)},
    }
    await cluster.request("POST", "/api/v1/namespaces/default/configmaps", body)


async def kubectl_vmig(cluster: Cluster, *argv: str, ask: Callable[[str], str] = lambda _: "") -> tuple[int, str]:
    """Run the plugin as its own process would; its exit code and what it printed."""
    out = io.StringIO()
    code = await asyncio.to_thread(main, ["--kubeconfig", str(cluster.kubeconfig()), *argv], ask=ask, out=out)
    return code, out.getvalue()


async def annotations(cluster: Cluster) -> dict[str, str]:
    resource = await cluster.get("shop")
    assert resource is not None
    return dict(resource["metadata"].get("annotations") or {})


async def test_status_shows_the_phase_the_plan_and_each_tables_progress(cluster: Cluster) -> None:
    await set_status(
        cluster,
        {
            "phase": "Backfill",
            "message": "copying 2 table(s)",
            "planHash": PLAN,
            "conditions": [
                {"type": "Ready", "status": "False", "reason": "InProgress", "message": "copying",
                 "lastTransitionTime": "2026-11-30T09:00:00Z"},
            ],
            "replicate": {
                "sourceDatabase": "shop", "targetDatabase": "shop_ruvector", "oldDatabase": "shop_pgvector_old",
                "tables": [{"name": "public.docs", "state": "copying", "rows": 1200}], "lagBytes": 4096,
            },
        },
    )  # fmt: skip

    code, text = await kubectl_vmig(cluster, "status", "shop")
    assert code == EXIT_OK
    assert "Backfill" in text and PLAN in text and "replicate public.docs: copying, 1200 rows copied" in text
    assert "replication lag: 4096 bytes" in text

    code, document = await kubectl_vmig(cluster, "status", "shop", "-o", "json")
    assert code == EXIT_OK and json.loads(document)["status"]["phase"] == "Backfill"

    # kubectl's flags after the name, as the README writes them, and before the verb
    assert (await kubectl_vmig(cluster, "status", "shop", "-n", "default"))[0] == EXIT_OK
    assert (await kubectl_vmig(cluster, "-n", "default", "status", "shop"))[0] == EXIT_OK
    assert (await kubectl_vmig(cluster, "status", "shop", "-n", "elsewhere"))[0] != EXIT_OK


@pytest.mark.parametrize(
    ("phase", "conditions", "code"),
    [
        ("Succeeded", [("Ready", "True", "Succeeded"), ("Stalled", "False", "Succeeded")], EXIT_OK),
        ("Failed", [("Ready", "False", "SwapFailed"), ("Stalled", "True", "SwapFailed")], 1),
        ("RolledBack", [("Ready", "False", "RecallDropped"), ("Stalled", "True", "RecallDropped")], 1),
        ("Verify", [("Reconciling", "True", "VerificationInconclusive"), ("Stalled", "False", "x")], 3),
        ("Checklist", [("Reconciling", "True", "AwaitingApproval"), ("Stalled", "False", "x")], 3),
    ],
    ids=["succeeded", "failed", "rolled-back-by-itself", "held-for-a-person", "awaiting-approval"],
)
async def test_status_watch_ends_with_an_exit_code_a_script_can_branch_on(
    cluster: Cluster, phase: str, conditions: list[tuple[str, str, str]], code: int
) -> None:
    written = [
        {"type": t, "status": v, "reason": r, "message": "", "lastTransitionTime": "x"} for t, v, r in conditions
    ]
    await set_status(cluster, {"phase": phase, "message": "m", "conditions": written})

    assert (await kubectl_vmig(cluster, "status", "shop", "-w", "--interval", "0.1"))[0] == code


async def test_approve_annotates_the_hash_it_showed(cluster: Cluster) -> None:
    await set_status(cluster, {"phase": "AwaitingApproval", "planHash": PLAN})
    await publish_plan(cluster, PLAN)

    code, text = await kubectl_vmig(cluster, "approve", "shop", ask=lambda _: "yes")

    assert code == EXIT_OK, text
    assert PLAN in text and (await annotations(cluster))[ANNOTATION_APPROVE] == PLAN


async def test_approve_refuses_a_plan_that_changed_while_the_person_read_it(cluster: Cluster) -> None:
    await set_status(cluster, {"phase": "AwaitingApproval", "planHash": PLAN})
    await publish_plan(cluster, PLAN)
    loop = asyncio.get_running_loop()

    def the_database_changes_then_yes(_: str) -> str:
        # While the person reads the plan, the operator plans again (the database changed).
        asyncio.run_coroutine_threadsafe(set_status(cluster, {"planHash": OTHER_PLAN}), loop).result()
        return "yes"

    code, text = await kubectl_vmig(cluster, "approve", "shop", ask=the_database_changes_then_yes)

    assert code == EXIT_REFUSED
    assert "changed" in text and ANNOTATION_APPROVE not in await annotations(cluster)


async def test_approve_refuses_a_reviewed_hash_that_is_not_the_current_one(cluster: Cluster) -> None:
    await set_status(cluster, {"phase": "AwaitingApproval", "planHash": PLAN})
    await publish_plan(cluster, PLAN)

    code, text = await kubectl_vmig(cluster, "approve", "shop", "--hash", OTHER_PLAN, "--yes")

    assert code == EXIT_REFUSED and ANNOTATION_APPROVE not in await annotations(cluster)
    assert f"the plan is {PLAN}, not {OTHER_PLAN}" in text


async def test_a_declined_confirmation_changes_nothing(cluster: Cluster) -> None:
    await set_status(cluster, {"phase": "AwaitingApproval", "planHash": PLAN})
    await publish_plan(cluster, PLAN)

    code, _ = await kubectl_vmig(cluster, "approve", "shop", ask=lambda _: "no")

    assert code == EXIT_REFUSED and ANNOTATION_APPROVE not in await annotations(cluster)


async def test_promote_only_when_something_awaits_it(cluster: Cluster) -> None:
    await set_status(cluster, {"phase": "Succeeded", "message": "done"})
    code, text = await kubectl_vmig(cluster, "promote", "shop", "--yes")
    assert code == EXIT_REFUSED and "nothing awaits promotion" in text

    await set_status(cluster, {"phase": "Cutover", "message": "paused at step 2 until promoted"})
    code, _ = await kubectl_vmig(cluster, "promote", "shop", "--yes")
    assert code == EXIT_OK and (await annotations(cluster))[ANNOTATION_PROMOTE] == "true"


async def test_pause_and_resume(cluster: Cluster) -> None:
    assert (await kubectl_vmig(cluster, "pause", "shop"))[0] == EXIT_OK
    assert (await annotations(cluster))[ANNOTATION_PAUSED] == "true"
    assert (await kubectl_vmig(cluster, "resume", "shop"))[0] == EXIT_OK
    assert ANNOTATION_PAUSED not in await annotations(cluster)


async def test_rollback_needs_the_name_typed_back(cluster: Cluster) -> None:
    await set_status(cluster, {"phase": "Succeeded", "message": "migrated"})

    code, _ = await kubectl_vmig(cluster, "rollback", "shop", ask=lambda _: "yes")
    assert code == EXIT_REFUSED and ANNOTATION_ROLLBACK not in await annotations(cluster)

    code, text = await kubectl_vmig(cluster, "rollback", "shop", ask=lambda _: "shop")
    assert code == EXIT_OK and (await annotations(cluster))[ANNOTATION_ROLLBACK] == "true"
    assert "writes made since are kept" in text


async def test_an_unknown_migration_is_one_line_and_exit_2(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = await kubectl_vmig(cluster, "status", "nope")
    assert code == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "vectormigration nope not found in namespace default" in err


async def test_report_writes_the_html_page(cluster: Cluster, tmp_path: Path) -> None:
    await set_status(cluster, {"phase": "Succeeded", "message": "migrated <b>ok</b>"})
    page = tmp_path / "report.html"
    code, _ = await kubectl_vmig(cluster, "report", "shop", "-o", str(page))
    assert code == EXIT_OK
    html = page.read_text()
    assert "Succeeded" in html and "<b>ok</b>" not in html


@pytest.mark.parametrize(
    "verb", ["status", "plan", "approve", "promote", "pause", "resume", "rollback", "restore", "report", "completion"]
)
def test_every_command_explains_itself_with_an_example_and_exit_codes(
    verb: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args([verb, "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    assert "examples:" in text and "kubectl" in text.split("examples:")[1] and "exit codes:" in text


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts_are_generated(shell: str) -> None:
    out = io.StringIO()
    assert main(["completion", shell], out=out) == EXIT_OK
    assert "kubectl-vmig" in out.getvalue() and len(out.getvalue()) > 200
