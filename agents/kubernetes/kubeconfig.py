"""Connecting to the apiserver: in-cluster (a DaemonSet pod) or from a kubeconfig.

In a pod, the service account's projected token expires and is rotated by the kubelet;
kubernetes_asyncio's in-cluster loader re-reads the token file every minute through its
``refresh_api_key_hook``, which is what keeps a long-running agent authenticated. Outside
a cluster (a developer's laptop, a test), a kubeconfig is read, with its exec and OIDC
plugins.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from kubernetes_asyncio.client import ApiClient, Configuration
from kubernetes_asyncio.config import ConfigException, load_incluster_config, load_kube_config

from registry.errors import ConfigError

TOKEN_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
CA_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt")


async def api_client(
    *,
    kubeconfig: Path | None = None,
    context: str | None = None,
    environ: Mapping[str, str] = os.environ,
    token_file: Path = TOKEN_FILE,
    ca_file: Path = CA_FILE,
) -> ApiClient:
    """An API client: from ``kubeconfig`` if given, else in-cluster when the pod's
    environment says so, else the default kubeconfig (``$KUBECONFIG``, ``~/.kube/config``)."""
    configuration = Configuration()
    try:
        if kubeconfig is None and environ.get("KUBERNETES_SERVICE_HOST"):
            load_incluster_config(  # type: ignore[no-untyped-call]
                client_configuration=configuration,
                try_refresh_token=True,
                token_filename=str(token_file),
                cert_filename=str(ca_file),
                environ=dict(environ),
            )
        else:
            await load_kube_config(
                config_file=str(kubeconfig) if kubeconfig is not None else None,
                context=context,
                client_configuration=configuration,
            )
    except (ConfigException, OSError) as exc:
        raise ConfigError(f"cannot configure the Kubernetes client: {exc}") from exc
    return ApiClient(configuration=configuration)
