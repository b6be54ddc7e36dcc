"""deploy/agent/: valid against the Kubernetes schemas (strict), least privilege, and
consistent with the agent's settings. Offline: kubernetes-validate bundles the schemas."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from agents.kubernetes.settings import KubernetesAgentSettings
from tests.helpers import ROOT

DEPLOY = ROOT / "deploy" / "agent"
VERSIONS = ["1.29", "1.33", kubernetes_validate.latest_version()]


def documents() -> list[tuple[Path, dict[str, Any]]]:
    out = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        out.extend((path, doc) for doc in yaml.safe_load_all(path.read_text()) if doc)
    return out


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _path, doc in documents() if doc["kind"] == kind]


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_validates_strictly(version: str) -> None:
    found = documents()
    assert {doc["kind"] for _p, doc in found} >= {
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "ConfigMap",
        "Secret",
        "DaemonSet",
    }
    for path, doc in found:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{path.name} {doc['kind']}/{doc['metadata']['name']}: {exc.message}")


def test_rbac_is_least_privilege() -> None:
    (cluster_role,) = of_kind("ClusterRole")
    granted = {
        (group, resource, verb)
        for rule in cluster_role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert granted == {
        ("discovery.k8s.io", "endpointslices", "list"),
        ("discovery.k8s.io", "endpointslices", "watch"),
        ("", "services", "list"),
        ("", "services", "watch"),
    }
    (role,) = of_kind("Role")
    assert role["metadata"]["namespace"] == "globaldns"
    assert role["rules"] == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "verbs": ["get", "list", "watch", "create", "update"],
        }
    ]
    for binding in of_kind("ClusterRoleBinding") + of_kind("RoleBinding"):
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "globaldns-agent", "namespace": "globaldns"}
        ]


def test_the_daemonset_configures_every_required_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    (daemonset,) = of_kind("DaemonSet")
    (container,) = daemonset["spec"]["template"]["spec"]["containers"]
    (config,) = of_kind("ConfigMap")
    (secret,) = of_kind("Secret")
    environ: dict[str, str] = dict(config["data"])
    downward = {
        "spec.nodeName": "node-a",
        "metadata.name": "agent-x",
        "metadata.namespace": "globaldns",
        "metadata.uid": "0b8b6a4e-uid",
    }
    for var in container["env"]:
        source = var["valueFrom"]
        if "secretKeyRef" in source:
            assert source["secretKeyRef"]["name"] == secret["metadata"]["name"]
            environ[var["name"]] = secret["stringData"][source["secretKeyRef"]["key"]]
        else:
            environ[var["name"]] = downward[source["fieldRef"]["fieldPath"]]
    # The pod's environment, exactly as the DaemonSet builds it, and nothing else.
    for name in [n for n in os.environ if n.startswith("GLOBALDNS_")]:
        monkeypatch.delenv(name)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    settings = KubernetesAgentSettings()
    assert settings.node_name == "node-a" and settings.pod_name == "agent-x"
    assert settings.pod_uid == "0b8b6a4e-uid"  # the node Lease's owner
    assert settings.namespace == daemonset["metadata"]["namespace"]
    assert settings.token.get_secret_value() == secret["stringData"]["token"]
    (port,) = container["ports"]
    assert port["containerPort"] == settings.http_port
    assert container["command"][-1] == "agents.kubernetes"
    assert importlib.util.find_spec("agents.kubernetes.__main__") is not None
    spec = daemonset["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == "globaldns-agent"
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
