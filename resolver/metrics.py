"""Prometheus metrics for the resolver, read from counters the hot path keeps anyway.

The query path only increments plain dict counters (``Responder.stats``); this collector
turns them into metrics when Prometheus scrapes, so observability costs nothing per query.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from registry import keys
from resolver.outages import CAUSES
from resolver.respond import Responder
from resolver.sync import Follower

RCODES = ("noerror", "nxdomain", "refused", "formerr", "servfail", "notimp")
EVENTS = (
    "dropped",
    "truncated",
    "badvers",
    "notauth",
    "internal_error",
    "tcp_refused",
    "tcp_evicted",
    "tcp_write_timeout",
    "udp_recv_error",
    "udp_send_error",
)


class ResolverCollector(Collector):
    def __init__(self, responder: Responder, follower: Follower) -> None:
        self.responder = responder
        self.follower = follower

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        stats = self.responder.stats
        responses = CounterMetricFamily(
            "globaldns_resolver_responses", "DNS responses sent, by rcode", labels=["rcode"]
        )
        for rcode in RCODES:
            responses.add_metric([rcode], stats.get(rcode, 0))
        yield responses
        events = CounterMetricFamily(
            "globaldns_resolver_events", "unusual queries and socket errors", labels=["event"]
        )
        for event in EVENTS:
            events.add_metric([event], stats.get(event, 0))
        yield events
        fallback = CounterMetricFamily(
            "globaldns_resolver_all_unhealthy_answers",
            "answers given with no healthy endpoint left, by the service's choice",
            labels=["choice"],
        )
        for choice in ("last_known_good", "all", "none", "fenced_empty"):
            fallback.add_metric([choice], stats.get(f"all_unhealthy_{choice}", 0))
        yield fallback
        yield GaugeMetricFamily(
            "globaldns_resolver_services_all_unhealthy",
            "services with no healthy endpoint anywhere in the snapshot",
            value=len(self.responder.snapshot.unhealthy),
        )
        if self.responder.limiter is not None:
            rrl = CounterMetricFamily(
                "globaldns_resolver_rrl", "responses held back by rate limiting", labels=["action"]
            )
            for action, count in self.responder.limiter.stats.items():
                rrl.add_metric([action], count)
            yield rrl
        snap = self.responder.snapshot
        yield GaugeMetricFamily(
            "globaldns_resolver_snapshot_generation",
            "registry generation answered from",
            value=snap.generation,
        )
        yield GaugeMetricFamily(
            "globaldns_resolver_snapshot_services",
            "services in the snapshot",
            value=len(snap.services),
        )
        yield GaugeMetricFamily(
            "globaldns_resolver_live_clusters",
            "clusters whose lease is fresh",
            value=len(snap.live),
        )
        age = self.follower.age_s()
        yield GaugeMetricFamily(
            "globaldns_resolver_sync_age_seconds",
            "seconds since the last successful read of the registry (-1: never)",
            value=-1 if age is None else age,
        )
        yield CounterMetricFamily(
            "globaldns_resolver_sync_errors", "failed registry reads", value=self.follower.errors
        )
        yield CounterMetricFamily(
            "globaldns_resolver_sync_restarts",
            "times the sync task raised and was started again after a back-off",
            value=self.follower.failures,
        )
        bad = CounterMetricFamily(
            "globaldns_resolver_bad_records",
            "records read from Redis that could not be read and were skipped (the resolver "
            "kept what it held), by kind of key",
            labels=["key"],
        )
        counts = self.follower.store.bad_records.counts
        for pattern in (*keys.PATTERNS, "other"):
            bad.add_metric([pattern], counts.get(pattern, 0))
        yield bad
        ongoing = GaugeMetricFamily(
            "globaldns_resolver_control_plane_outage",
            "1 while leases are held because the control plane cannot take heartbeats, by cause",
            labels=["cause"],
        )
        held = {o.cause for o in self.follower.control.ongoing}
        for cause in CAUSES:
            ongoing.add_metric([cause], 1 if cause in held else 0)
        yield ongoing
        outages = CounterMetricFamily(
            "globaldns_resolver_control_plane_outages",
            "control-plane outages that ended (leases were forgiven for them), by cause",
            labels=["cause"],
        )
        for cause in CAUSES:
            outages.add_metric([cause], self.follower.outage_events[(cause, "ended")])
        yield outages
        state = self.follower.state
        yield GaugeMetricFamily(
            "globaldns_resolver_policy_conflicts",
            "services whose clusters (those that may set policy) annotate different policies; "
            "the first cluster by name wins (registry/grants.py)",
            value=len(state.conflicts),
        )
        yield GaugeMetricFamily(
            "globaldns_resolver_records_not_granted",
            "records held in Redis that their cluster may not export: not answered",
            value=len(state.not_granted),
        )
        yield CounterMetricFamily(
            "globaldns_resolver_reconciles",
            "full comparisons with the registry (start, periodic, after errors or a restart)",
            value=self.follower.reconciles,
        )
