"""Addresses no registry admits today, found in Redis (stored by an older version, or
written around the API): the resolver and ``export-zone`` leave out those endpoints and
keep answering with the others, over real sockets, read by dnspython.

Before: one ``2001:db8::66%x`` made every AAAA answer of its service SERVFAIL (it cannot
be packed) and the exported zone did not load; and one endpoint the reader's model
refused (``fe80::1%eth0`` here) took the whole record out of the answers (NXDOMAIN).
"""

from __future__ import annotations

import dns.rcode
import dns.zone

from registry import store as store_mod
from registry.model import Conditions, Endpoint, Report, Service
from tests.helpers import ZONE, addresses, aquery, resolver
from tests.resolver.test_knot import LEASE_TTL_S, export_zone

NAME = f"api.production.{ZONE}."
GOOD = ("10.1.0.1", "2001:db8::1")
BAD = ("2001:db8::66%x", "::ffff:169.254.169.254", "::ffff:10.1.0.9", "fe80::1%eth0")


async def store_unvalidated(redis_url: str) -> None:
    """What an older registry stored: records built without validation."""
    endpoints = tuple(
        Endpoint.model_construct(
            address=a, node=None, conditions=Conditions(ready=True), probe=None, ports=None
        )
        for a in (*BAD[:2], *GOOD, *BAD[2:])
    )
    service = Service.model_construct(
        namespace="production", name="api", ports=(), endpoints=endpoints, ttl=None, policy=None
    )
    report = Report.model_construct(
        cluster=None, seq=1, base_seq=None, services=(service,), removed=(), observed_ms=None
    )
    async with store_mod.opened(redis_url) as store:
        await store.write_report("us-east-prod", "us-east-1", report)


async def test_the_resolver_answers_with_the_endpoints_it_can_give(redis_url: str) -> None:
    await store_unvalidated(redis_url)
    async with resolver(redis_url, lease_ttl_s=LEASE_TTL_S, rrl_rate=0) as bound:
        for tcp in (False, True):
            aaaa = await aquery(bound.dns_port, NAME, "AAAA", tcp=tcp)
            assert aaaa.rcode() == dns.rcode.NOERROR
            assert addresses(aaaa) == ["2001:db8::1"]
            a = await aquery(bound.dns_port, NAME, "A", tcp=tcp)
            assert a.rcode() == dns.rcode.NOERROR
            assert addresses(a) == ["10.1.0.1"]
            pinned = await aquery(bound.dns_port, f"us-east-prod.{NAME}", "AAAA", tcp=tcp)
            assert addresses(pinned) == ["2001:db8::1"]


async def test_the_exported_zone_loads_and_holds_only_what_can_be_given(redis_url: str) -> None:
    await store_unvalidated(redis_url)
    text = await export_zone(redis_url)
    zone = dns.zone.from_text(text, origin=ZONE, relativize=False)
    for owner in (NAME, f"us-east-prod.{NAME}"):
        aaaa = zone.get_rdataset(owner, "AAAA")
        a = zone.get_rdataset(owner, "A")
        assert aaaa is not None and {rr.to_text() for rr in aaaa} == {"2001:db8::1"}
        assert a is not None and {rr.to_text() for rr in a} == {"10.1.0.1"}
    assert not any(bad in text for bad in BAD)
