#!/usr/bin/env bash
# The operator's quick start: install the chart, give the migration its database, apply it, approve
# its plan, wait until it is Ready. The README and the docs show this file; a test runs it
# (tests/test_quickstart.py).
#
# Needs: helm, kubectl, and kubectl-vmig on PATH (pipx install vector-migration-operator), and
# DATABASE_URL, the application's database (a libpq URL with its password). Run it from a checkout
# of this repository, or set CHART to the published chart.
set -euo pipefail
: "${DATABASE_URL:?set DATABASE_URL to the database to migrate, postgresql://user:password@host/dbname}"
CHART="${CHART:-oci://ghcr.io/ruvector/charts/vector-migration-operator}"

helm install vmo "$CHART" -n vmig-system --create-namespace --wait
kubectl create namespace shop
kubectl create secret generic shop-app -n shop --from-literal=uri="$DATABASE_URL"
kubectl apply -f examples/operator-shop.yaml   # approval: Manual
kubectl wait vmig/shop -n shop --for=jsonpath='{.status.phase}'=AwaitingApproval --timeout=30m
kubectl vmig approve shop -n shop --yes        # without --yes: shows the plan and asks
kubectl wait vmig/shop -n shop --for=condition=Ready --timeout=2h
kubectl vmig status shop -n shop
