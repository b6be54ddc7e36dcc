"""Distances between regions: great-circle by default, a measured latency matrix if given.

Both the resolver (ordering regions for a client) and the registry (saying where a
drained region's clients will go) need the same order, so it lives in the kernel.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from registry.model import Region

EARTH_RADIUS_KM = 6371.0

Latency = Mapping[str, Mapping[str, float]]


def distance_km(a: Region, b: Region) -> float:
    """Great-circle distance (haversine)."""
    lat1, lon1, lat2, lon2 = map(math.radians, (a.latitude, a.longitude, b.latitude, b.longitude))
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def region_order(
    origin: str | None, regions: Sequence[Region], latency: Latency | None = None
) -> tuple[str, ...]:
    """Every region, nearest to ``origin`` first; by name when the origin is unknown.

    With a latency matrix, a measured ``latency[origin][region]`` (ms) orders the regions
    it covers, ahead of the ones it does not (which follow by distance).
    """
    by_name = {r.name: r for r in regions}
    start = by_name.get(origin) if origin else None
    if start is None:
        return tuple(sorted(by_name))
    measured = (latency or {}).get(start.name, {})

    def key(name: str) -> tuple[int, float, str]:
        if name == start.name:
            return (0, 0.0, name)
        if name in measured:
            return (1, float(measured[name]), name)
        return (2, distance_km(start, by_name[name]), name)

    return tuple(sorted(by_name, key=key))
