#!/usr/bin/env bash
# make ruvector: the published RuVector extension, built from its crate with the pinned cargo-pgrx,
# against a PostgreSQL that has pgvector and server headers, and installed there.
#
# Everything goes into a cache outside the checkout, keyed by the versions, so a second run takes
# seconds. The last line of output is `pg_config: <absolute path>` of that installation: scripts
# and tests rely on it.
#
# The PostgreSQL: the PyPI wheel pgserver (16.2, with pgvector 0.6.2, a relocatable pg_config, the
# server headers and PGXS). pgrx 0.12 builds for PostgreSQL 14-17, not 18 (the embedded wheel the
# rest of the suite runs on), and Debian's postgresql-server-dev-15 has no pgvector to migrate from.
set -euo pipefail

RUVECTOR_VERSION="${RUVECTOR_VERSION:-2.0.6}"
PGRX_VERSION="${PGRX_VERSION:-0.12.9}"
PGSERVER_VERSION="${PGSERVER_VERSION:-0.1.4}"
PG_MAJOR=16
RUVECTOR_FEATURES="${RUVECTOR_FEATURES:-index-all quant-all graph-complete gated-transformer analytics-complete attention-extended sona-learning domain-expansion}"
CACHE="${VMIG_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vector-migration}"
PYTHON="${PYTHON:-python3}"

pg_home="$CACHE/pgserver-$PGSERVER_VERSION"
pgrx_root="$CACHE/cargo-pgrx-$PGRX_VERSION"
features_key=$(printf '%s' "$RUVECTOR_FEATURES" | sha256sum | cut -c1-8)
build="$CACHE/ruvector-$RUVECTOR_VERSION-pgrx-$PGRX_VERSION-pg$PG_MAJOR-$features_key"
pg_config="$pg_home/pgserver/pginstall/bin/pg_config"
stamp="$build/installed"

say() { printf '%s\n' "$*" >&2; }
started=$(date +%s)

# 1. PostgreSQL with pgvector and its headers, unpacked from the wheel (a zip).
if [ ! -x "$pg_config" ]; then
  say "PostgreSQL: pgserver $PGSERVER_VERSION from PyPI"
  rm -rf "$pg_home.partial" && mkdir -p "$pg_home.partial"
  "$PYTHON" -m pip download --quiet --no-deps --only-binary :all: -d "$pg_home.partial/wheel" "pgserver==$PGSERVER_VERSION"
  "$PYTHON" -m zipfile -e "$pg_home.partial"/wheel/pgserver-*.whl "$pg_home.partial"
  chmod +x "$pg_home.partial"/pgserver/pginstall/bin/*
  rm -rf "$pg_home" && mv "$pg_home.partial" "$pg_home"
fi

# 2. cargo-pgrx at the version RuVector's Cargo.lock pins (RuVector issue #331: a newer one fails
#    with bindgen errors). bindgen needs libclang itself: libclang-cpp.so, which some machines
#    have without it, is another library (bindgen then fails with "Unable to find libclang").
if ! ldconfig -p 2>/dev/null | grep -Eq '[[:space:]]libclang(-[0-9]+)?\.so'; then
  say "libclang: Debian's libclang-dev"
  as_root=""
  [ "$(id -u)" -eq 0 ] || as_root="sudo -n"
  $as_root apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $as_root apt-get install -y -qq --no-install-recommends libclang-dev >/dev/null
fi
if [ ! -x "$pgrx_root/bin/cargo-pgrx" ]; then
  say "cargo-pgrx $PGRX_VERSION (built once, kept in $pgrx_root)"
  cargo install --quiet cargo-pgrx --version "$PGRX_VERSION" --locked --root "$pgrx_root"
fi
export PATH="$pgrx_root/bin:$PATH"
export PGRX_HOME="$build/pgrx-home"

# 3. The crate's published source, with the Cargo.lock it ships.
if [ ! -f "$stamp" ]; then
  src="$build/src/ruvector-postgres-$RUVECTOR_VERSION"
  if [ ! -f "$src/Cargo.toml" ]; then
    say "ruvector-postgres $RUVECTOR_VERSION from the crate registry"
    fetch="$build/fetch"
    mkdir -p "$fetch/src" "$build/src"
    cat > "$fetch/Cargo.toml" <<EOF
[package]
name = "vmig-fetch-ruvector"
version = "0.0.0"
edition = "2021"
[dependencies]
ruvector-postgres = { version = "=$RUVECTOR_VERSION", default-features = false }
EOF
    : > "$fetch/src/lib.rs"
    (cd "$fetch" && cargo fetch --quiet)
    # the first registry index's copy (one per index; a glob, not ls, so any name is safe)
    for crate in "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"ruvector-postgres-$RUVECTOR_VERSION"; do break; done
    cp -r "$crate" "$src"
  fi
  mkdir -p "$PGRX_HOME"
  cargo pgrx init --pg$PG_MAJOR "$pg_config" >/dev/null
  say "building ruvector-postgres $RUVECTOR_VERSION for PostgreSQL $PG_MAJOR (cargo pgrx install --release)"
  # The features of the crate's own Dockerfile, less `embeddings` (fastembed fetches ONNX Runtime and
  # its models from the network, which a build here cannot reach; the install script defines none
  # of its functions).
  (cd "$src" && CARGO_TARGET_DIR="$build/target" cargo pgrx install --release \
      --pg-config "$pg_config" --no-default-features --features "pg$PG_MAJOR $RUVECTOR_FEATURES")
  # As the crate's Dockerfile does: the hand-written install scripts (the control file's
  # default_version, 0.3.0, selects one) beside the library; pgrx installs only the upgrade script.
  cp "$src"/sql/ruvector--*.sql "$("$pg_config" --sharedir)/extension/"
  touch "$stamp"
fi

say "ruvector $RUVECTOR_VERSION ready in $(($(date +%s) - started)) s"
echo "pg_config: $pg_config"
