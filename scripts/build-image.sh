#!/usr/bin/env bash
# scripts/build-image.sh (`make image`): the operator's image, built from the Dockerfile without
# Docker or a registry, into podman's store in the cache (scripts/podman.sh). The last line of
# output is `image: <reference>`: the Makefile and .ci/run rely on it.
#
# - Debian's podman, runc and debootstrap are installed first if missing (root, or sudo -n).
# - The base, Debian bookworm's python3 (Dockerfile's PYTHON_IMAGE), comes from debootstrap, as
#   Docker Hub is out of reach; its tarball is kept in the cache, keyed by the suite and packages.
# - A second run with the same sources takes a second: the image carries a digest of what went into
#   it (the Dockerfile, pyproject.toml, README.md, operator/), and is not rebuilt while it matches.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${VMIG_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vector-migration}"
SUITE=bookworm
PACKAGES=python3,python3-venv,python-is-python3,ca-certificates
BASE="localhost/debian-python:$SUITE"
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -n 1)
IMAGE="localhost/vector-migration-operator:$version"

missing=""
for tool in podman runc debootstrap; do
  command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"
done
if [ -n "$missing" ]; then
  as_root=""
  [ "$(id -u)" -eq 0 ] || as_root="sudo -n"
  printf 'installing Debian packages:%s\n' "$missing" >&2
  $as_root apt-get update -qq >/dev/null
  # shellcheck disable=SC2086 # one word per package
  DEBIAN_FRONTEND=noninteractive $as_root apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

base_tar="$CACHE/image-base/debian-$SUITE-$(printf '%s' "$PACKAGES" | sha256sum | cut -c1-8).tar"
if [ ! -s "$base_tar" ]; then
  printf 'base: debootstrap %s (about a minute, once; kept in %s)\n' "$SUITE" "$base_tar" >&2
  root=$(mktemp -d)
  trap 'rm -rf "$root"' EXIT
  chmod 755 "$root"  # the image's / (mktemp made it 0700: no other user could reach a file)
  debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$root" http://deb.debian.org/debian >&2
  mkdir -p "$(dirname "$base_tar")"
  tar -C "$root" -c . > "$base_tar.partial" && mv "$base_tar.partial" "$base_tar"
fi
if ! scripts/podman.sh image exists "$BASE"; then
  scripts/podman.sh import "$base_tar" "$BASE" >&2
fi

digest=$(find Dockerfile pyproject.toml README.md operator -type f ! -path '*/__pycache__/*' -print0 \
  | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
label=dev.vector-migration.sources
if [ "$(scripts/podman.sh image inspect --format "{{index .Labels \"$label\"}}" "$IMAGE" 2>/dev/null)" = "$digest" ]; then
  printf 'image: %s\n' "$IMAGE"
  exit 0
fi
started=$(date +%s)
# --isolation chroot: no user namespaces or overlay mounts needed. scripts/podman/pip.conf and the
# machine's CA bundle are mounted for pip during the build, not copied into the image.
scripts/podman.sh build --isolation chroot --network host --pull=never \
  --build-arg PYTHON_IMAGE="$BASE" --build-arg VERSION="$version" --label "$label=$digest" \
  -v /etc/ssl/certs:/etc/ssl/certs:ro -v "$PWD/scripts/podman/pip.conf:/etc/pip.conf:ro" \
  --tag "$IMAGE" . >&2
printf 'built in %s s\n' "$(($(date +%s) - started))" >&2
printf 'image: %s\n' "$IMAGE"
