"""Which policy is in force for a service: operator override > annotation > default."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

from registry.model import Policy, PolicyOverride

DEFAULT_POLICY = Policy()


class InForce(NamedTuple):
    policy: Policy
    source: str
    conflict: tuple[str, ...]
    """Clusters whose annotation differs from the one in force (overridden or not)."""


def effective_policy(
    key: str,
    reported: Sequence[tuple[str, Policy | None]],
    overrides: Mapping[str, PolicyOverride],
) -> InForce:
    """The policy in force and where it came from: override > annotation > default.

    ``reported`` is each reporting cluster's annotated policy (None: not annotated, or
    the cluster may not set policy: :mod:`registry.grants`), in cluster-name order.

    When clusters report different annotations, the first cluster by name wins and the
    source says so, and so does ``conflict``: a half-finished rollout of an annotation
    must not flip answers, and an operator settles a lasting conflict with an override.
    """
    annotated = [(cluster, p) for cluster, p in reported if p is not None]
    disagree: tuple[str, ...] = ()
    if annotated:
        first = annotated[0][1]
        disagree = tuple(sorted({c for c, p in annotated if p != first}))
    override = overrides.get(key)
    if override is not None:
        who = f" by {override.by}" if override.by else ""
        return InForce(override.policy, f"registry override{who}", disagree)
    if annotated:
        cluster, policy = annotated[0]
        note = f"; differs in {', '.join(disagree)}" if disagree else ""
        return InForce(policy, f"annotation from {cluster}{note}", disagree)
    return InForce(DEFAULT_POLICY, "default", ())
