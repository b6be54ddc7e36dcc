"""deploy/ as kustomize: every overlay renders with `kubectl kustomize`, every rendered
object passes `kubernetes-validate --strict`, and what the manifests say agrees with the
settings the components read, the topology and the CoreDNS server block."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic_settings import BaseSettings

from registry import topology as topology_mod
from registry.settings import RegistrySettings
from resolver.settings import ResolverSettings
from tests.conftest import require_tool
from tests.deploy.render import (
    CENTRAL,
    CLUSTERS,
    DEPLOY,
    Doc,
    container_env,
    named,
    of_kind,
    overlay_names,
    rendered,
    rendered_text,
)
from tests.helpers import TOPOLOGY_FILE

VERSIONS = ["1.29", "latest"]
SECRETS = {
    "globaldns-agent-token": {"token": "agent-token"},
    "globaldns-resolver": {"redis-url": "redis://resolver:pw@redis.example:6379/0"},
    "globaldns-registry": {
        "redis-url": "redis://registry:pw@globaldns-redis-0.globaldns-redis:6379/0",
        "admin-token": "admin-token",
        "cluster-tokens": json.dumps({c: f"{c}-token" for c in CLUSTERS}),
    },
    "globaldns-redis-acl": {"replication-password": "pw", "sentinel-password": "pw"},
}


def workloads(docs: list[Doc]) -> list[Doc]:
    return [d for d in docs if d["kind"] in ("Deployment", "DaemonSet", "StatefulSet")]


def settings_from(env: dict[str, str], cls: type[BaseSettings], mp: pytest.MonkeyPatch) -> Any:
    for name in [n for n in os.environ if n.startswith("GLOBALDNS_")]:
        mp.delenv(name)
    for name, value in env.items():
        mp.setenv(name, value)
    return cls()


def test_there_is_an_overlay_per_example_cluster_and_for_the_registry() -> None:
    example = topology_mod.load(TOPOLOGY_FILE)
    assert {c.name for c in example.clusters} == set(CLUSTERS)
    assert set(overlay_names()) == set(CLUSTERS) | set(CENTRAL)


@pytest.mark.parametrize("overlay", overlay_names())
@pytest.mark.parametrize("version", VERSIONS)
def test_every_rendered_object_validates_strictly(
    overlay: str, version: str, tmp_path: Path
) -> None:
    validate = require_tool("kubernetes-validate")
    out = tmp_path / f"{overlay}.yaml"
    out.write_text(rendered_text(overlay))
    args = [validate, "--strict", "--quiet", str(out)]
    if version != "latest":
        args[1:1] = ["-k", version]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120)
    # --quiet prints only warnings and failures; a kind it has no schema for is only a
    # warning (exit 0), so any output at all fails.
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), (
        result.stdout + result.stderr
    )


@pytest.mark.parametrize("overlay", overlay_names())
def test_the_namespace_comes_first_and_no_secret_is_shipped(overlay: str) -> None:
    docs = rendered(overlay)
    # `kubectl apply -k` applies in this order: the namespace must exist before its objects.
    assert docs[0]["kind"] == "Namespace" and docs[0]["metadata"]["name"] == "globaldns"
    assert len(of_kind(docs, "Namespace")) == 1
    # Secrets are created out of band; one shipped here would overwrite the real one.
    assert of_kind(docs, "Secret") == []
    for doc in docs[1:]:
        if doc["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            assert doc["metadata"]["namespace"] == "globaldns", doc["metadata"]


@pytest.mark.parametrize("overlay", overlay_names())
def test_every_referenced_secret_is_documented_in_its_overlay(overlay: str) -> None:
    text = (DEPLOY / "overlays" / overlay / "kustomization.yaml").read_text()
    for doc in workloads(rendered(overlay)):
        for name in re.findall(r"'secretName': '([^']+)'|'name': '([^']+)', 'key'", str(doc)):
            secret = next(n for n in name if n)
            assert secret in SECRETS
            assert secret in text, f"{overlay} does not say to create the Secret {secret}"


@pytest.mark.parametrize("overlay", overlay_names())
def test_every_container_is_unprivileged_on_a_read_only_root(overlay: str) -> None:
    for workload in workloads(rendered(overlay)):
        spec = workload["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] != 0
        for container in spec.get("initContainers", []) + spec["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, container["name"]
            assert security["allowPrivilegeEscalation"] is False, container["name"]
            assert security["capabilities"]["drop"] == ["ALL"], container["name"]
            assert "limits" in container["resources"], container["name"]


def test_the_production_topology_names_the_example_clusters() -> None:
    production = topology_mod.load(DEPLOY / "topology" / "topology.yaml")
    example = topology_mod.load(TOPOLOGY_FILE)
    assert {(c.name, c.region) for c in production.clusters} == {
        (c.name, c.region) for c in example.clusters
    }
    # Every cluster's own networks place its CoreDNS (and pods) in it.
    assert {n.cluster for n in production.networks} == set(CLUSTERS)


@pytest.mark.parametrize("cluster", CLUSTERS)
def test_a_cluster_overlay_configures_its_agent_and_resolvers(
    cluster: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = rendered(cluster)
    production = topology_mod.load(DEPLOY / "topology" / "topology.yaml")
    region = next(c.region for c in production.clusters if c.name == cluster)
    agent = named(docs, "ConfigMap", "globaldns-agent")["data"]
    assert agent["GLOBALDNS_CLUSTER"] == cluster and agent["GLOBALDNS_REGION"] == region

    resolver = named(docs, "Deployment", "globaldns-resolver")
    settings = settings_from(container_env(docs, resolver, SECRETS), ResolverSettings, monkeypatch)
    (container,) = resolver["spec"]["template"]["spec"]["containers"]
    ports = {(p["name"], p["protocol"]): p["containerPort"] for p in container["ports"]}
    # Unprivileged inside; the Service maps 53 on UDP and TCP to it.
    assert ports[("dns", "UDP")] == ports[("dns-tcp", "TCP")] == settings.dns_port > 1024
    assert ports[("http", "TCP")] == settings.http_port
    assert settings.dns_host == settings.http_host == "0.0.0.0"
    assert str(settings.topology).startswith("/etc/globaldns/")
    mount = next(m for m in container["volumeMounts"] if m["name"] == "topology")
    assert str(settings.topology.parent) == mount["mountPath"]
    # CoreDNS is the only client: its pod network is never rate limited.
    pods = [n.cidr for n in production.networks if n.cluster == cluster]
    assert set(settings.rrl_exempt) & set(pods)
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"

    service = named(docs, "Service", "globaldns-resolver")
    dns = {(p["protocol"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]}
    assert {("UDP", 53, "dns"), ("TCP", 53, "dns-tcp")} <= dns
    ipaddress.ip_address(service["spec"]["clusterIP"])

    spread = resolver["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert any(c["topologyKey"] == "topology.kubernetes.io/zone" for c in spread)
    pdb = named(docs, "PodDisruptionBudget", "globaldns-resolver")
    assert pdb["spec"]["selector"] == resolver["spec"]["selector"]
    hpa = named(docs, "HorizontalPodAutoscaler", "globaldns-resolver")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "globaldns-resolver"
    assert hpa["spec"]["minReplicas"] >= 3


@pytest.mark.parametrize("cluster", CLUSTERS)
def test_only_coredns_reaches_the_resolvers(cluster: str) -> None:
    policy = named(rendered(cluster), "NetworkPolicy", "globaldns-resolver")
    dns_rules = [
        rule for rule in policy["spec"]["ingress"] if any(p["port"] == 5353 for p in rule["ports"])
    ]
    assert len(dns_rules) == 1
    assert dns_rules[0]["from"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        }
    ]


@pytest.mark.parametrize("overlay", CENTRAL)
def test_the_registry_overlay_configures_the_registry(
    overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = rendered(overlay)
    registry = named(docs, "Deployment", "globaldns-registry")
    settings = settings_from(container_env(docs, registry, SECRETS), RegistrySettings, monkeypatch)
    assert set(settings.cluster_tokens) == set(CLUSTERS)
    assert settings.admin_token is not None and settings.host == "0.0.0.0"
    (container,) = registry["spec"]["template"]["spec"]["containers"]
    assert container["ports"][0]["containerPort"] == settings.port
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    # Only agents reach the registry: agent pods, the other clusters' addresses, and
    # Prometheus in `monitoring` for /metrics.
    policy = named(docs, "NetworkPolicy", "globaldns-registry")
    (rule,) = policy["spec"]["ingress"]
    peers = rule["from"]
    assert {
        "namespaceSelector": {},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "globaldns-agent"}},
    } in peers
    others = [p for p in peers if "ipBlock" not in p and "podSelector" not in p]
    assert others == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]
    assert len([p for p in peers if "ipBlock" in p]) == len(CLUSTERS)
    has_redis = bool(of_kind(docs, "StatefulSet"))
    assert has_redis == (overlay == "registry")


def test_redis_takes_its_config_from_the_files_in_deploy_redis() -> None:
    docs = rendered("registry")
    config = named(docs, "ConfigMap", "globaldns-redis")["data"]
    for name in ("redis.conf", "sentinel.conf", "init.sh"):
        assert config[name] == (DEPLOY / "redis" / name).read_text()
    statefulset = named(docs, "StatefulSet", "globaldns-redis")
    spec = statefulset["spec"]["template"]["spec"]
    assert [c["name"] for c in spec["containers"]] == ["redis", "sentinel"]
    assert statefulset["spec"]["replicas"] == 3  # a Sentinel quorum of 2 survives one loss
    assert "sentinel monitor globaldns" in config["init.sh"]


def coredns_server_block() -> str:
    return (DEPLOY / "coredns" / "global.server").read_text()


def test_the_coredns_patch_carries_the_server_block() -> None:
    patch = yaml.safe_load((DEPLOY / "coredns" / "configmap-patch.yaml").read_text())
    corefile = patch["data"]["Corefile"]
    block = "".join(
        line for line in coredns_server_block().splitlines(True) if not line.startswith("#")
    )
    assert block in corefile
    assert corefile.startswith(".:53 {")  # the cluster's own names are still answered


@pytest.mark.parametrize("cluster", CLUSTERS)
def test_coredns_forwards_to_the_resolver_service_and_caches_within_the_ttl(
    cluster: str,
) -> None:
    block = coredns_server_block()
    assert re.search(r"^global\.example\.com:53 \{", block, re.M)
    forward = re.search(r"^\s*forward \. ([0-9. ]+)\{", block, re.M)
    assert forward
    service = named(rendered(cluster), "Service", "globaldns-resolver")
    assert forward.group(1).split() == [service["spec"]["clusterIP"]]
    cache = re.search(r"^\s*cache (\d+)\s*$", block, re.M)
    assert cache and int(cache.group(1)) <= ResolverSettings.model_fields["ttl"].default


def test_the_redis_init_script_parses() -> None:
    result = subprocess.run(
        ["sh", "-n", str(DEPLOY / "redis" / "init.sh")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
