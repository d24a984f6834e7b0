"""The Node object the kubelet stand-in registers and the status it posts.

Pure functions over a :class:`NodeFacts` snapshot (read from /proc, /etc and
/sys by :func:`read_facts`), so the object is schema-complete for the official
Python client (which rejects a Node whose nodeInfo lacks a field).
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

KUBELET_VERSION = "v1.30.6"
CONTAINER_RUNTIME_VERSION = "containerd://1.7.22"
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x"}
CONDITION_TYPES = ("MemoryPressure", "DiskPressure", "PIDPressure", "Ready")


def now_iso() -> str:
    """The current UTC time as Kubernetes writes metav1.Time (second precision)."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    """The current UTC time as metav1.MicroTime (Lease renewTime)."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class NodeFacts:
    """What the node reports about itself."""

    name: str
    ip: str
    architecture: str
    boot_id: str
    machine_id: str
    system_uuid: str
    kernel_version: str
    os_image: str
    cpus: int
    memory_kib: int
    ephemeral_storage_kib: int
    max_pods: int
    kubelet_port: int


def _read(path: str, default: str = "") -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return default


def _os_image() -> str:
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip().strip('"')
    return "Linux"


def _memory_kib() -> int:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1])
    return 1024 * 1024


def read_facts(name: str, ip: str, root_dir: str, max_pods: int, kubelet_port: int) -> NodeFacts:
    """Read the node's facts from the running system (no side effects)."""
    machine_id = _read("/etc/machine-id") or uuid.uuid5(uuid.NAMESPACE_DNS, name).hex
    # Several stand-in kubelets may share one host in tests: derive a per-node
    # system UUID from the machine ID and the node name so each is distinct.
    system_uuid = str(uuid.uuid5(uuid.UUID(hex=machine_id[:32].ljust(32, "0")), name))
    try:
        disk = shutil.disk_usage(root_dir if os.path.isdir(root_dir) else "/").total // 1024
    except OSError:
        disk = 20 * 1024 * 1024
    return NodeFacts(
        name=name,
        ip=ip,
        architecture=_ARCH.get(platform.machine(), platform.machine() or "amd64"),
        boot_id=_read("/proc/sys/kernel/random/boot_id") or str(uuid.uuid4()),
        machine_id=machine_id,
        system_uuid=system_uuid,
        kernel_version=platform.release(),
        os_image=_os_image(),
        cpus=os.cpu_count() or 1,
        memory_kib=_memory_kib(),
        ephemeral_storage_kib=disk,
        max_pods=max_pods,
        kubelet_port=kubelet_port,
    )


def parse_labels(text: str | None) -> dict[str, str]:
    """Parse --node-labels ("a=1,node-role.kubernetes.io/control-plane=") into a dict."""
    labels: dict[str, str] = {}
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        key, _, value = item.partition("=")
        labels[key.strip()] = value.strip()
    return labels


def parse_taints(text: str | None) -> list[dict]:
    """Parse --register-with-taints ("key=value:Effect,key2:Effect") into taint dicts."""
    taints = []
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        kv, _, effect = item.rpartition(":")
        key, _, value = kv.partition("=")
        taint = {"key": key, "effect": effect}
        if value:
            taint["value"] = value
        taints.append(taint)
    return taints


def node_labels(facts: NodeFacts, extra: Mapping[str, str]) -> dict[str, str]:
    labels = {
        "beta.kubernetes.io/arch": facts.architecture,
        "beta.kubernetes.io/os": "linux",
        "kubernetes.io/arch": facts.architecture,
        "kubernetes.io/hostname": facts.name,
        "kubernetes.io/os": "linux",
    }
    labels.update(extra)
    return labels


