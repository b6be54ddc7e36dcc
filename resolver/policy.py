"""Which endpoints a client gets: pure decisions over a snapshot's service entry.

``geo`` (the default and, for now, only policy): order regions by distance from the
client's region, answer with the healthy endpoints of the nearest region that has any.
When nothing of the asked family is healthy anywhere, answer with every known endpoint
of that family (fail open, as Route 53 does) rather than with nothing by accident.

The decision says *why* (``reason``), so an operator can be told.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from resolver.snapshot import Candidate, ServiceEntry

MAX_ANSWERS = 8


@dataclass(frozen=True, slots=True)
class Decision:
    addresses: tuple[str, ...]
    """In preference order; rotation and the answer cap are the packer's business."""
    region: str | None
    reason: str
    location_dependent: bool


def geo(entry: ServiceEntry, family: int, order: Sequence[str]) -> Decision:
    """Nearest region (in ``order``) with healthy endpoints of ``family``."""
    of_family = [c for c in entry.candidates if c.family == family]
    if not of_family:
        return Decision((), None, f"no IPv{family} endpoints registered", False)
    healthy: dict[str, list[Candidate]] = {}
    for candidate in of_family:
        if candidate.healthy:
            healthy.setdefault(candidate.region, []).append(candidate)
    # Regions outside the catalogue go last, by name, so they are still reachable.
    ranked = list(order) + sorted(set(healthy) - set(order))
    for region in ranked:
        if region in healthy:
            chosen = _unique(c.address for c in healthy[region])
            nearest = region == ranked[0]
            why = "nearest region" if nearest else "nearest region with healthy endpoints"
            return Decision(chosen, region, f"geo: {why} {region}", True)
    return Decision(
        _unique(c.address for c in of_family),
        None,
        "geo: no healthy endpoint anywhere; answering every known endpoint (fail open)",
        False,
    )


def _unique(addresses: object) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for address in addresses:  # type: ignore[attr-defined]
        seen.setdefault(address, None)
    return tuple(seen)


def rotations(addresses: Sequence[str], *, limit: int = MAX_ANSWERS) -> list[tuple[str, ...]]:
    """Every rotation of ``addresses``, each cut to ``limit`` records."""
    if not addresses:
        return [()]
    n = len(addresses)
    return [tuple((list(addresses[k:]) + list(addresses[:k]))[:limit]) for k in range(n)]
