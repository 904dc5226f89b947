"""The Kubernetes side: the kopf controller, the reconciler, the official client, Jobs, builders, the CRD, metrics.

Only kube.controller imports kopf; the reconciler maps a resource onto an engine run.
"""
