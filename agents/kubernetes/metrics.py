"""Prometheus metrics for the Kubernetes agent, read from counters the loops keep anyway."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from agents.agent import Agent
from agents.kubernetes.source import KubernetesSource


class AgentCollector(Collector):
    def __init__(self, agent: Agent, source: KubernetesSource) -> None:
        self.agent = agent
        self.source = source

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        informers = self.source.informers
        for field, help_text in (
            ("lists", "full lists (the first, and every relist after a 410)"),
            ("watches", "watch requests started"),
            ("events", "watch events applied"),
            ("bookmarks", "bookmarks received"),
            ("quiet", "watches that heard nothing for the read timeout (normal: watched again)"),
            ("expired", "410 Gone answers (each leads to a relist)"),
            ("errors", "failed requests and broken streams (each leads to a backoff)"),
            ("rejected", "objects skipped at translation (FQDN slices, malformed objects)"),
        ):
            family = CounterMetricFamily(
                f"globaldns_agent_watch_{field}", help_text, labels=["resource"]
            )
            for informer in informers:
                family.add_metric([informer.name], getattr(informer.stats, field))
            yield family
        yield CounterMetricFamily(
            "globaldns_agent_annotation_problems",
            "times a Service's globaldns.io annotations were found invalid (and ignored)",
            value=self.source.annotation_problems,
        )
        yield GaugeMetricFamily(
            "globaldns_agent_leader",
            "1 while this pod reports for its cluster (holding included)",
            value=1 if self.source.reporting() else 0,
        )
        yield GaugeMetricFamily(
            "globaldns_agent_holding",
            "1 while this pod holds its cluster's registry lease without reporting "
            "(its apiserver is out, or its watches have not resynced since)",
            value=1 if self.source.holding() else 0,
        )
        yield GaugeMetricFamily(
            "globaldns_agent_watches_stale",
            "watches that failed and have not resynced since",
            value=sum(i.stale_since is not None for i in informers),
        )
        reports = CounterMetricFamily(
            "globaldns_agent_reports", "reports the registry accepted", labels=["kind"]
        )
        reports.add_metric(["whole"], self.agent.whole_reports)
        reports.add_metric(["delta"], self.agent.deltas)
        yield reports
        yield CounterMetricFamily(
            "globaldns_agent_deltas_unchanged",
            "deltas not sent: the services named had not changed after all",
            value=self.agent.unchanged,
        )
        yield CounterMetricFamily(
            "globaldns_agent_resyncs",
            "doubts (409 resync, registry errors, a lost lease) answered with the whole state",
            value=self.agent.resyncs,
        )
        yield CounterMetricFamily(
            "globaldns_agent_reports_throttled",
            "reports the registry refused with 429 (over the cluster's report rate), sent "
            "again after its Retry-After",
            value=self.agent.throttled,
        )
        yield CounterMetricFamily(
            "globaldns_agent_heartbeats", "registry lease renewals", value=self.agent.heartbeats
        )
        yield CounterMetricFamily(
            "globaldns_agent_node_lease_renewals",
            "node Lease renewals",
            value=self.source.node_lease.renewals,
        )
        yield GaugeMetricFamily(
            "globaldns_agent_probe_targets",
            "endpoints this pod probes",
            value=sum(len(job.targets) for job in self.source.probe_jobs().values()),
        )
