"""deploy/kubernetes validates and keeps its promises (deploy/kubernetes/README.md).

Core objects are checked by kubernetes-validate against the Kubernetes OpenAPI schemas it
bundles (strict: an unknown field fails), for the oldest version the manifests support
(1.29: native sidecar containers) and the newest it knows. The ServiceMonitor is a
Prometheus Operator CRD, not in those schemas: it is checked against a small JSON schema of
the fields used here (unknown fields fail too) and against the Service it selects."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.recorder_env import unknown

ROOT = Path(__file__).resolve().parent.parent
KUBE = ROOT / "deploy/kubernetes"
VERSIONS = ["1.29.0", kubernetes_validate.latest_version()]
CRD_KINDS = {"ServiceMonitor"}


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


MANIFESTS = sorted(p for p in KUBE.glob("*.yaml") if p.name != "kustomization.yaml")
OBJECTS = [(p.name, d) for p in MANIFESTS for d in documents(p)]
CORE = [(name, d) for name, d in OBJECTS if d["kind"] not in CRD_KINDS]


def one(kind: str) -> dict[str, Any]:
    found = [d for _, d in OBJECTS if d["kind"] == kind]
    assert len(found) == 1, kind
    return found[0]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(("name", "obj"), CORE,
                         ids=[f"{n}:{d['kind']}:{d['metadata']['name']}" for n, d in CORE])
def test_core_object_validates(name: str, obj: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(obj, version, strict=True)


def test_validation_catches_a_misspelt_field() -> None:
    """The check above can fail: a typo in the StatefulSet's pod spec."""
    sts = yaml.safe_load((KUBE / "statefulset.yaml").read_text())
    sts["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(sts, VERSIONS[0], strict=True)


SERVICE_MONITOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {
            "type": "object", "required": ["name"],
            "properties": {"name": {"type": "string"},
                           "labels": {"type": "object",
                                      "additionalProperties": {"type": "string"}}},
        },
        "spec": {
            "type": "object", "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "selector": {
                    "type": "object", "required": ["matchLabels"], "additionalProperties": False,
                    "properties": {"matchLabels": {"type": "object",
                                                   "additionalProperties": {"type": "string"}}},
                },
                "endpoints": {
                    "type": "array", "minItems": 1,
                    "items": {
                        "type": "object", "required": ["port", "path"],
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string", "pattern": "^/"},
                            "interval": {"type": "string", "pattern": r"^[0-9]+(ms|s|m|h)$"},
                            "scrapeTimeout": {"type": "string",
                                              "pattern": r"^[0-9]+(ms|s|m|h)$"},
                        },
                    },
                },
            },
        },
    },
}


