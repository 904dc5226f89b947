#!/usr/bin/env bash
# scripts/podman.sh ARGS...: podman with this project's store and settings, for `make image` and the
# real-cluster tests. The store lives in the cache outside the checkout (vfs: no overlay mounts are
# needed), so images built once are there the next time; scripts/podman/containers.conf says why
# runc. Needs root, as podman here has no rootless setup.
set -euo pipefail
CACHE="${VMIG_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vector-migration}"
store="$CACHE/containers"
mkdir -p "$store"
CONTAINERS_CONF="$(cd "$(dirname "$0")" && pwd)/podman/containers.conf" \
  exec podman --root "$store/storage" --runroot "$store/run" --storage-driver vfs "$@"
