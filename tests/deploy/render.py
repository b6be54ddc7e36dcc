"""Rendering deploy/ as `kubectl apply -k` would, once per overlay per test session."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import require_tool
from tests.helpers import ROOT

DEPLOY = ROOT / "deploy"
OVERLAYS = DEPLOY / "overlays"
CLUSTERS = ("us-east-prod", "eu-west-prod", "ap-south-prod")
CENTRAL = ("registry", "registry-managed-redis")

Doc = dict[str, Any]


def overlay_names() -> list[str]:
    return sorted(p.name for p in OVERLAYS.iterdir() if (p / "kustomization.yaml").exists())


@functools.cache
def _render(overlay: Path, kubectl: str) -> str:
    result = subprocess.run(
        [kubectl, "kustomize", str(overlay)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"kubectl kustomize {overlay}: {result.stderr}"
    return result.stdout


def rendered_text(overlay: str) -> str:
    return _render(OVERLAYS / overlay, require_tool("kubectl"))


def rendered(overlay: str) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(rendered_text(overlay)) if doc]


def of_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [doc for doc in docs if doc["kind"] == kind]


def named(docs: list[Doc], kind: str, prefix: str) -> Doc:
    """The one object of ``kind`` whose name is ``prefix`` (or generated from it)."""

    def matches(name: str) -> bool:
        # A generated ConfigMap's name carries kustomize's hash: "-" and 10 characters.
        return name == prefix or (name.startswith(prefix + "-") and len(name) == len(prefix) + 11)

    (found,) = [doc for doc in of_kind(docs, kind) if matches(doc["metadata"]["name"])]
    return found


def container_env(
    docs: list[Doc], workload: Doc, secrets: dict[str, dict[str, str]]
) -> dict[str, str]:
    """The environment a workload's first container gets, with ``secrets`` standing in for
    the Secrets created out of band (name -> key -> value)."""
    spec = workload["spec"]["template"]["spec"]
    container = spec["containers"][0]
    config = {doc["metadata"]["name"]: doc.get("data", {}) for doc in of_kind(docs, "ConfigMap")}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(config[source["configMapRef"]["name"]])
    downward = {
        "spec.nodeName": "node-a",
        "metadata.name": "pod-x",
        "metadata.namespace": workload["metadata"]["namespace"],
        "metadata.uid": "0b8b6a4e-uid",
    }
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
            continue
        ref = var["valueFrom"]
        if "secretKeyRef" in ref:
            key = ref["secretKeyRef"]
            env[var["name"]] = secrets[key["name"]][key["key"]]
        else:
            env[var["name"]] = downward[ref["fieldRef"]["fieldPath"]]
    return env
