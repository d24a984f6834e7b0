"""The resource types the API stand-in serves, with their discovery data.

Each entry is what kube-apiserver's discovery advertises for it (group,
version, kind, plural, short names, verbs, subresources) plus the field
selectors the real server accepts for it.
"""

from __future__ import annotations

from dataclasses import dataclass

VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
GENERIC_FIELDS = ("metadata.name", "metadata.namespace")


@dataclass(frozen=True)
class Resource:
    """One served resource type."""

    group: str
    version: str
    kind: str
    plural: str
    singular: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    field_selectors: tuple[str, ...] = GENERIC_FIELDS
    categories: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_version(self) -> str:
        return self.api_version

    @property
    def list_kind(self) -> str:
        return self.kind + "List"

    def key(self, namespace: str | None, name: str) -> str:
        """etcd key: /registry/<plural>/<namespace>/<name> (cluster-scoped: /registry/<plural>/<name>)."""
        if self.namespaced:
            return f"/registry/{self.plural}/{namespace}/{name}"
        return f"/registry/{self.plural}/{name}"

    def prefix(self, namespace: str | None = None) -> str:
        """etcd key prefix of all objects (in one namespace when given)."""
        if self.namespaced and namespace:
            return f"/registry/{self.plural}/{namespace}/"
        return f"/registry/{self.plural}/"

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources


_POD_FIELDS = (
    *GENERIC_FIELDS,
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
)
_EVENT_FIELDS = (
    *GENERIC_FIELDS,
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
)

RESOURCES: tuple[Resource, ...] = (
    Resource("", "v1", "Namespace", "namespaces", "namespace", False, ("ns",), ("status",),
             (*GENERIC_FIELDS[:1], "status.phase")),
    Resource("", "v1", "Node", "nodes", "node", False, ("no",), ("status",), (*GENERIC_FIELDS[:1], "spec.unschedulable")),
    Resource("", "v1", "Pod", "pods", "pod", True, ("po",), ("status", "log", "eviction", "binding"), _POD_FIELDS, ("all",)),
    Resource("", "v1", "ConfigMap", "configmaps", "configmap", True, ("cm",)),
    Resource("", "v1", "Secret", "secrets", "secret", True, (), (), (*GENERIC_FIELDS, "type")),
    Resource("", "v1", "Service", "services", "service", True, ("svc",), ("status",), GENERIC_FIELDS, ("all",)),
    Resource("", "v1", "Endpoints", "endpoints", "endpoints", True, ("ep",)),
    Resource("", "v1", "Event", "events", "event", True, ("ev",), (), _EVENT_FIELDS),
    Resource("", "v1", "ServiceAccount", "serviceaccounts", "serviceaccount", True, ("sa",)),
    Resource("apps", "v1", "Deployment", "deployments", "deployment", True, ("deploy",), ("status", "scale"), GENERIC_FIELDS, ("all",)),
    Resource("apps", "v1", "ReplicaSet", "replicasets", "replicaset", True, ("rs",), ("status", "scale"), (*GENERIC_FIELDS, "status.replicas"), ("all",)),
    Resource("apps", "v1", "DaemonSet", "daemonsets", "daemonset", True, ("ds",), ("status",), GENERIC_FIELDS, ("all",)),
    Resource("networking.k8s.io", "v1", "Ingress", "ingresses", "ingress", True, ("ing",), ("status",)),
    Resource("networking.k8s.io", "v1", "IngressClass", "ingressclasses", "ingressclass", False),
    Resource("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", "poddisruptionbudget", True, ("pdb",), ("status",)),
    Resource("coordination.k8s.io", "v1", "Lease", "leases", "lease", True),
    Resource("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", "endpointslice", True),
)

# Groups in the order /apis lists them; the preferred version is the only version.
GROUPS: tuple[str, ...] = ("apps", "networking.k8s.io", "policy", "coordination.k8s.io", "discovery.k8s.io")


def by_group_version(group: str, version: str) -> list[Resource]:
    """Resources of one group/version ("" is the core group)."""
    return [r for r in RESOURCES if r.group == group and r.version == version]


def lookup(group: str, version: str, plural: str) -> Resource | None:
    """Find a resource by its URL coordinates."""
    for r in RESOURCES:
        if r.group == group and r.version == version and r.plural == plural:
            return r
    return None


def by_kind(api_version: str, kind: str) -> Resource | None:
    """Find a resource by apiVersion and kind (for ownerReferences)."""
    for r in RESOURCES:
        if r.api_version == api_version and r.kind == kind:
            return r
    return None


def get(plural: str, group: str = "") -> Resource:
    """The resource with this plural (and group); KeyError if not served."""
    for r in RESOURCES:
        if r.plural == plural and r.group == group:
            return r
    raise KeyError(plural)
