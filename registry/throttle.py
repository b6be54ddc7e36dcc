"""The report limits' shell: one report in flight per cluster, and a token bucket per
cluster (:mod:`registry.limits`), answered with a 429 that tells the agent when to come back.

Why both: an agent sends one report at a time, so a second one from the same cluster
while the first is being handled is a bug or an attack, and handling it would only
double what that cluster takes from the others — eight posters of whole states made
every other cluster's heartbeats wait for Redis past its deadline (issue #10, bug 7).
Refused at once, before the body is read, it costs almost nothing. The bucket then
bounds how often, and how much (its body's size), a cluster reports.

:func:`limited` wraps the report handler, so the handler itself knows nothing of this.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from registry.limits import Buckets, Rate
from registry.rejections import Rejection

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ReportLimits:
    def __init__(self, rate: Rate, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.buckets = Buckets(rate)
        self.clock = clock
        self.in_flight: set[str] = set()

    def admit(self, cluster: str) -> None:
        """Take the cluster's one slot and a token, or raise a 429 naming the limit."""
        if cluster in self.in_flight:
            raise self._refused(
                cluster,
                "one report in flight per cluster",
                f"cluster {cluster} has a report in flight: an agent sends one at a time",
                1.0,
            )
        verdict = self.buckets.take(cluster, self.clock())
        if not verdict.allowed:
            rate = self.buckets.rate
            raise self._refused(
                cluster,
                "reports per second",
                f"cluster {cluster} is over its report rate ({rate.per_s:g} a second, "
                f"{rate.burst:g} at once: GLOBALDNS_REPORT_RATE, GLOBALDNS_REPORT_BURST)",
                verdict.retry_after_s,
            )
        self.in_flight.add(cluster)

    def done(self, cluster: str, size: int) -> None:
        """The report was handled: free the slot, and charge its body's ``size``."""
        self.in_flight.discard(cluster)
        self.buckets.charge(cluster, self.clock(), size)

    @staticmethod
    def _refused(cluster: str, limit: str, message: str, wait: float) -> Rejection:
        return Rejection(
            429,
            "rate_limited",
            f"{message}; retry in {wait:.2f} s",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
            limit=limit,
            retry_after_s=math.ceil(wait * 1000) / 1000,  # never 0: rounded up to the ms
        )


REPORTS: web.AppKey[ReportLimits] = web.AppKey("report-limits", ReportLimits)


def limited(handler: Handler, cluster_of: Callable[[web.Request], str]) -> Handler:
    """``handler`` (``POST /v1/reports``) behind the limits of the caller's cluster."""

    async def limited_handler(request: web.Request) -> web.StreamResponse:
        cluster = cluster_of(request)  # an unknown token is refused as the handler would
        limits = request.app[REPORTS]
        limits.admit(cluster)
        try:
            return await handler(request)
        finally:
            limits.done(cluster, request.content.total_bytes)

    return limited_handler
