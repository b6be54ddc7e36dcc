"""What each cluster may export, and whether its annotations may set a service's policy.

A cluster's token proves which cluster reports; it does not make every service name
that cluster's to claim. The topology grants each cluster what it may export::

    clusters:
      us-east-prod:
        region: us-east-1
        exports: [production, payments/api, team-*/*]
        policy_annotations: true

A pattern is ``<namespace>`` (every service in it), ``<namespace>/<name>``, either part
with ``*`` standing for any run of characters in it (``team-*/*``), or ``*`` alone
(everything: say so on purpose). Nothing granted, nothing accepted. A cluster without
``policy_annotations`` may export its endpoints, but a policy annotation in its report
is refused: a cluster that may not set policy could otherwise pull every region's
clients to itself (``failover: [me]``) or lift a residency fence.

The registry refuses a report that touches anything else with 403 naming the services
(:func:`refusals`); agents learn their grant (``GET /v1/grants``) and leave out what it
does not cover, so one team's label in an ungranted namespace never blocks its cluster.
The resolver applies the same grants when it loads records (:meth:`Grants.admit`), so
records stored before a grant narrowed are not answered either.

Where granted clusters annotate one service differently, the first of them by cluster
name wins and the service shows the conflict (:mod:`registry.policies`); an operator's
override (admin token) always wins over annotations.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase

_PART = r"[a-z0-9*]([a-z0-9*-]{0,61}[a-z0-9*])?"
PATTERN = re.compile(rf"^(\*|{_PART}(/{_PART})?)$")


def check_pattern(pattern: str) -> str:
    """``pattern`` if it is one, else ValueError saying what a pattern is."""
    if not isinstance(pattern, str) or not PATTERN.match(pattern) or len(pattern) > 127:
        raise ValueError(
            f"{pattern!r} is not an export pattern: <namespace>, <namespace>/<name>, "
            "either with * wildcards, or * for everything"
        )
    return pattern


@dataclass(frozen=True, slots=True)
class Grant:
    exports: tuple[str, ...] = ()
    policy_annotations: bool = False

    def exported(self, key: str) -> bool:
        """Whether ``<namespace>/<name>`` is granted."""
        namespace = key.partition("/")[0]
        for pattern in self.exports:
            if "/" in pattern:
                if fnmatchcase(key, pattern):
                    return True
            elif pattern == "*" or fnmatchcase(namespace, pattern):
                return True
        return False

    def describe(self) -> str:
        granted = ", ".join(self.exports) or "nothing"
        policy = "may" if self.policy_annotations else "may not"
        return f"exports {granted}; {policy} set policy by annotation"

    def as_json(self) -> dict[str, object]:
        return {"exports": list(self.exports), "policy_annotations": self.policy_annotations}


NOTHING = Grant()


@dataclass(frozen=True, slots=True)
class Refusal:
    service: str
    field: str
    """Where in the report: ``services[3]``, ``services[3].policy``."""
    why: str

    def as_json(self) -> dict[str, str]:
        return {"service": self.service, "field": self.field, "why": self.why}


def refusals(grant: Grant, services: Iterable[tuple[str, bool]]) -> list[Refusal]:
    """What of a report ``grant`` does not cover: one per service, in report order.

    ``services`` is each reported service's key and whether it carries a policy.
    """
    refused = []
    for i, (key, annotated) in enumerate(services):
        if not grant.exported(key):
            refused.append(Refusal(key, f"services[{i}]", "not granted to this cluster"))
        elif annotated and not grant.policy_annotations:
            refused.append(
                Refusal(
                    key,
                    f"services[{i}].policy",
                    "this cluster may not set policy by annotation",
                )
            )
    return refused


class Grants:
    """Every cluster's grant, with each answer about a key remembered (a resolver asks
    for every record it loads; the patterns are few, the keys many but repeated)."""

    def __init__(self, grants: Mapping[str, Grant]) -> None:
        self._grants = dict(grants)
        self._seen: dict[tuple[str, str], bool] = {}

    def of(self, cluster: str) -> Grant:
        return self._grants.get(cluster, NOTHING)

    def exported(self, cluster: str, key: str) -> bool:
        found = self._seen.get((cluster, key))
        if found is None:
            if len(self._seen) > 1_000_000:
                self._seen.clear()
            found = self._seen[(cluster, key)] = self.of(cluster).exported(key)
        return found

    def policy_annotations(self, cluster: str) -> bool:
        return self.of(cluster).policy_annotations
