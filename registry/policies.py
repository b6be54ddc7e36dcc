"""Which policy is in force for a service: operator override > annotation > default."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from registry.model import Policy, PolicyOverride

DEFAULT_POLICY = Policy()


def effective_policy(
    key: str,
    reported: Sequence[tuple[str, Policy | None]],
    overrides: Mapping[str, PolicyOverride],
) -> tuple[Policy, str]:
    """The policy in force and where it came from: override > annotation > default.

    ``reported`` is each reporting cluster's annotated policy (None: not annotated), in
    cluster-name order.

    When clusters report different annotations, the first cluster by name wins and the
    source says so: a half-finished rollout of an annotation must not flip answers.
    """
    override = overrides.get(key)
    if override is not None:
        who = f" by {override.by}" if override.by else ""
        return override.policy, f"registry override{who}"
    annotated = [(cluster, p) for cluster, p in reported if p is not None]
    if annotated:
        cluster, policy = annotated[0]
        disagree = sorted({c for c, p in annotated if p != policy})
        note = f"; differs in {', '.join(disagree)}" if disagree else ""
        return policy, f"annotation from {cluster}{note}"
    return DEFAULT_POLICY, "default"