def test_service_monitor_scrapes_the_recorders_metrics() -> None:
    monitor, service = one("ServiceMonitor"), one("Service")
    jsonschema.validate(monitor, SERVICE_MONITOR_SCHEMA)
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    port_names = {p["name"] for p in service["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in port_names and endpoint["path"] == "/metrics"


def test_service_monitor_schema_catches_a_misspelt_field() -> None:
    monitor = {**one("ServiceMonitor")}
    monitor["spec"] = {**monitor["spec"], "endpoints": [{"port": "http", "path": "/metrics",
                                                          "intervall": "30s"}]}
    with pytest.raises(jsonschema.ValidationError, match="intervall"):
        jsonschema.validate(monitor, SERVICE_MONITOR_SCHEMA)


def pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = one("StatefulSet")["spec"]["template"]["spec"]
    return spec


def container(name: str) -> dict[str, Any]:
    spec = pod_spec()
    found = [c for c in spec["containers"] + spec.get("initContainers", []) if c["name"] == name]
    assert len(found) == 1, name
    return found[0]


def test_recorder_fleet_has_replicas_and_a_disruption_budget() -> None:
    sts = one("StatefulSet")
    assert sts["spec"]["replicas"] >= 2
    assert 1 <= one("PodDisruptionBudget")["spec"]["minAvailable"] < sts["spec"]["replicas"]
    # Each replica's volume: spool, signing key, index, tailnet state (README.md says why).
    assert [t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]] == ["data"]


def test_recorder_container_is_unprivileged() -> None:
    """What Pod Security's "restricted" level asks of a container, and a read-only root."""
    ctx = container("recorder")["securityContext"]
    assert ctx["runAsNonRoot"] is True and ctx["runAsUser"] >= 1000
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    assert ctx["seccompProfile"]["type"] == "RuntimeDefault"
    spec = pod_spec()
    assert spec["automountServiceAccountToken"] is False
    sysctls = {s["name"]: s["value"] for s in spec["securityContext"]["sysctls"]}
    port = container("recorder")["ports"][0]["containerPort"]
    assert int(sysctls["net.ipv4.ip_unprivileged_port_start"]) <= port  # no capability


def test_sidecar_has_only_the_capabilities_tailscaled_needs() -> None:
    sidecar = container("tailscale")
    assert sidecar["restartPolicy"] == "Always"  # a native sidecar: up before the recorder
    ctx = sidecar["securityContext"]
    assert ctx["capabilities"] == {"drop": ["ALL"], "add": ["NET_ADMIN", "NET_RAW"]}
    assert ctx["allowPrivilegeEscalation"] is False and "privileged" not in ctx
    env = {e["name"]: e.get("value") for e in sidecar["env"]}
    assert env["TS_USERSPACE"] == "false"  # uploads keep their tailnet source addresses
    assert env["TS_KUBE_SECRET"] == ""  # state on the volume: no API access needed
    socket = {e["name"]: e.get("value") for e in sidecar["env"]}["TS_SOCKET"]
    assert socket == one("ConfigMap")["data"]["TSSH_TAILSCALE_SOCKET"]


def test_probes_ask_healthz_on_the_listening_port() -> None:
    recorder = container("recorder")
    listen = one("ConfigMap")["data"]["TSRECORDER_LISTEN"]
    ports = {p["name"]: p["containerPort"] for p in recorder["ports"]}
    assert ports == {"http": int(listen.rpartition(":")[2])}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = recorder[probe]["httpGet"]
        assert get["path"] == "/healthz" and get["port"] in ports, probe
    service_ports = {p["targetPort"] for p in one("Service")["spec"]["ports"]}
    assert service_ports <= set(ports)


def test_settings_come_from_the_config_map_and_secrets() -> None:
    recorder = container("recorder")
    names = set(one("ConfigMap")["data"])
    from_secret = {}
    for e in recorder["env"]:
        names.add(e["name"])
        assert "value" not in e, f"{e['name']}: settings come from the ConfigMap or a Secret"
        from_secret[e["name"]] = e["valueFrom"]["secretKeyRef"]
    assert not unknown(names), "variables the recorder does not read"
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "TSRECORDER_DST",
                 "TSRECORDER_BUCKET"):
        assert from_secret[name]["name"] == "tssh-recorder-s3"
    # The PostgreSQL URL of the shared index: from its Secret, optional (SQLite without it).
    assert from_secret["TSRECORDER_INDEX"] == {"name": "tssh-recorder-index", "key": "url",
                                                "optional": True}


def test_secret_keys_referenced_exist_in_the_example() -> None:
    secrets = {d["metadata"]["name"]: d["stringData"]
               for d in documents(KUBE / "secrets.example.yaml")}
    spec = pod_spec()
    for c in spec["containers"] + spec["initContainers"]:
        for e in c.get("env", []):
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["key"] in secrets[ref["name"]], f"{c['name']}: {e['name']}"
    for values in secrets.values():
        for key, value in values.items():
            if re.search(r"key|password|secret|url", key):
                assert "REPLACE-ME" in value, f"secrets.example.yaml: {key} is not a placeholder"


def test_kustomization_lists_every_manifest_but_the_secrets() -> None:
    kustomization = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    assert listed == {p.name for p in MANIFESTS} - {"secrets.example.yaml"}
    image = container("recorder")["image"].rpartition(":")
    assert kustomization["images"] == [{"name": image[0], "newTag": image[2]}]
    for _, obj in OBJECTS:
        if obj["kind"] != "Namespace" and obj["kind"] != "Secret":
            assert "namespace" not in obj["metadata"], "kustomization.yaml sets the namespace"


def test_images_are_pinned_by_tag() -> None:
    spec = pod_spec()
    for c in spec["containers"] + spec["initContainers"]:
        tag = c["image"].rpartition(":")[2]
        assert tag and tag not in ("latest", "stable") and "/" not in tag, c["image"]
