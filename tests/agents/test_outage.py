"""The outage judgement (agents.kubernetes.outage) on a fake clock: report, hold or stand
by, from what the elector and the watches know; and Lease time that stands still."""

from __future__ import annotations

import math
from typing import Any

import pytest

from agents.kubernetes.outage import Paused, Verdict, judge

DEADLINE = 3.0
GRACE = 60.0


def verdict(**facts: Any) -> Verdict:
    given: dict[str, Any] = {
        "holder": True,
        "renewed_at": 100.0,
        "refused": False,
        "unanswered_since": None,
        "stale_since": None,
        "now": 101.0,
        "deadline_s": DEADLINE,
        "grace_s": GRACE,
    }
    return judge(**{**given, **facts})


@pytest.mark.parametrize(
    ("facts", "standing", "until"),
    [
        # renewed in time and every watch fresh: report, until the renew deadline
        ({}, "report", 103.0),
        # not the holder (a conflict, another pod's Lease, none): stand by
        ({"holder": False}, "standby", math.inf),
        ({"renewed_at": None}, "standby", math.inf),
        # renewed, but a watch failed at 100.5: hold, grace counted from the failure
        ({"stale_since": 100.5}, "hold", 103.0),
        ({"stale_since": 100.5, "now": 150.0, "renewed_at": 149.0}, "hold", 152.0),
        ({"stale_since": 100.5, "now": 160.5, "renewed_at": 160.0}, "standby", math.inf),
        # past the deadline for want of an answer: hold until the grace ends
        ({"now": 104.0, "unanswered_since": 101.0}, "hold", 161.0),
        ({"now": 160.9, "unanswered_since": 101.0}, "hold", 161.0),
        ({"now": 161.0, "unanswered_since": 101.0}, "standby", math.inf),
        # the watches failed first: the grace counts from them
        ({"now": 104.0, "unanswered_since": 101.0, "stale_since": 99.0}, "hold", 159.0),
        # past the deadline after a refusal (401/403 …): stand by, no hold
        ({"now": 104.0, "unanswered_since": 101.0, "refused": True}, "standby", math.inf),
        # past the deadline with every call answered (no renewal attempted): stand by
        ({"now": 104.0}, "standby", math.inf),
        # no grace: no hold
        ({"now": 104.0, "unanswered_since": 101.0, "grace_s": 0.0}, "standby", math.inf),
    ],
)
def test_judge(facts: dict[str, Any], standing: str, until: float) -> None:
    found = verdict(**facts)
    assert (found.standing, found.until) == (standing, until), found.reason


def test_a_hold_follows_the_outage_through_the_return_and_the_resync() -> None:
    """The apiserver goes at 101, comes back at 130 (the renewal succeeds), the watches
    resync at 131: hold from the deadline until 131, then report."""
    timeline = [
        (102.0, {"unanswered_since": 101.0, "stale_since": 101.2}, "hold"),
        (110.0, {"unanswered_since": 101.0, "stale_since": 101.2}, "hold"),
        (130.5, {"renewed_at": 130.0, "stale_since": 101.2}, "hold"),
        (131.0, {"renewed_at": 130.0}, "report"),
    ]
    for now, facts, standing in timeline:
        assert verdict(now=now, **facts).standing == standing, now


def test_paused_time_stands_still() -> None:
    clock = Paused()
    assert clock.at(10.0) == 10.0
    clock = clock.pause(10.0)
    assert clock.at(25.0) == 10.0
    assert clock.pause(20.0) is clock  # already paused: the first pause counts
    clock = clock.resume(25.0)
    assert clock.at(25.0) == 10.0 and clock.at(30.0) == 15.0
    assert clock.resume(31.0) is clock
    clock = clock.pause(40.0).resume(50.0)
    assert clock.at(50.0) == 25.0
