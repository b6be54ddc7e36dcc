"""The report schedule as a pure state machine, driven by a fake clock (no sockets, no sleeps).

Each test plays the agent's shell: it feeds events at chosen times and checks the action
the schedule asks for. ``Run`` keeps the clock, the state and the last action.
"""

from __future__ import annotations

import itertools
import math
import random

import pytest

from agents import schedule
from agents.schedule import (
    Active,
    Changed,
    Failed,
    Lost,
    Renewed,
    Reported,
    Resync,
    SendDelta,
    SendHeartbeat,
    SendWhole,
    Stale,
    Throttled,
    Tick,
    Unchanged,
    Wait,
)

TIMING = schedule.Timing(
    heartbeat_interval_s=2.0,
    coalesce_s=0.02,
    min_report_interval_s=0.05,
    backoff_first_s=0.2,
    backoff_max_s=5.0,
    backoff_store_max_s=1.0,
    backoff_refused_max_s=30.0,
)


class Run:
    def __init__(self, *, seed: int = 0) -> None:
        self.now = 100.0
        self.state = schedule.State()
        self.rng = random.Random(seed)
        self.action: schedule.Action = Wait(math.inf)

    def feed(self, event: schedule.Event, at: float | None = None) -> schedule.Action:
        if at is not None:
            assert at >= self.now
            self.now = at
        self.state, self.action = schedule.step(
            self.state, event, now=self.now, timing=TIMING, rng=self.rng
        )
        return self.action

    def tick(self, at: float) -> schedule.Action:
        return self.feed(Tick(), at)

    def until_call(self) -> schedule.Action:
        """Follow the waits until a call is due (as the shell's loop does)."""
        for _ in range(100):
            if not isinstance(self.action, Wait):
                return self.action
            assert math.isfinite(self.action.until), "waiting for an event that never comes"
            self.tick(self.action.until)
        raise AssertionError("no call within 100 waits")

    def change(self, *keys: str, at: float | None = None, observed_ms: int = 1) -> None:
        self.feed(Changed(frozenset(keys), observed_ms=observed_ms), at)

    def synced(self, seq: int = 10) -> None:
        """Active, the whole state sent and acknowledged as ``seq``."""
        self.feed(Active(True))
        assert isinstance(self.until_call(), SendWhole)
        self.feed(Reported(seq))


def test_inactive_agent_only_waits_and_looks_again() -> None:
    run = Run()
    action = run.feed(Changed(frozenset({"ns/a"}), observed_ms=1))
    assert action == Wait(run.now + TIMING.heartbeat_interval_s)
    assert not run.state.pending


def test_whole_state_first_after_becoming_active() -> None:
    run = Run()
    start = run.now
    assert run.feed(Active(True)) == Wait(start + TIMING.coalesce_s)
    call = run.tick(start + TIMING.coalesce_s)
    assert call == SendWhole(min_seq=1, observed_ms=None)
    assert run.state.in_flight == call
    # While the call is out, nothing else is asked for.
    assert run.feed(Changed(frozenset({"ns/a"}), observed_ms=5)) == Wait(math.inf)


def test_deltas_after_the_whole_state_name_the_acknowledged_seq() -> None:
    run = Run()
    run.synced(seq=10)
    assert run.state.acked_seq == 10 and not run.state.need_full
    run.change("ns/a", observed_ms=1234)
    call = run.until_call()
    assert call == SendDelta(min_seq=11, base_seq=10, keys=frozenset({"ns/a"}), observed_ms=1234)
    run.feed(Reported(15))
    run.change("ns/b")
    call = run.until_call()
    assert isinstance(call, SendDelta) and call.base_seq == 15 and call.min_seq == 16


def test_anything_changed_is_a_delta_over_every_service_not_a_whole_state() -> None:
    run = Run()
    run.synced()
    run.feed(Changed(None, observed_ms=7))
    call = run.until_call()
    assert call == SendDelta(min_seq=11, base_seq=10, keys=None, observed_ms=7)


