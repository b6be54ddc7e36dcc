"""The Kubernetes agent's settings: one typed object, from ``GLOBALDNS_*`` variables and
the downward API (``NODE_NAME``, ``POD_NAME``, ``POD_NAMESPACE``).

Lease timings, and why they are what they are: the leader Lease (``leader_lease_s``)
plus one registry heartbeat must fit inside the registry's cluster lease (6 s by
default), so that a leader killed without warning is replaced before its cluster's
records go stale; a clean shutdown releases the Lease and hands over at once. Node
Leases are renewed like the kubelet's own (a write every ``node_lease_s / 3``), so the
apiserver load is one small write per node per 10 s.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from agents.kubernetes.annotations import EXPORT_LABEL


class KubernetesAgentSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="GLOBALDNS_", extra="ignore", frozen=True, populate_by_name=True
    )

    cluster: str = Field(description="the cluster this agent reports for (its token must match)")
    region: str = Field(default="", description="the cluster's region, for logs")
    registry_url: str = Field(description="base URL of the registry API")
    registry_ca_file: Path | None = Field(
        default=None,
        description="CA bundle (PEM) that an https:// registry's certificate is verified "
        "against; none: the system's trust store",
    )
    token: SecretStr = Field(description="this cluster's bearer token for the registry API")
    node_name: str = Field(
        validation_alias=AliasChoices("GLOBALDNS_NODE_NAME", "NODE_NAME"),
        description="this pod's node (downward API spec.nodeName): it probes only there",
    )
    pod_name: str = Field(
        validation_alias=AliasChoices("GLOBALDNS_POD_NAME", "POD_NAME"),
        description="this pod's name: its identity in the leader election",
    )
    pod_uid: str = Field(
        default="",
        validation_alias=AliasChoices("GLOBALDNS_POD_UID", "POD_UID"),
        description="this pod's uid (downward API metadata.uid): it owns the node Lease, so "
        "the garbage collector deletes the Lease with the pod (empty: the Lease has no owner)",
    )
    namespace: str = Field(
        default="globaldns",
        validation_alias=AliasChoices("GLOBALDNS_NAMESPACE", "POD_NAMESPACE"),
        description="where the agent's Leases live (its own namespace)",
    )
    kubeconfig: Path | None = Field(
        default=None, description="a kubeconfig to use instead of the in-cluster service account"
    )
    export_selector: str = Field(
        default=f"{EXPORT_LABEL}=true",
        description="label selector for exported Services (and, copied, their slices)",
    )
    heartbeat_interval_s: float = Field(default=2.0, gt=0, description="registry lease renewal")
    leader_lease_s: int = Field(default=4, ge=2, le=60, description="leader Lease duration")
    leader_renew_s: float = Field(default=1.0, gt=0, description="leader Lease renewal period")
    node_lease_s: int = Field(default=30, ge=3, le=600, description="node Lease duration")
    apiserver_outage_grace_s: float = Field(
        default=180.0,
        ge=0,
        description="while the apiserver is out (the leader Lease cannot be renewed for want "
        "of an answer, or a watch has not resynced since it failed), the leader keeps the "
        "registry lease alive with heartbeats for the state already reported, for at most "
        "this long, and reports nothing until every watch has resynced: a control-plane "
        "restart or upgrade (tens of seconds to a few minutes) must not take a cluster whose "
        "pods are fine out of the answers; but the hold is blind to every pod change, so it "
        "is bounded, and past it the cluster goes stale as before. 0: no hold",
    )
    watch_timeout_s: float = Field(default=300, ge=10, description="timeoutSeconds of a watch")
    read_timeout_s: float = Field(
        default=90, ge=5, description="no byte for this long ends a watch (above bookmarks)"
    )
    list_page_size: int = Field(default=500, ge=1, le=10000)
    http_host: str = Field(default="0.0.0.0", description="metrics and health endpoints")
    http_port: int = Field(default=9102, ge=0, le=65535)
    log_json: bool = Field(default=True, description="JSON logs (false: console lines)")

    @model_validator(mode="after")
    def _timings(self) -> KubernetesAgentSettings:
        if not self.leader_renew_s * 2 < self.leader_lease_s:
            raise ValueError("leader_renew_s must be under half of leader_lease_s")
        return self

    @property
    def leader_deadline_s(self) -> float:
        """Stop acting as leader this long after the last successful renewal."""
        return self.leader_lease_s * 0.75
