#!/usr/bin/env bash
# The real-cluster suite: kind cluster, operator image, chart, PostgreSQL, a VectorMigration to Ready.
#   tests/e2e/run.sh                      # the stand-in target, a fresh cluster, deleted afterwards
#   RUVECTOR_IMAGE=... RUVECTOR_EXTENSION=ruvector tests/e2e/run.sh   # a database image with real RuVector
#   E2E_KEEP_CLUSTER=1 tests/e2e/run.sh   # keep the cluster for a look afterwards
set -euo pipefail
cd "$(dirname "$0")/../.."
make .venv/.installed >/dev/null
exec .venv/bin/pytest tests/e2e -v -p no:cacheprovider "$@"
