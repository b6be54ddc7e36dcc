"""The agent as deployed (deploy/agent/, rendered through a cluster's overlay): valid
against the Kubernetes schemas (strict), least privilege, and consistent with the agent's
settings. Offline: kubectl kustomize renders, kubernetes-validate bundles the schemas."""

from __future__ import annotations

import importlib.util
import os
from typing import Any

import kubernetes_validate
import pytest

from agents.kubernetes.settings import KubernetesAgentSettings
from tests.deploy.render import container_env, named, of_kind, rendered

VERSIONS = ["1.29", "1.33", kubernetes_validate.latest_version()]
OVERLAY = "us-east-prod"
TOKEN = "a-token-created-out-of-band"


def agent_documents() -> list[dict[str, Any]]:
    docs = rendered(OVERLAY)
    return [
        doc
        for doc in docs
        if doc["kind"] == "Namespace"
        or doc["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "agent"
        or doc["metadata"]["name"].startswith("globaldns-agent")
    ]


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_validates_strictly(version: str) -> None:
    found = agent_documents()
    assert {doc["kind"] for doc in found} >= {
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "ConfigMap",
        "DaemonSet",
    }
    for doc in found:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message}")


def test_no_secret_is_shipped() -> None:
    # The token is created out of band; a Secret here would overwrite it on every apply.
    assert of_kind(rendered(OVERLAY), "Secret") == []


def test_rbac_is_least_privilege() -> None:
    docs = agent_documents()
    (cluster_role,) = of_kind(docs, "ClusterRole")
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
    (role,) = of_kind(docs, "Role")
    assert role["metadata"]["namespace"] == "globaldns"
    assert role["rules"] == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "verbs": ["get", "list", "watch", "create", "update"],
        }
    ]
    for binding in of_kind(docs, "ClusterRoleBinding") + of_kind(docs, "RoleBinding"):
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "globaldns-agent", "namespace": "globaldns"}
        ]


def test_the_daemonset_configures_every_required_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    docs = rendered(OVERLAY)
    daemonset = named(docs, "DaemonSet", "globaldns-agent")
    (container,) = daemonset["spec"]["template"]["spec"]["containers"]
    environ = container_env(docs, daemonset, {"globaldns-agent-token": {"token": TOKEN}})
    # The pod's environment, exactly as the DaemonSet builds it, and nothing else.
    for name in [n for n in os.environ if n.startswith("GLOBALDNS_")]:
        monkeypatch.delenv(name)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    settings = KubernetesAgentSettings()
    assert settings.cluster == OVERLAY
    assert settings.node_name == "node-a" and settings.pod_name == "pod-x"
    assert settings.pod_uid == "0b8b6a4e-uid"  # the node Lease's owner
    assert settings.namespace == daemonset["metadata"]["namespace"]
    assert settings.token.get_secret_value() == TOKEN
    (port,) = container["ports"]
    assert port["containerPort"] == settings.http_port
    assert container["command"][-1] == "agents.kubernetes"
    assert importlib.util.find_spec("agents.kubernetes.__main__") is not None
    spec = daemonset["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == "globaldns-agent"
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