def test_a_burst_is_coalesced_into_one_delta_with_the_oldest_observation() -> None:
    run = Run()
    run.synced()
    first = run.now + 1.0
    run.change("ns/a", at=first, observed_ms=500)
    assert run.action == Wait(first + TIMING.coalesce_s)
    run.change("ns/b", at=first + 0.005, observed_ms=505)
    run.change("ns/a", "ns/c", at=first + 0.010, observed_ms=510)
    # Later changes do not push the report back: it goes coalesce_s after the first.
    assert run.action == Wait(first + TIMING.coalesce_s)
    call = run.tick(first + TIMING.coalesce_s)
    assert call == SendDelta(
        min_seq=11, base_seq=10, keys=frozenset({"ns/a", "ns/b", "ns/c"}), observed_ms=500
    )


def test_reports_are_at_least_the_minimum_interval_apart() -> None:
    run = Run()
    run.synced()
    run.change("ns/a", at=run.now + 1.0)
    call = run.until_call()
    sent = run.now
    assert isinstance(call, SendDelta)
    # A change while the delta is out waits for its answer, then for the interval.
    run.change("ns/b", at=sent + 0.001, observed_ms=9)
    run.feed(Reported(11), at=sent + 0.002)
    assert run.action == Wait(sent + TIMING.min_report_interval_s)
    call = run.tick(sent + TIMING.min_report_interval_s)
    assert call == SendDelta(min_seq=12, base_seq=11, keys=frozenset({"ns/b"}), observed_ms=9)


def test_an_empty_delta_changes_nothing_but_the_call_in_flight() -> None:
    run = Run()
    run.synced()
    renewed = run.state.renewed_at
    run.change("ns/a", at=run.now + 0.5)
    run.until_call()
    run.feed(Unchanged())
    assert run.state.in_flight is None and run.state.acked_seq == 10
    assert run.action == Wait(renewed + TIMING.heartbeat_interval_s)


def test_heartbeats_when_nothing_changes_and_a_report_renews_the_lease() -> None:
    run = Run()
    run.synced()
    synced_at = run.now
    assert run.action == Wait(synced_at + TIMING.heartbeat_interval_s)
    call = run.tick(synced_at + TIMING.heartbeat_interval_s)
    assert call == SendHeartbeat(seq=10)
    run.feed(Renewed())
    assert run.action == Wait(run.now + TIMING.heartbeat_interval_s)
    # A delta renews the lease too: the next heartbeat counts from it.
    run.change("ns/a", at=run.now + 1.0)
    run.until_call()
    run.feed(Reported(11))
    assert run.action == Wait(run.now + TIMING.heartbeat_interval_s)
    assert run.tick(run.now + TIMING.heartbeat_interval_s) == SendHeartbeat(seq=11)


def test_409_resync_on_a_delta_sends_the_whole_state_with_the_lost_changes() -> None:
    run = Run()
    run.synced()
    run.change("ns/a", at=run.now + 1.0, observed_ms=777)
    call = run.until_call()
    assert isinstance(call, SendDelta)
    run.feed(Resync(seq=11, stored_seq=3))
    call = run.until_call()
    assert call == SendWhole(min_seq=12, observed_ms=777)
    run.feed(Reported(12))
    assert not run.state.need_full and run.state.acked_seq == 12
    run.change("ns/b", at=run.now + 1.0)
    assert isinstance(run.until_call(), SendDelta)


def test_stale_seq_jumps_past_the_stored_one_then_sends_the_whole_state() -> None:
    run = Run()
    run.feed(Active(True))
    call = run.until_call()
    sent = run.now
    assert call == SendWhole(min_seq=1, observed_ms=None)
    run.feed(Stale(seq=5, stored_seq=9_000))
    # No back-off: the registry answered, it only holds a newer seq (our previous run).
    assert run.action == Wait(sent + TIMING.min_report_interval_s)
    assert run.until_call() == SendWhole(min_seq=9_001, observed_ms=None)


def test_stale_delta_also_means_whole_state() -> None:
    run = Run()
    run.synced()
    run.change("ns/a", at=run.now + 1.0)
    run.until_call()
    run.feed(Stale(seq=11, stored_seq=50))
    assert run.until_call() == SendWhole(min_seq=51, observed_ms=1)


