"""The Dockerfile's own rules (the image itself is built by the e2e workflow, where Docker runs)."""

from __future__ import annotations

import re

from tests.chart import ROOT, of_kind, render
from vector_migration.cli.operator_run import peering_priority

DOCKERFILE = (ROOT / "Dockerfile").read_text()
INSTRUCTIONS = [
    line.strip() for line in re.sub(r"\\\n", " ", DOCKERFILE).splitlines() if line.strip() and not line.startswith("#")
]
STAGES = "\n".join(INSTRUCTIONS).split("\nFROM ")[1:]  # each stage from its FROM on


def test_the_base_image_is_pinned_to_a_patch_release_never_latest() -> None:
    (base,) = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", DOCKERFILE, re.MULTILINE)
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?", base), base
    assert "latest" not in DOCKERFILE
    assert all(line.split()[1] == "${PYTHON_IMAGE}" for line in INSTRUCTIONS if line.startswith("FROM "))


def test_the_final_stage_has_no_compiler_and_runs_as_a_numeric_non_root_user() -> None:
    assert len(STAGES) == 2, "multi-stage: build, then runtime"
    final = STAGES[-1]
    assert not re.search(r"\b(gcc|g\+\+|build-essential|clang|make|apt-get install)\b", final)
    users = re.findall(r"^USER (\S+)$", final, re.MULTILINE)
    assert users and re.fullmatch(r"[1-9]\d*(:[1-9]\d*)?", users[-1])
    (deployment,) = of_kind(render(), "Deployment")
    assert str(deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"]) == users[-1].split(":")[0]


def test_the_entrypoint_runs_the_operator_and_labels_say_where_it_comes_from() -> None:
    final = STAGES[-1]
    assert 'ENTRYPOINT ["vector-migration"]' in final and 'CMD ["operator"' in final
    for label in ("org.opencontainers.image.source", "org.opencontainers.image.version"):
        assert label in final


def test_replicas_get_distinct_peering_priorities() -> None:
    # kopf freezes every peer when priorities are equal; pods of a Deployment have distinct names
    names = [f"vmo-vector-migration-operator-7d9c8b-{suffix}" for suffix in ("x2k4p", "q8w7n", "mm5rt")]
    priorities = [peering_priority(name) for name in names]
    assert len(set(priorities)) == 3 and all(0 <= p < 2**31 for p in priorities)
    assert peering_priority(names[0]) == priorities[0]  # stable across container restarts