def _quantities(facts: NodeFacts) -> tuple[dict[str, str], dict[str, str]]:
    capacity = {
        "cpu": str(facts.cpus),
        "ephemeral-storage": f"{facts.ephemeral_storage_kib}Ki",
        "hugepages-1Gi": "0",
        "hugepages-2Mi": "0",
        "memory": f"{facts.memory_kib}Ki",
        "pods": str(facts.max_pods),
    }
    # Kubespray reserves a little for the system; allocatable is capacity minus that.
    allocatable = dict(capacity)
    allocatable["memory"] = f"{max(facts.memory_kib - 256 * 1024, facts.memory_kib // 2)}Ki"
    allocatable["ephemeral-storage"] = str(int(facts.ephemeral_storage_kib * 1024 * 0.9))
    return capacity, allocatable


def node_info(facts: NodeFacts) -> dict[str, str]:
    return {
        "architecture": facts.architecture,
        "bootID": facts.boot_id,
        "containerRuntimeVersion": CONTAINER_RUNTIME_VERSION,
        "kernelVersion": facts.kernel_version,
        "kubeProxyVersion": KUBELET_VERSION,
        "kubeletVersion": KUBELET_VERSION,
        "machineID": facts.machine_id,
        "operatingSystem": "linux",
        "osImage": facts.os_image,
        "systemUUID": facts.system_uuid,
    }


_CONDITION_TEXT = {
    "MemoryPressure": ("KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
    "DiskPressure": ("KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
    "PIDPressure": ("KubeletHasSufficientPID", "kubelet has sufficient PID available"),
    "Ready": ("KubeletReady", "kubelet is posting ready status"),
}


def conditions(previous: Sequence[Mapping] | None, now: str) -> list[dict]:
    """The kubelet's conditions with a fresh heartbeat.

    lastTransitionTime is kept from ``previous`` (the node's current
    conditions) when the status is unchanged, and set to ``now`` when it
    changes, e.g. when the node controller had marked the node Unknown.
    """
    before = {c.get("type"): c for c in previous or ()}
    out = []
    for ctype in CONDITION_TYPES:
        status = "True" if ctype == "Ready" else "False"
        reason, message = _CONDITION_TEXT[ctype]
        old = before.get(ctype)
        transition = old.get("lastTransitionTime") if old and old.get("status") == status else None
        out.append({
            "type": ctype,
            "status": status,
            "lastHeartbeatTime": now,
            "lastTransitionTime": transition or now,
            "reason": reason,
            "message": message,
        })
    return out


def node_status(facts: NodeFacts, previous_conditions: Sequence[Mapping] | None, now: str) -> dict:
    """The full status the kubelet posts (conditions, addresses, capacity, nodeInfo...)."""
    capacity, allocatable = _quantities(facts)
    return {
        "addresses": [
            {"type": "InternalIP", "address": facts.ip},
            {"type": "Hostname", "address": facts.name},
        ],
        "allocatable": allocatable,
        "capacity": capacity,
        "conditions": conditions(previous_conditions, now),
        "daemonEndpoints": {"kubeletEndpoint": {"Port": facts.kubelet_port}},
        "nodeInfo": node_info(facts),
        "images": [],
    }


def node_object(facts: NodeFacts, labels: Mapping[str, str], taints: Sequence[Mapping], now: str) -> dict:
    """The Node the kubelet registers (POST /api/v1/nodes)."""
    spec: dict = {}
    if taints:
        spec["taints"] = [dict(t) for t in taints]
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": facts.name,
            "labels": node_labels(facts, labels),
            "annotations": {
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
            },
        },
        "spec": spec,
        "status": node_status(facts, None, now),
    }


def lease_object(node_name: str, node_uid: str | None, duration: int, now_micro_time: str) -> dict:
    """The node's heartbeat Lease in kube-node-lease, owned by its Node."""
    meta: dict = {"name": node_name, "namespace": "kube-node-lease"}
    if node_uid:
        meta["ownerReferences"] = [{"apiVersion": "v1", "kind": "Node", "name": node_name, "uid": node_uid}]
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": meta,
        "spec": {"holderIdentity": node_name, "leaseDurationSeconds": duration, "renewTime": now_micro_time},
    }