@pytest.mark.parametrize(
    ("refused", "store", "cap"),
    [
        (False, False, TIMING.backoff_max_s),  # no answer: the registry may be down
        (True, False, TIMING.backoff_refused_max_s),  # 4xx: our configuration is wrong
        (False, True, TIMING.backoff_store_max_s),  # 503: its Redis is failing over
    ],
)
def test_errors_back_off_with_jitter_then_send_the_whole_state(
    refused: bool, store: bool, cap: float
) -> None:
    run = Run(seed=7)
    run.synced()
    run.change("ns/a", at=run.now + 1.0, observed_ms=42)
    run.until_call()
    steps = []
    for _ in range(12):
        failed_at = run.now
        run.feed(Failed(refused=refused, seq=run.state.seq + 1, store=store))
        assert isinstance(run.action, Wait)
        steps.append(run.state.backoff_s)
        wait = run.action.until - failed_at
        assert 0.5 * run.state.backoff_s <= wait <= 1.5 * run.state.backoff_s
        call = run.until_call()
        # Whatever was in flight, the next call is the whole state, with the lost change.
        assert call == SendWhole(min_seq=run.state.seq + 1, observed_ms=42)
    assert steps[:3] == [0.2, 0.4, 0.8]
    assert steps[-1] == cap and max(steps) == cap
    run.feed(Reported(run.state.seq + 1))
    assert run.state.backoff_s == 0 and not run.state.need_full


def test_the_back_off_is_jittered_by_the_rng_given() -> None:
    waits = set()
    for seed in range(5):
        run = Run(seed=seed)
        run.synced()
        failed_at = run.now + 1.0
        run.tick(failed_at)
        run.feed(Failed(), at=failed_at)
        assert isinstance(run.action, Wait)
        waits.add(run.action.until - failed_at)
    assert len(waits) == 5


def test_a_failed_heartbeat_backs_off_then_sends_the_whole_state() -> None:
    run = Run()
    run.synced()
    assert run.tick(run.now + TIMING.heartbeat_interval_s) == SendHeartbeat(seq=10)
    run.feed(Failed())
    call = run.until_call()
    assert call == SendWhole(min_seq=11, observed_ms=None)


def test_heartbeat_409_means_the_registry_lost_our_report_whole_state_at_once() -> None:
    run = Run()
    run.synced()
    assert run.tick(run.now + TIMING.heartbeat_interval_s) == SendHeartbeat(seq=10)
    lost_at = run.now
    run.feed(Lost())
    assert run.action == Wait(lost_at + TIMING.coalesce_s)
    assert run.until_call() == SendWhole(min_seq=11, observed_ms=None)


def test_leadership_lost_then_regained_starts_again_from_a_whole_state() -> None:
    run = Run()
    run.synced()
    run.change("ns/a", at=run.now + 1.0)
    run.feed(Active(False))
    assert not run.state.pending and run.state.need_full
    assert run.action == Wait(run.now + TIMING.heartbeat_interval_s)
    # No heartbeats and no reports while another pod reports for the cluster.
    assert run.tick(run.now + 10 * TIMING.heartbeat_interval_s) == Wait(
        run.now + TIMING.heartbeat_interval_s
    )
    run.feed(Active(True))
    call = run.until_call()
    assert call == SendWhole(min_seq=11, observed_ms=None)


def test_changes_while_the_whole_state_is_out_follow_as_a_delta() -> None:
    run = Run()
    run.feed(Active(True))
    run.until_call()
    run.change("ns/a", observed_ms=3)
    run.feed(Reported(10))
    call = run.until_call()
    assert call == SendDelta(min_seq=11, base_seq=10, keys=frozenset({"ns/a"}), observed_ms=3)


# -- holding: an apiserver outage (agents.kubernetes.outage) ------------------------------


