"""A real control plane for the session: Kubernetes' own kube-apiserver, kube-controller-manager and etcd.

scripts/build-control-plane.sh builds them (`make control-plane`); .ci/run names its directory in
VMIG_CONTROL_PLANE_BIN and sets VMIG_REQUIRE_CONTROL_PLANE, so these tests fail, rather than skip,
when the build is missing.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client, config

from tests.builds import missing_build
from tests.real_cluster.control_plane import ControlPlane, ControlPlaneMissing, built_bin_dir


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    try:
        bin_dir = built_bin_dir()
    except ControlPlaneMissing as missing:
        missing_build("VMIG_REQUIRE_CONTROL_PLANE", str(missing))
    plane = ControlPlane(bin_dir, tmp_path_factory.mktemp("control-plane"))
    plane.up()
    yield plane
    plane.down()


@pytest.fixture(scope="session")
def admin(control_plane: ControlPlane) -> client.ApiClient:
    """The official client, logged in as a member of system:masters."""
    return config.new_client_from_config(str(control_plane.root / "admin.kubeconfig"))
