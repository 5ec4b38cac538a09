"""The Kubernetes manifests: structure, mounts, probes and security context.

No schema validator is available offline (kubeconform fetches schemas), so these tests
parse the YAML and check the properties jouled depends on: host paths read-only, probes on
/healthz:9877, the config pointing at the mounted powercap tree, and a tight container.
"""

from __future__ import annotations

import posixpath
from pathlib import Path
from typing import Any

import pytest
import yaml

from jouled.config import validate
from tests.deploy.tools import DEPLOY

K8S = DEPLOY / "kubernetes"
API_VERSIONS = {
    "Namespace": "v1",
    "ServiceAccount": "v1",
    "ConfigMap": "v1",
    "Service": "v1",
    "DaemonSet": "apps/v1",
    "ServiceMonitor": "monitoring.coreos.com/v1",
    "Kustomization": "kustomize.config.k8s.io/v1beta1",
}
# Writable mounts that are allowed: the ledger (must outlive the pod) and scratch /tmp.
WRITABLE = {"ledger", "tmp"}


def documents() -> list[tuple[Path, dict[str, Any]]]:
    found = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc is not None:
                found.append((path, doc))
    return found


def one(kind: str, name: str | None = None) -> dict[str, Any]:
    matches = [
        d
        for _, d in documents()
        if d["kind"] == kind and name in (None, d.get("metadata", {}).get("name"))
    ]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


@pytest.fixture(scope="module")
def pod() -> dict[str, Any]:
    spec: dict[str, Any] = one("DaemonSet")["spec"]["template"]["spec"]
    return spec


@pytest.fixture(scope="module")
def container(pod: dict[str, Any]) -> dict[str, Any]:
    (only,) = pod["containers"]
    c: dict[str, Any] = only
    return c


def test_every_document_has_a_known_kind_and_api_version() -> None:
    docs = documents()
    kinds = {d["kind"] for _, d in docs}
    assert {"DaemonSet", "Service", "ConfigMap", "ServiceMonitor"} <= kinds
    for path, doc in docs:
        assert doc["apiVersion"] == API_VERSIONS[doc["kind"]], f"{path.name}: {doc['kind']}"
        if doc["kind"] not in ("Namespace", "Kustomization"):
            assert doc["metadata"]["namespace"] == "jouled", f"{path.name}: {doc['kind']}"


def test_kustomization_lists_existing_files() -> None:
    kustomization = one("Kustomization")
    for resource in kustomization["resources"]:
        assert (K8S / resource).is_file(), resource


def test_selector_matches_pod_labels() -> None:
    ds = one("DaemonSet")
    labels = ds["spec"]["template"]["metadata"]["labels"]
    assert ds["spec"]["selector"]["matchLabels"].items() <= labels.items()
    for service in (one("Service", "jouled"), one("Service", "jouled-ingest")):
        assert service["spec"]["selector"].items() <= labels.items()


def test_host_mounts_are_read_only(pod: dict[str, Any], container: dict[str, Any]) -> None:
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts.keys() == volumes.keys()
    for name, mount in mounts.items():
        if name in WRITABLE:
            continue
        assert mount.get("readOnly") is True, f"{name} must be mounted readOnly"
    host_paths = {v["hostPath"]["path"]: mounts[n] for n, v in volumes.items() if "hostPath" in v}
    assert host_paths["/sys/class/powercap"]["mountPath"] == "/host/sys/class/powercap"
    assert host_paths["/proc"]["mountPath"] == "/host/proc"
    # Only the ledger may be a writable host path.
    writable_host = [p for p, m in host_paths.items() if not m.get("readOnly")]
    assert writable_host == ["/var/lib/jouled"]


def test_powercap_symlinks_resolve_inside_the_container(
    pod: dict[str, Any], container: dict[str, Any]
) -> None:
    # /sys/class/powercap/intel-rapl:0 -> ../../devices/virtual/powercap/intel-rapl/...
    # The link target, resolved from the container's mount point, must be mounted too.
    volumes = {v["name"]: v for v in pod["volumes"] if "hostPath" in v}
    mount_of = {
        volumes[m["name"]]["hostPath"]["path"]: m["mountPath"]
        for m in container["volumeMounts"]
        if m["name"] in volumes
    }
    class_dir = mount_of["/sys/class/powercap"]
    target = posixpath.normpath(posixpath.join(class_dir, "../../devices/virtual/powercap"))
    assert mount_of["/sys/devices/virtual/powercap"] == target


def test_config_points_at_the_mounted_tree_and_is_valid() -> None:
    text = one("ConfigMap")["data"]["config.yaml"]
    config = validate(yaml.safe_load(text), "configmap.yaml", text)
    assert str(config.collectors.rapl.path) == "/host/sys/class/powercap"
    assert config.listen.endswith(":9877")
    # Pods reach the ingest listener through the node-local Service, not loopback.
    assert config.ingest.listen.startswith("0.0.0.0:")


def test_probes_hit_healthz_on_the_metrics_port(container: dict[str, Any]) -> None:
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == 9877
    for probe_name in ("livenessProbe", "readinessProbe"):
        get = container[probe_name]["httpGet"]
        port = ports.get(get["port"], get["port"])  # a named port resolves to its number
        assert (get["path"], port) == ("/healthz", 9877), probe_name


def test_container_security_context(pod: dict[str, Any], container: dict[str, Any]) -> None:
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert "add" not in sc["capabilities"]
    assert sc.get("privileged", False) is False
    # energy_uj is 0400 root:root: uid 0 reads it as owner, with no capability.
    assert sc["runAsUser"] == 0
    assert pod["hostPID"] is True
    assert pod.get("hostNetwork", False) is False
    assert pod["automountServiceAccountToken"] is False


def test_resources_and_nvidia_access(container: dict[str, Any]) -> None:
    resources = container["resources"]
    assert resources["requests"] == {"cpu": "50m", "memory": "64Mi"}
    assert resources["limits"] == {"cpu": "100m", "memory": "128Mi"}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["NVIDIA_VISIBLE_DEVICES"] == "all"
    # Monitoring must not take a GPU away from the workloads.
    assert "nvidia.com/gpu" not in resources.get("limits", {})
    text = (K8S / "daemonset.yaml").read_text(encoding="utf-8")
    assert "# runtimeClassName: nvidia" in text


def test_services_expose_metrics_for_scraping() -> None:
    svc = one("Service", "jouled")
    assert svc["spec"]["clusterIP"] == "None"
    annotations = svc["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "9877"
    assert annotations["prometheus.io/path"] == "/metrics"
    ingest = one("Service", "jouled-ingest")
    assert ingest["spec"]["internalTrafficPolicy"] == "Local"
    monitor = one("ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    service_ports = {p["name"] for p in svc["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in service_ports
        assert endpoint["path"] == "/metrics"
        # Rules and alerts select job="jouled".
        assert {"targetLabel": "job", "replacement": "jouled"} in endpoint["relabelings"]
