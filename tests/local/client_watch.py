"""Run by test_kubeapi_clients.py in a subprocess, with the Python client under test first on PYTHONPATH.

Usage: python client_watch.py KUBECONFIG NAMESPACE MAJOR

As a runbook would: a watch of pods (watch.Watch().stream(list_namespaced_pod))
that must see the existing pod ADDED and then a status change MODIFIED, and a
"rollout status" of a Deployment (a watch of that one Deployment until its
status says the rollout is complete). Every watch is bounded by timeout_seconds.
Prints one line per check; exits non-zero on the first failure.
"""

from __future__ import annotations

import sys

import kubernetes
from kubernetes import client, config, watch


def main(kubeconfig: str, ns: str, major: str) -> None:
    assert kubernetes.__version__.split(".")[0] == major, kubernetes.__version__
    print("client", kubernetes.__version__)
    api = config.new_client_from_config(kubeconfig)
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)

    core.create_namespaced_pod(ns, {"metadata": {"name": "watched"},
                                    "spec": {"containers": [{"name": "c", "image": "lab/testapp:1"}]}})
    seen = []
    w = watch.Watch()
    for event in w.stream(core.list_namespaced_pod, ns, timeout_seconds=20):
        pod = event["object"]
        seen.append((event["type"], pod.metadata.name, pod.status.phase))
        if event["type"] == "ADDED" and pod.metadata.name == "watched":
            core.patch_namespaced_pod_status("watched", ns, {"status": {"phase": "Running"}})
        if event["type"] == "MODIFIED" and pod.status.phase == "Running":
            w.stop()
    assert ("ADDED", "watched", "Pending") in seen and ("MODIFIED", "watched", "Running") in seen, seen
    print("pod watch", seen)

    template = {"metadata": {"labels": {"app": "r"}}, "spec": {"containers": [{"name": "c", "image": "lab/testapp:1"}]}}
    apps.create_namespaced_deployment(ns, {"metadata": {"name": "rolled"}, "spec": {
        "replicas": 2, "selector": {"matchLabels": {"app": "r"}}, "template": template}})
    done = False
    w = watch.Watch()
    for event in w.stream(apps.list_namespaced_deployment, ns, field_selector="metadata.name=rolled", timeout_seconds=20):
        d = event["object"]
        st = d.status
        if event["type"] == "ADDED":
            apps.patch_namespaced_deployment_status("rolled", ns, {"status": {
                "observedGeneration": d.metadata.generation, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2,
                "availableReplicas": 2}})
        elif (st.observed_generation or 0) >= d.metadata.generation and st.updated_replicas == d.spec.replicas \
                and st.available_replicas == d.spec.replicas:
            done = True
            w.stop()
    assert done, "the Deployment's rollout was never seen complete"
    print("rollout status: deployment rolled successfully rolled out")


if __name__ == "__main__":
    main(*sys.argv[1:4])
