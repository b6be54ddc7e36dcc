"""``globaldns export-zone``: read the registry once, the way the resolver does, and render it.

The snapshot is built exactly as the resolver's full load builds it (one consistent
:meth:`registry.store.Store.view`, leases judged against the Redis clock), and the zone
settings come from the same :class:`ResolverSettings` through the same
:func:`resolver.main.build_responder`, so the file agrees with what a resolver configured
by the same ``GLOBALDNS_*`` variables answers. The rendering is :mod:`resolver.zonefile`.
"""

from __future__ import annotations

import os
from pathlib import Path

from registry import connection
from registry import store as store_mod
from registry import topology as topology_mod
from registry.errors import ConfigError
from registry.topology import Topology
from resolver import state as states
from resolver import zonefile
from resolver.main import build_responder
from resolver.settings import ResolverSettings
from resolver.snapshot import Snapshot


async def load_snapshot(settings: ResolverSettings, topology: Topology) -> Snapshot:
    """The registry as a resolver's first full load sees it.

    Nothing is carried from an earlier snapshot (clusters missing from Redis, the
    endpoints last known good, spillover timers): there is none.
    """
    where = connection.target(settings.redis_url, settings)
    async with store_mod.opened(where, read_from=settings.redis_read_from) as store:
        view = await store.view()
    return states.build(
        view.clusters,
        generation=view.generation,
        sync_ms=view.now_ms,
        lease_ttl_ms=int(settings.lease_ttl_s * 1000),
        policies=view.policies,
        grants=topology.grants(),
    )


async def export(
    settings: ResolverSettings, *, region: str | None = None, topology: Topology | None = None
) -> str:
    """The zone file; services as a client in ``region`` (default: the topology's) gets them."""
    topology = topology or topology_mod.load(settings.topology)
    if region is None:
        region = topology.default_region
    elif region not in {r.name for r in topology.regions}:
        known = ", ".join(sorted(r.name for r in topology.regions))
        raise ConfigError(f"--region {region!r} is not a region of the topology ({known})")
    zone = build_responder(settings, topology).zone
    snapshot = await load_snapshot(settings, topology)
    return zonefile.render(snapshot, zone, regions=topology.regions, region=region)


def write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole: a server reloading it never sees half a file."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, encoding="ascii")
    os.replace(partial, path)
