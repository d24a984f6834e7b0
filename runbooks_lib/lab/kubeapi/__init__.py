"""The lab's Kubernetes API stand-in: a small Kubernetes-API-compatible server backed by etcd.

It is a stand-in, not Kubernetes: it serves the subset of the API that the
runbooks, kubectl 1.30 and the official Python client use (see
docs/kube-api-stand-in.md). Run it with ``python -m runbooks_lib.lab.kubeapi serve``.
"""