def test_holding_renews_the_lease_and_sends_no_report() -> None:
    run = Run()
    run.synced(seq=10)
    run.feed(schedule.Holding(True))
    run.change("ns/a", at=run.now + 0.5)
    run.feed(Changed(None, observed_ms=3))
    beats = 0
    for _ in range(5):  # heartbeats on the acknowledged seq, on time; nothing else
        call = run.until_call()
        assert call == SendHeartbeat(seq=10)
        assert run.now == run.state.renewed_at + TIMING.heartbeat_interval_s
        run.feed(Renewed())
        beats += 1
    assert beats == 5
    # Fresh again: every service is compared with what was acknowledged.
    run.feed(schedule.Holding(False))
    call = run.until_call()
    assert isinstance(call, SendDelta) and call.keys is None and call.base_seq == 10


def test_a_failed_heartbeat_while_holding_backs_off_and_keeps_holding() -> None:
    run = Run()
    run.synced(seq=10)
    run.feed(schedule.Holding(True))
    assert run.until_call() == SendHeartbeat(seq=10)
    failed_at = run.now
    run.feed(Failed())  # the registry is unreachable too: it changes nothing it holds
    assert isinstance(run.action, Wait) and run.action.until > failed_at
    assert run.until_call() == SendHeartbeat(seq=10)


def test_a_refused_heartbeat_while_holding_ends_the_heartbeats() -> None:
    """409: another reporter wrote (a new leader took over) or the registry lost our
    report; a hold never sends a whole state, so it waits for fresh caches."""
    run = Run()
    run.synced(seq=10)
    run.feed(schedule.Holding(True))
    assert run.until_call() == SendHeartbeat(seq=10)
    assert run.feed(Lost()) == Wait(math.inf)
    assert run.tick(run.now + 60) == Wait(math.inf)
    run.feed(schedule.Holding(False))
    assert isinstance(run.until_call(), SendWhole)


def test_a_new_leader_holding_sends_nothing_until_fresh() -> None:
    run = Run()
    run.feed(Active(True))
    assert run.feed(schedule.Holding(True)) == Wait(math.inf)  # nothing acknowledged yet
    run.change("ns/a", at=run.now + 5)
    assert run.action == Wait(math.inf)
    run.feed(schedule.Holding(False))
    assert isinstance(run.until_call(), SendWhole)


def test_holding_ends_with_the_activity() -> None:
    run = Run()
    run.synced()
    run.feed(schedule.Holding(True))
    run.feed(Active(False))
    assert not run.state.holding and not run.state.active


def test_holding_sends_its_own_probe_verdicts_as_deltas() -> None:
    """The node-local probes still run: what they find goes out; the source's changes
    (a stale cache's) wait for the hold to end."""
    run = Run()
    run.synced(seq=10)
    run.feed(schedule.Holding(True))
    run.change("ns/source", at=run.now + 0.5)
    assert run.until_call() == SendHeartbeat(seq=10)
    run.feed(Renewed())
    run.feed(Changed(frozenset({"ns/probed"}), observed_ms=7, probed=True))
    call = run.until_call()
    assert isinstance(call, SendDelta)
    assert call.keys == frozenset({"ns/probed"}) and call.base_seq == 10
    run.feed(Reported(11))
    assert run.until_call() == SendHeartbeat(seq=11)
    run.feed(Renewed())
    run.feed(schedule.Holding(False))
    call = run.until_call()
    assert isinstance(call, SendDelta) and call.keys is None and call.base_seq == 11


def test_a_failed_probe_delta_while_holding_asks_whether_it_landed() -> None:
    run = Run()
    run.synced(seq=10)
    run.feed(schedule.Holding(True))
    run.feed(Changed(frozenset({"ns/a"}), observed_ms=7, probed=True))
    call = run.until_call()
    assert isinstance(call, SendDelta)
    run.feed(Failed(seq=11))
    # It landed: the heartbeat on its seq is accepted, and it becomes the base.
    assert run.until_call() == SendHeartbeat(seq=11)
    run.feed(Renewed())
    assert run.state.acked_seq == 11 and run.state.holding and not run.state.need_full
    call = run.until_call()  # its services are compared again (nothing may differ)
    assert isinstance(call, SendDelta) and call.base_seq == 11
    assert call.keys == frozenset({"ns/a"})


