"""Health rules as a table: conditions, probe, lease and drain."""

from __future__ import annotations

import pytest

from registry import health
from registry.model import Conditions, Drain, Endpoint, ProbeState, Service
from registry.records import compact

NOW = 1_000_000
TTL = 6_000


@pytest.mark.parametrize(
    ("endpoint", "last_seen", "drain", "healthy", "reasons"),
    [
        (Endpoint(address="10.0.0.1"), NOW - 1000, None, True, ()),
        (Endpoint(address="10.0.0.1", conditions=Conditions(ready=None)), NOW, None, True, ()),
        (
            Endpoint(address="10.0.0.1", conditions=Conditions(ready=False)),
            NOW,
            None,
            False,
            ("not ready",),
        ),
        (
            Endpoint(address="10.0.0.1", probe=ProbeState(healthy=False, detail="refused")),
            NOW,
            None,
            False,
            ("probe failing: refused",),
        ),
        (Endpoint(address="10.0.0.1"), NOW - TTL, None, True, ()),
        (
            Endpoint(address="10.0.0.1"),
            NOW - TTL - 1,
            None,
            False,
            ("cluster lease stale: no heartbeat for over 6s",),
        ),
        (Endpoint(address="10.0.0.1"), 0, None, False, ("cluster lease: never seen",)),
        (
            Endpoint(address="10.0.0.1"),
            NOW,
            Drain(reason="upgrade"),
            False,
            ("cluster drained: upgrade",),
        ),
    ],
)
def test_verdicts(
    endpoint: Endpoint, last_seen: int, drain: Drain | None, healthy: bool, reasons: tuple[str, ...]
) -> None:
    problems = health.cluster_reasons(
        last_seen_ms=last_seen, now_ms=NOW, lease_ttl_ms=TTL, drain=drain
    )
    record = compact(Service(namespace="a", name="b", endpoints=(endpoint,))).endpoints[0]
    verdict = health.verdict(record, problems)
    assert (verdict.healthy, verdict.reasons) == (healthy, reasons)
