"""Operator decisions (drains, policy overrides) as versioned facts that survive Redis.

An agent's report is repaired by the agent: a registry that lost it answers 409 and the
agent sends its whole state again. Nobody re-sends an operator's drain. So every decision
carries a revision (Redis time in µs, and always above the newest revision Redis holds),
and clearing one is a decision too — a tombstone with its own revision — so that an
undrain is never resurrected as a drain by a copy that missed it.

Copies of the decisions live in Redis (``gdns:decisions`` plus the drains and policies
hashes), in every registry replica's journal (memory, and a file when
``GLOBALDNS_STATE_DIR`` is set), and in every resolver's state. Any two copies merge the
same way: per subject, the higher revision wins (:func:`merge`). A registry replica
compares its journal with Redis every second and writes back what Redis lost (restarted
empty, or failed over to a replica that missed the write); a resolver keeps what it
holds until Redis holds something newer, so the drain stays applied in between.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

DRAIN = "drain:"
POLICY = "policy:"


@dataclass(frozen=True, slots=True)
class Decision:
    subject: str
    """``drain:<cluster>`` or ``policy:<namespace>/<name>``."""
    rev: int
    value: str | None
    """The decision as stored (JSON); None: cleared."""

    @property
    def kind(self) -> str:
        return self.subject.partition(":")[0]

    @property
    def target(self) -> str:
        """The cluster or the service the decision is about."""
        return self.subject.partition(":")[2]


def drain_subject(cluster: str) -> str:
    return DRAIN + cluster


def policy_subject(service: str) -> str:
    return POLICY + service


def newer(candidate: Decision, held: Decision | None) -> bool:
    """Whether ``candidate`` should replace ``held`` (the higher revision wins)."""
    return held is None or candidate.rev > held.rev


def merge(
    ours: Mapping[str, Decision], theirs: Mapping[str, Decision]
) -> tuple[list[Decision], list[Decision]]:
    """What ``theirs`` lacks or holds older (to write there), and what ``ours`` does (to
    take here), each sorted by revision so that they are applied in the order made."""
    give = [d for s, d in ours.items() if newer(d, theirs.get(s))]
    take = [d for s, d in theirs.items() if newer(d, ours.get(s))]
    return sorted(give, key=_rev), sorted(take, key=_rev)


def _rev(decision: Decision) -> int:
    return decision.rev
