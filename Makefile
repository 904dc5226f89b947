# Two commands a new machine needs: `make demo` and `make test`. Both build the environment first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit workflows docs crd e2e bench bench-scale reliability stress clean ruvector control-plane image cluster cluster-down

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/vector-migration demo

lint: $(STAMP)
	$(BIN)/ruff check operator tests bench docs/hooks
	$(BIN)/ruff format --check operator tests bench docs/hooks

typecheck: $(STAMP)
	$(BIN)/mypy operator/vector_migration

# promtool (the chart's alerts) and actionlint (the workflows) come from the Go module proxy, built
# once into a cache outside the checkout by scripts/go-tool.sh (promtool: 4 minutes the first time);
# so do Kubernetes' own servers for tests/real_cluster (scripts/build-control-plane.sh: 6 minutes).
# The operator's image (scripts/build-image.sh, podman) runs there as the chart's pod; where podman
# cannot be installed, those tests skip (and fail in CI).
# The real-cluster tests run in a pytest process of their own: their control plane, node stand-in and
# containers live for that session, and on this 2-core machine (pid_max 32768, so process ids come round
# again within a run) a single 20-minute process holding them was killed (SIGKILL) twice at the same
# point, late in the run, with nothing in the kernel's log; each part alone passed. The rest keeps
# running as one session, so conftest's full-run checks (the chart's RBAC) still see every operator test.
unit: $(STAMP)
	VMIG_PROMTOOL="$$(scripts/go-tool.sh promtool | tail -n 1)" \
	VMIG_CONTROL_PLANE_BIN="$$(scripts/build-control-plane.sh | tail -n 1 | sed 's/^bin: //')" \
	VMIG_IMAGE="$$(scripts/build-image.sh | tail -n 1 | sed -n 's/^image: //p')" \
		$(BIN)/pytest -q tests/real_cluster
	VMIG_PROMTOOL="$$(scripts/go-tool.sh promtool | tail -n 1)" \
		$(BIN)/pytest -q --ignore=tests/real_cluster

workflows: $(STAMP)
	"$$(scripts/go-tool.sh actionlint | tail -n 1)" -no-color -shellcheck=$(BIN)/shellcheck .github/workflows/*.yaml
	$(BIN)/shellcheck .ci/run scripts/*.sh examples/*.sh tests/e2e/*.sh

# The documentation site, --strict: a broken link or anchor, or a page outside the nav, fails it.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

test: lint typecheck workflows docs unit

crd: $(STAMP)
	$(BIN)/vector-migration crd > crds/vectormigration.yaml
	cp crds/vectormigration.yaml charts/vector-migration-operator/files/crds/vectormigration.yaml

# The fault-injection matrix, writing docs/reliability.md from what it observed.
reliability: $(STAMP)
	VMIG_WRITE_RELIABILITY_REPORT=1 $(BIN)/pytest -q tests/reliability --ignore=tests/reliability/test_report.py

# A busy machine must not roll back a healthy migration: 20 InPlace runs beside CPU hogs (under a minute).
stress: $(STAMP)
	VMIG_STRESS=1 $(BIN)/pytest -q tests/stress

e2e: $(STAMP)
	tests/e2e/run.sh

# The stand-in's rows, and the real RuVector's beside them (make ruvector's build: seconds once cached).
bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[bench]'
	VMIG_RUVECTOR_PG_CONFIG="$$(scripts/build-ruvector.sh | tail -n 1 | sed 's/^pg_config: //')" \
		$(BIN)/python bench/run.py $(BENCH_ARGS)

# Each phase against the number of tables (10 to 2,000) on default lock settings: InPlace in one
# transaction and in batches, and Replicate (bench/scale.py); then against the rows of one table,
# 10,000 to 1,000,000 x 384, with the raw SQL floor (bench/scale_rows.py; SCALE_ROWS_ARGS=--inplace-only
# measures the floor, InPlace and the operator alone). Each run in a process of its own for its peak RSS.
# About two hours on 2 cores in all: the rows an hour and a half (an hour with --inplace-only). Not in CI.
SCALE_TABLES ?= 10 100 1000 2000
SCALE_ROWS ?= 10000 100000 1000000
bench-scale: $(STAMP)
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python bench/scale.py --tables $(SCALE_TABLES)
	$(BIN)/python bench/scale_rows.py --rows $(SCALE_ROWS) $(SCALE_ROWS_ARGS)

# The published RuVector extension, built with cargo-pgrx into a cache outside the checkout (keyed by
# the versions; a second run takes seconds). Its last line: `pg_config: <path>` of that PostgreSQL.
ruvector:
	scripts/build-ruvector.sh

# Kubernetes' own kube-apiserver, kube-controller-manager and kubectl, and etcd, built from the Go
# module proxy into a cache outside the checkout, keyed by the release. Last line: `bin: <path>`.
control-plane:
	scripts/build-control-plane.sh

# The operator's image from the Dockerfile, without Docker: podman, runc and a debootstrap base, into
# podman's store in the cache (scripts/podman.sh runs it). Last line: `image: <reference>`.
image:
	scripts/build-image.sh

# A local control plane (etcd, kube-apiserver with TLS and RBAC, kube-controller-manager), left
# running. Its last line of output is `kubeconfig: <absolute path>`, an admin's.
cluster: $(STAMP)
	VMIG_CONTROL_PLANE_BIN="$$(scripts/build-control-plane.sh | tail -n 1 | sed 's/^bin: //')" \
		$(BIN)/python -m tests.real_cluster.control_plane up

cluster-down: $(STAMP)
	VMIG_CONTROL_PLANE_BIN="$$(scripts/build-control-plane.sh | tail -n 1 | sed 's/^bin: //')" \
		$(BIN)/python -m tests.real_cluster.control_plane down

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .demo .bench .site
