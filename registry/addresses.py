"""Which addresses an endpoint may have: one judge for the registry, the agents and readers.

An endpoint's address is given out in DNS answers to every client of the service, so it
must be a unicast address that means the same thing wherever the answer lands:

* no zone index (``fe80::1%eth0``): it names an interface of one host, means nothing on
  another, and is not an AAAA record at all (the resolver could not pack it, and a zone
  file holding it does not load);
* no IPv4-mapped (``::ffff:a.b.c.d``) or IPv4-compatible (``::a.b.c.d``) IPv6 address:
  they are IPv4 addresses in disguise and would slip a forbidden one past the checks
  below (``::ffff:169.254.169.254`` is the cloud metadata service), so both forms are
  refused outright; an IPv4 endpoint is written as IPv4;
* no 6to4 (``2002::/16``), Teredo (``2001::/32``) or NAT64 (``64:ff9b::/96``) address
  whose embedded IPv4 address is itself forbidden: a relay or translator would carry the
  traffic to it;
* nothing that is not unicast to a reachable host: unspecified (``0.0.0.0/8``, ``::``),
  link-local (``169.254.0.0/16``, ``fe80::/10``), deprecated site-local (``fec0::/10``),
  multicast, the limited broadcast ``255.255.255.255``, the reserved ``240.0.0.0/4``,
  the discard prefix ``100::/64``, and IPv6 outside the global unicast (``2000::/3``),
  unique local (``fc00::/7``) and NAT64 (``64:ff9b::/96``, ``64:ff9b:1::/48``) ranges;
* loopback (``127.0.0.0/8``, ``::1``) only where the caller allows it: dev mode's
  simulated endpoints are loopback listeners, a real registry refuses them
  (``GLOBALDNS_ALLOW_LOOPBACK_ENDPOINTS``).

Private (RFC 1918, unique local), shared (``100.64.0.0/10``, used for pod networks) and
documentation ranges are accepted: they are what clusters use. A subnet's own broadcast
address (``10.0.0.255`` in a /24) cannot be told from a host without the prefix, which
an endpoint does not carry; it is accepted.
"""

from __future__ import annotations

import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network

_FORBIDDEN_V4: tuple[tuple[ipaddress.IPv4Network, str], ...] = (
    (_V4("255.255.255.255/32"), "the limited broadcast address"),
    (_V4("0.0.0.0/8"), "an unspecified ('this network') address"),
    (_V4("169.254.0.0/16"), "a link-local address"),
    (_V4("224.0.0.0/4"), "a multicast address"),
    (_V4("240.0.0.0/4"), "a reserved address"),
)
_LOOPBACK_V4 = _V4("127.0.0.0/8")

_IPV6_RANGES: tuple[ipaddress.IPv6Network, ...] = (
    _V6("2000::/3"),  # global unicast
    _V6("fc00::/7"),  # unique local
    _V6("64:ff9b::/96"),  # NAT64, well-known prefix (RFC 6052)
    _V6("64:ff9b:1::/48"),  # NAT64, local use (RFC 8215)
)
_FORBIDDEN_V6: tuple[tuple[ipaddress.IPv6Network, str], ...] = (
    (_V6("::ffff:0:0/96"), "an IPv4-mapped IPv6 address: write the IPv4 address itself"),
    (_V6("fe80::/10"), "a link-local address"),
    (_V6("fec0::/10"), "a site-local address (deprecated, RFC 3879)"),
    (_V6("ff00::/8"), "a multicast address"),
    (_V6("100::/64"), "a discard-only address (RFC 6666)"),
)
_NAT64 = _V6("64:ff9b::/96")


def parse(value: str) -> IPAddress:
    """The address ``value`` names; ValueError (saying so) when it names none."""
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an IPv4 or IPv6 address") from None


def problem(ip: IPAddress, *, loopback: bool) -> str | None:
    """Why ``ip`` cannot be an endpoint's address, or None when it can.

    ``loopback``: whether loopback addresses are allowed (dev mode, tests).
    """
    if isinstance(ip, ipaddress.IPv4Address):
        why = _v4_problem(ip, loopback=loopback)
        return why + _LOOPBACK_HINT if why == _LOOPBACK else why
    if ip.scope_id is not None:
        return "an IPv6 address with a zone index (%...): it names one host's interface"
    if ip.is_unspecified:
        return "the unspecified address"
    if ip.is_loopback:
        return None if loopback else _LOOPBACK + _LOOPBACK_HINT
    if ip.ipv4_mapped is not None:
        return _FORBIDDEN_V6[0][1]
    if int(ip) >> 32 == 0:
        return "an IPv4-compatible IPv6 address (deprecated): write the IPv4 address itself"
    for network, why in _FORBIDDEN_V6:
        if ip in network:
            return why
    if not any(ip in network for network in _IPV6_RANGES):
        return "a reserved IPv6 address (outside global unicast, unique local and NAT64)"
    embedded = _embedded_v4(ip)
    if embedded is not None:
        hidden = _v4_problem(embedded, loopback=False)
        if hidden is not None:
            return f"an IPv6 address that embeds {embedded}, {hidden}"
    return None


def _v4_problem(ip: ipaddress.IPv4Address, *, loopback: bool) -> str | None:
    if ip in _LOOPBACK_V4:
        return None if loopback else _LOOPBACK
    for network, why in _FORBIDDEN_V4:
        if ip in network:
            return why
    return None


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address a 6to4, Teredo (its client) or NAT64 address carries traffic to."""
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


_LOOPBACK = "a loopback address"
_LOOPBACK_HINT = " (admitted only where the registry sets GLOBALDNS_ALLOW_LOOPBACK_ENDPOINTS)"


def check(value: str, *, loopback: bool) -> str:
    """``value`` in canonical form if an endpoint (or a nameserver of the zone) may have
    it; ValueError saying why not."""
    ip = parse(value)
    why = problem(ip, loopback=loopback)
    if why is not None:
        raise ValueError(f"{value} is {why}, not an address to give out in DNS answers")
    return ip.compressed
