"""TCP admission: per-source caps, and at the total cap a share for every source."""

from __future__ import annotations

from collections import Counter

import pytest

from resolver.admission import Admit, Evict, Refuse, admit, source_of


def test_below_the_caps_everyone_comes_in() -> None:
    assert admit({}, "a", max_total=4, max_per_source=2) == Admit()
    assert admit({"a": 1, "b": 2}, "a", max_total=4, max_per_source=2) == Admit()


def test_a_source_at_its_own_cap_is_refused() -> None:
    assert admit({"a": 2}, "a", max_total=10, max_per_source=2) == Refuse("per_source")


def test_when_full_a_newcomer_takes_a_connection_from_the_largest_source() -> None:
    counts = {"a": 3, "b": 1}
    assert admit(counts, "c", max_total=4, max_per_source=8) == Evict("a")


def test_when_full_of_equal_shares_the_newcomer_is_refused() -> None:
    assert admit({"a": 1, "b": 1}, "c", max_total=2, max_per_source=8) == Refuse("full")
    # Taking one from a source only one ahead would just move the imbalance.
    assert admit({"a": 2, "b": 2}, "a", max_total=4, max_per_source=8) == Refuse("full")


def test_thirty_two_sources_filling_the_cap_leave_room_for_others() -> None:
    """Issue #10: 32 sources x 32 connections filled the cap of 1,024; now 32 more sources
    that each want 32 all get in, and everybody converges on an equal share."""
    counts: Counter[str] = Counter({f"flood-{i}": 32 for i in range(32)})
    for round_ in range(32):
        for i in range(32):
            newcomer = f"late-{i}"
            match admit(counts, newcomer, max_total=1024, max_per_source=32):
                case Admit():
                    counts[newcomer] += 1
                case Evict(source=victim):
                    counts[victim] -= 1
                    counts[newcomer] += 1
                case Refuse():
                    pass
        assert sum(counts.values()) == 1024, round_
    assert set(counts.values()) == {16}


@pytest.mark.parametrize(
    ("address", "source"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("?", "?"),
    ],
)
def test_a_source_is_an_ipv4_address_or_an_ipv6_slash_64(address: str, source: str) -> None:
    assert source_of(address) == source
