"""The snapshot written down as an RFC 1035 zone file: what the resolver would answer.

:func:`render` is a pure function of a snapshot, the zone's settings and the topology's
regions. The file holds

* the part every client gets alike: the SOA (serial = the registry generation, the same
  fields the resolver answers with), the apex NS records and the addresses of the
  nameservers inside the zone;
* for every service ``<service>.<namespace>``, the A and AAAA records a client placed in
  one chosen region gets, decided by the resolver's own code
  (:meth:`resolver.respond.Responder.decide`, i.e. the service's policy in
  :mod:`resolver.policy`), so the file and the server agree; a comment above each says
  which policy and why;
* for every cluster that reports a service, the pinned name
  ``<cluster>.<service>.<namespace>`` (the same for every client).

What a zone file cannot say, and how it is written instead:

* The resolver rotates the addresses and gives at most
  :data:`resolver.policy.MAX_ANSWERS` at a time; the file holds every address of the
  decision, in preference order.
* A name the resolver knows but has no address for (a service without endpoints, a
  pinned cluster with nothing healthy) is NODATA there; a name without records does not
  exist in a zone file (NXDOMAIN). It is written as a comment only.
* A name that is also an in-zone nameserver's is answered as the nameserver.
* ``weighted`` services: the answer depends on the client's /24 or /56, not only on its
  region; the file holds what the subnet 0 gets (as :meth:`Responder.decide` does).
* A clients' network may name its own cluster, whose endpoints it then gets first; the
  file is for a client placed in the region only.
* State a running resolver carries from snapshot to snapshot (the endpoints last known
  good, spillover hold timers) is not in a snapshot read once: the file is what a
  resolver that has just loaded the registry answers.
* ``_explain.<name>`` TXT is the resolver's diagnostic, not zone data.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from registry.model import Region
from resolver import policy
from resolver.geo import Locator
from resolver.respond import Located, Responder
from resolver.snapshot import Snapshot
from resolver.zone import Zone, labels_of

FAMILIES = ((4, "A"), (6, "AAAA"))
_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


def render(
    snapshot: Snapshot,
    zone: Zone,
    *,
    regions: Sequence[Region],
    region: str | None,
) -> str:
    """The zone file for ``snapshot`` as a client in ``region`` is answered."""
    responder = Responder(zone, Locator((), region), regions)
    responder.swap(snapshot)
    origin = zone.labels
    apex = _name(origin)
    soa = responder._soa()  # the very fields the resolver answers with
    lines = [
        f"; globaldns zone {apex} at registry generation {snapshot.generation}",
        f"; services as answered to a client in region {region or '(none)'}",
        f"$ORIGIN {apex}",
        _rr(
            apex,
            soa.minimum,  # the SOA's own TTL is its MINIMUM, as in answers.soa
            "SOA",
            f"{_name(soa.mname)} {_name(soa.rname)} {soa.serial & 0xFFFFFFFF} "
            f"{soa.refresh} {soa.retry} {soa.expire} {soa.minimum}",
        ),
    ]
    lines += [_rr(apex, zone.ttl, "NS", _name(ns)) for ns in zone.ns_names]
    written: set[tuple[bytes, ...]] = set()
    for ns_name in zone.nameservers:
        full = labels_of(ns_name)
        relative = full[: len(full) - len(origin)]
        # The resolver answers the apex as the apex, never as a nameserver's address.
        if full[len(full) - len(origin) :] != origin or not relative or full in written:
            continue
        written.add(full)
        for address in zone.ns_addresses(relative) or ():
            lines.append(_rr(_name(full), zone.ttl, _address_type(address), address))

    def owned(relative: str, decisions: list[tuple[str, policy.Decision]], ttl: int) -> None:
        full = (*labels_of(relative), *origin)
        if zone.ns_addresses(full[: len(full) - len(origin)]) is not None:
            lines.append(f"; {relative}: answered as the nameserver of that name")
            return
        records = []
        for rdtype, decision in decisions:
            lines.append(f"; {relative} {rdtype}: {decision.reason}")
            records += [_rr(_name(full), ttl, rdtype, a) for a in decision.addresses]
        if not records:
            lines.append(
                f"; {relative}: no address; the resolver answers NODATA, "
                "a zone file cannot hold an empty name"
            )
        lines.extend(records)

    for owner in sorted(snapshot.services):
        entry = snapshot.services[owner]
        lines += ["", f"; {owner}: policy {entry.policy.kind} ({entry.policy_source})"]
        if entry.policy.kind == "weighted":
            lines.append(f"; {owner}: weighted: as the client subnet 0 gets it")
        decided = []
        for family, rdtype in FAMILIES:
            decision = responder.decide(owner, family, region)
            assert decision is not None  # the owner comes from the snapshot
            decided.append((rdtype, decision))
        ttl = responder.ttl_of(entry)
        owned(owner, decided, ttl)
        for cluster in sorted(entry.clusters):
            pinned = [
                (rdtype, responder.decision(Located(owner, family, (), 0, 0, cluster), _ANY))
                for family, rdtype in FAMILIES
            ]
            owned(f"{cluster}.{owner}", pinned, ttl)
    return "\n".join(lines) + "\n"


_ANY = policy.Client()
"""Pinned names are the same for every client."""


def _name(labels: Sequence[bytes]) -> str:
    return ".".join(_label(label) for label in labels) + "."


def _label(label: bytes) -> str:
    """A label in master-file syntax: anything but letters, digits, - and _ as \\DDD."""
    return "".join(chr(b) if chr(b) in _PLAIN else f"\\{b:03d}" for b in label)


def _address_type(address: str) -> str:
    return "A" if ipaddress.ip_address(address).version == 4 else "AAAA"


def _rr(owner: str, ttl: int, rdtype: str, rdata: str) -> str:
    return f"{owner}\t{ttl}\tIN\t{rdtype}\t{rdata}"
