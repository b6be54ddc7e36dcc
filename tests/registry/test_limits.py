"""The report limits (token buckets, one report in flight), on a fake clock (no sockets)."""

from __future__ import annotations

import pytest

from registry.limits import Buckets, Rate, Verdict
from registry.rejections import Rejection
from registry.throttle import ReportLimits

RATE = Rate(per_s=10.0, burst=5.0, bytes_per_token=1000)


def test_a_burst_is_admitted_then_the_next_is_told_when_to_come_back() -> None:
    buckets = Buckets(RATE)
    assert all(buckets.take("us", 0.0).allowed for _ in range(5))
    refused = buckets.take("us", 0.0)
    assert not refused.allowed and refused.retry_after_s == pytest.approx(0.1)
    # Coming back when told is enough; earlier is not.
    assert not buckets.take("us", 0.05).allowed
    assert buckets.take("us", 0.1).allowed


def test_the_rate_is_sustained_and_the_bucket_never_holds_more_than_the_burst() -> None:
    buckets = Buckets(RATE)
    admitted = sum(buckets.take("us", i * 0.01).allowed for i in range(1000))  # 100/s for 10 s
    assert admitted == 5 + 99  # the burst, then 10 a second over the 9.99 s that follow
    assert buckets.tokens("quiet", 0.0) == 5.0
    assert buckets.tokens("quiet", 3600.0) == 5.0


def test_clusters_have_buckets_of_their_own() -> None:
    buckets = Buckets(RATE)
    while buckets.take("flooder", 0.0).allowed:
        pass
    assert buckets.take("other", 0.0) == Verdict(True)


def test_a_big_report_is_admitted_and_the_next_ones_wait_for_its_debt() -> None:
    buckets = Buckets(RATE)
    assert buckets.take("us", 0.0).allowed
    buckets.charge("us", 0.0, 20_500)  # 20 tokens more: 4 - 20 = -16
    assert buckets.tokens("us", 0.0) == pytest.approx(-16.0)
    refused = buckets.take("us", 0.0)
    assert not refused.allowed and refused.retry_after_s == pytest.approx(1.7)
    assert buckets.take("us", 1.7).allowed


def test_small_bodies_cost_nothing_more_and_debt_can_be_bounded() -> None:
    buckets = Buckets(RATE)
    buckets.charge("us", 0.0, 999)
    assert buckets.tokens("us", 0.0) == 5.0
    bounded = Buckets(Rate(per_s=10.0, burst=5.0, bytes_per_token=1000, max_debt=3.0))
    bounded.charge("us", 0.0, 1_000_000)
    assert bounded.tokens("us", 0.0) == -3.0


def test_a_rate_of_zero_is_no_limit() -> None:
    buckets = Buckets(Rate(per_s=0.0, burst=1.0))
    buckets.charge("us", 0.0, 10**9)
    assert all(buckets.take("us", 0.0).allowed for _ in range(1000))


def test_a_clock_going_backwards_earns_nothing() -> None:
    buckets = Buckets(RATE)
    while buckets.take("us", 10.0).allowed:
        pass
    assert not buckets.take("us", 5.0).allowed


def test_one_report_in_flight_per_cluster_then_the_bucket() -> None:
    now = [0.0]
    limits = ReportLimits(Rate(per_s=1.0, burst=2.0, bytes_per_token=1000), clock=lambda: now[0])
    limits.admit("us")
    limits.admit("eu")  # another cluster is not held back
    with pytest.raises(Rejection) as second:
        limits.admit("us")
    assert second.value.status == 429
    assert second.value.extra["limit"] == "one report in flight per cluster"
    limits.done("us", size=3_500)  # 3 tokens more: the bucket is in debt
    with pytest.raises(Rejection) as broke:
        limits.admit("us")
    assert broke.value.extra["limit"] == "reports per second"
    assert broke.value.headers["Retry-After"] == "3"  # 2 - 1 - 3 = -2 tokens: 3 s to one
    assert broke.value.extra["retry_after_s"] == pytest.approx(3.0)
    now[0] = 3.0
    limits.admit("us")
