"""The report rate limit's shell: one bucket per cluster (:mod:`registry.limits`), the
clock, and the 429 that tells an agent when to come back."""

from __future__ import annotations

import math
import time

from aiohttp import web

from registry.limits import Buckets
from registry.rejections import Rejection

REPORTS: web.AppKey[Buckets] = web.AppKey("report-buckets", Buckets)


def admit(request: web.Request, cluster: str) -> None:
    """Take a token for one report of ``cluster``, or refuse it with 429 before its body
    is read (a refused report costs nothing)."""
    buckets = request.app[REPORTS]
    verdict = buckets.take(cluster, time.monotonic())
    if verdict.allowed:
        return
    wait = verdict.retry_after_s
    raise Rejection(
        429,
        "rate_limited",
        f"cluster {cluster} is over its report rate ({buckets.rate.per_s:g} a second, "
        f"{buckets.rate.burst:g} at once: GLOBALDNS_REPORT_RATE, GLOBALDNS_REPORT_BURST); "
        f"retry in {wait:.2f} s",
        headers={"Retry-After": str(max(1, math.ceil(wait)))},
        limit="reports per second",
        retry_after_s=round(wait, 3),
    )


def charge(request: web.Request, cluster: str, size: int) -> None:
    """Charge an admitted report for its body: big ones make the next ones wait."""
    request.app[REPORTS].charge(cluster, time.monotonic(), size)
