"""The operator's image as `make image` builds it from the Dockerfile, run as the chart's pod runs it.

The chart's securityContext (user 10001, a read-only root, every capability dropped, no privilege
escalation) is applied by podman as the node stand-in applies it (tests/real_cluster/node.py); the
operator itself, in this image, migrates through the real API server in test_operator.py.
"""

from __future__ import annotations

from pathlib import Path

from tests.chart import render
from tests.real_cluster.images import podman
from vector_migration import __version__

ROOT = Path(__file__).resolve().parents[2]
AS_THE_CHART_SAYS = ["--user=10001:10001", "--read-only", "--read-only-tmpfs=false", "--cap-drop=ALL",
                     "--security-opt=no-new-privileges", "--network=none"]  # fmt: skip


def test_the_chart_asks_for_what_these_tests_apply() -> None:
    (deployment,) = [o for o in render() if o["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]["securityContext"]
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (10001, 10001)
    assert container["readOnlyRootFilesystem"] and container["capabilities"]["drop"] == ["ALL"]
    assert container["allowPrivilegeEscalation"] is False


def test_the_image_says_its_version_and_prints_the_crd_the_chart_ships(operator_image: str) -> None:
    version = podman("run", "--rm", *AS_THE_CHART_SAYS, operator_image, "--version")
    crd = podman("run", "--rm", *AS_THE_CHART_SAYS, operator_image, "crd")

    assert version.stdout.strip() == f"vector-migration {__version__}"
    assert crd.stdout == (ROOT / "crds" / "vectormigration.yaml").read_text()
