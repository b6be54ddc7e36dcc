"""Where a client is, and how far regions are from each other: pure functions.

A client's address is matched against configured networks (longest prefix wins). The
lookup is a dict probe per configured prefix length, so its cost does not grow with the
number of networks. Regions are ordered by great-circle distance from the client's
region; ties break by name so that every resolver orders them the same way.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from registry.geography import distance_km, region_order
from registry.model import Region

__all__ = ["Location", "Locator", "distance_km", "region_order"]


@dataclass(frozen=True, slots=True)
class Location:
    """The region a client is placed in, and what placed it there."""

    region: str | None
    source: str
    prefix_len: int
    """Length of the configured network that matched (0: none did)."""
    cluster: str | None = None
    """The cluster the matched network belongs to, when it names one."""


GeoLookup = Callable[[str], tuple[float, float, int] | None]
"""An address's (latitude, longitude, prefix length), from a GeoIP database."""


class Locator:
    def __init__(
        self,
        networks: Iterable[tuple[str, str] | tuple[str, str, str | None]],
        default_region: str | None,
        *,
        geoip: GeoLookup | None = None,
        regions: Sequence[Region] = (),
    ) -> None:
        self.default_region = default_region
        self.geoip = geoip
        self.regions = tuple(regions)
        tables: dict[tuple[int, int], dict[int, tuple[str, str | None]]] = {}
        self._networks: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
        for network in networks:
            cidr, region = network[0], network[1]
            cluster = network[2] if len(network) > 2 else None
            net = ipaddress.ip_network(cidr, strict=True)
            bits = net.max_prefixlen
            key = int(net.network_address) >> (bits - net.prefixlen) if net.prefixlen else 0
            tables.setdefault((net.version, net.prefixlen), {})[key] = (region, cluster)
            self._networks[net.version].append((int(net.network_address), net.prefixlen))
        # Longest prefix first, per address family.
        self._order: dict[int, list[tuple[int, int, dict[int, tuple[str, str | None]]]]] = {
            4: [],
            6: [],
        }
        for (version, plen), table in sorted(tables.items(), key=lambda kv: -kv[0][1]):
            bits = 32 if version == 4 else 128
            self._order[version].append((plen, bits - plen, table))

    @staticmethod
    def _parse(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return None
        if ip.version == 6 and ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        return ip

    def locate(self, address: str, *, source: str = "source address") -> Location:
        ip = self._parse(address)
        if ip is None:
            return Location(self.default_region, "default (unparsable address)", 0)
        value = int(ip)
        for plen, shift, table in self._order[ip.version]:
            found = table.get(value >> shift if plen else 0)
            if found is not None:
                return Location(found[0], f"{source} in a configured /{plen}", plen, found[1])
        if self.geoip is not None and self.regions:
            place = self.geoip(str(ip))
            if place is not None:
                latitude, longitude, prefix = place
                here = Region(name="client", latitude=latitude, longitude=longitude)
                nearest = min(self.regions, key=lambda r: (distance_km(here, r), r.name))
                why = f"{source} in GeoIP /{prefix} at {latitude:.2f},{longitude:.2f}"
                return Location(nearest.name, why, prefix)
        return Location(self.default_region, "default region (no configured network)", 0)

    def scope(self, address: str, location: Location) -> int:
        """The shortest prefix of ``address`` whose every address is placed the same way.

        This is the ECS SCOPE PREFIX-LENGTH (RFC 7871): a resolver may reuse the answer
        for any client in that prefix. It is the matched network, narrowed just enough to
        exclude every configured network that would place some of its addresses elsewhere.
        """
        ip = self._parse(address)
        if ip is None:
            return 0
        width = ip.max_prefixlen
        value = int(ip)
        scope = location.prefix_len
        for network, plen in self._networks[ip.version]:
            if plen <= location.prefix_len:
                continue  # the match itself, or shorter ones it overrides
            common = width - (value ^ network).bit_length()
            if common < plen:  # the address is outside this network: split just before it
                scope = max(scope, common + 1)
        return min(scope, width)