def test_a_failed_probe_delta_that_did_not_land_is_sent_again() -> None:
    run = Run()
    run.synced(seq=10)
    run.feed(schedule.Holding(True))
    run.feed(Changed(frozenset({"ns/a"}), observed_ms=7, probed=True))
    assert isinstance(run.until_call(), SendDelta)
    run.feed(Failed(seq=11))
    assert run.until_call() == SendHeartbeat(seq=11)
    run.feed(Lost())  # the registry does not hold 11
    call = run.until_call()
    assert isinstance(call, SendDelta)
    assert call.base_seq == 10 and call.keys == frozenset({"ns/a"}) and call.min_seq == 12
    run.feed(Reported(12))
    assert run.until_call() == SendHeartbeat(seq=12)


def test_a_probe_delta_refused_while_holding_ends_the_heartbeats() -> None:
    """409 resync: another reporter wrote, or the registry lost our report."""
    run = Run()
    run.synced(seq=10)
    run.feed(schedule.Holding(True))
    run.feed(Changed(frozenset({"ns/a"}), observed_ms=7, probed=True))
    assert isinstance(run.until_call(), SendDelta)
    assert run.feed(Resync(11)) == Wait(math.inf)
    run.feed(schedule.Holding(False))
    assert isinstance(run.until_call(), SendWhole)


def test_a_throttled_delta_is_sent_again_on_its_base_after_the_wait_heartbeats_go_on() -> None:
    run = Run()
    run.synced(seq=10)
    run.change("ns/a", at=run.now + 1.9, observed_ms=42)
    assert isinstance(run.until_call(), SendDelta)
    refused = run.now
    # 429: nothing was written, nothing is in doubt: no whole state, no back-off.
    run.feed(Throttled(retry_after_s=5.0))
    assert not run.state.need_full and run.state.acked_seq == 10
    assert run.state.pending == frozenset({"ns/a"}) and run.state.backoff_s == 0
    # The lease falls due while the reports wait: it is renewed every interval.
    run.change("ns/b", observed_ms=99)
    beats: list[float] = []
    while isinstance(call := run.until_call(), SendHeartbeat):
        beats.append(run.now)
        run.feed(Renewed())
    assert len(beats) == 3 and beats[-1] < refused + 5.0
    assert [b - a for a, b in itertools.pairwise(beats)] == pytest.approx([2.0, 2.0])
    assert run.now == pytest.approx(refused + 5.0)
    assert call == SendDelta(
        min_seq=11, base_seq=10, keys=frozenset({"ns/a", "ns/b"}), observed_ms=42
    )


def test_a_throttled_whole_state_stays_whole_and_waits() -> None:
    run = Run()
    run.feed(Active(True))
    call = run.until_call()
    assert isinstance(call, SendWhole)
    refused = run.now
    run.feed(Throttled(retry_after_s=0.5))
    # Nothing acknowledged yet: no lease of ours to renew, only the wait.
    assert run.action == Wait(refused + 0.5)
    assert isinstance(run.until_call(), SendWhole) and run.now == pytest.approx(refused + 0.5)


def test_a_registry_asking_for_an_hour_is_retried_within_the_refused_back_off() -> None:
    run = Run()
    run.synced()
    run.change("ns/a", at=run.now + 1.0)
    run.until_call()
    refused = run.now
    run.feed(Throttled(retry_after_s=3600.0))
    assert run.state.reports_at == pytest.approx(refused + TIMING.backoff_refused_max_s)


def test_a_throttled_heartbeat_waits_and_keeps_the_state() -> None:
    run = Run()
    run.synced(seq=10)
    assert run.until_call() == SendHeartbeat(seq=10)
    refused = run.now
    run.feed(Throttled(retry_after_s=1.5))
    assert not run.state.need_full and run.state.acked_seq == 10
    assert run.action == Wait(refused + 1.5)
    assert run.until_call() == SendHeartbeat(seq=10)
