"""The geo policy as a table: nearest healthy region, spill, fail open, families."""

from __future__ import annotations

import pytest

from resolver.policy import geo, rotations
from resolver.snapshot import Candidate, ServiceEntry

ORDER_EU = ("eu-west-1", "us-east-1", "ap-south-1")


def c(address: str, region: str, healthy: bool = True) -> Candidate:
    family = 6 if ":" in address else 4
    return Candidate(address, family, f"{region}-prod", region, healthy)


def entry(*candidates: Candidate) -> ServiceEntry:
    return ServiceEntry("production", "api", 5, candidates)


@pytest.mark.parametrize(
    ("candidates", "family", "addresses", "region", "dependent"),
    [
        (
            [c("10.0.0.1", "us-east-1"), c("10.0.1.1", "eu-west-1"), c("10.0.1.2", "eu-west-1")],
            4,
            ("10.0.1.1", "10.0.1.2"),
            "eu-west-1",
            True,
        ),
        (
            [c("10.0.0.1", "us-east-1"), c("10.0.1.1", "eu-west-1", healthy=False)],
            4,
            ("10.0.0.1",),
            "us-east-1",
            True,
        ),
        (
            [c("10.0.0.1", "us-east-1", False), c("10.0.1.1", "eu-west-1", False)],
            4,
            ("10.0.0.1", "10.0.1.1"),
            None,
            False,
        ),
        (
            [c("10.0.1.1", "eu-west-1"), c("2001:db8::1", "us-east-1")],
            6,
            ("2001:db8::1",),
            "us-east-1",
            True,
        ),
        ([c("10.0.1.1", "eu-west-1")], 6, (), None, False),
        ([c("10.9.0.1", "mars-1")], 4, ("10.9.0.1",), "mars-1", True),
    ],
)
def test_geo(
    candidates: list[Candidate],
    family: int,
    addresses: tuple[str, ...],
    region: str | None,
    dependent: bool,
) -> None:
    decision = geo(entry(*candidates), family, ORDER_EU)
    assert decision.addresses == addresses
    assert decision.region == region
    assert decision.location_dependent is dependent
    assert decision.reason


def test_rotations_cycle_and_cap() -> None:
    assert rotations(["a", "b", "c"]) == [("a", "b", "c"), ("b", "c", "a"), ("c", "a", "b")]
    many = [str(i) for i in range(10)]
    assert all(len(r) == 8 for r in rotations(many))
    assert rotations([]) == [()]
