"""What a delta report carries: the services that really differ from what was acknowledged.

The agent remembers, per service, the :func:`registry.model.content_hash` of what the
registry last acknowledged (a whole state replaces the memory, a delta amends it). A
source names the services that *may* have changed; comparing hashes drops those that did
not (a watch event that touched only a resourceVersion, a probe flip undone before the
report went), and ``removed`` names only services the registry holds. Pure functions.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from registry.model import Service, content_hash

Hashes = Mapping[str, str]
"""``<namespace>/<name>`` → content hash, as acknowledged by the registry."""


@dataclass(frozen=True, slots=True)
class Delta:
    upserted: tuple[Service, ...]
    removed: tuple[str, ...]
    hashes: dict[str, str]
    """The hashes of ``upserted``."""

    @property
    def empty(self) -> bool:
        return not self.upserted and not self.removed


def hashes(services: Iterable[Service]) -> dict[str, str]:
    return {service.key: content_hash(service) for service in services}


def diff(acked: Hashes, current: Iterable[Service], keys: Collection[str] | None) -> Delta:
    """The delta from ``acked`` to ``current``.

    ``current`` is the state of ``keys`` (those of them that exist), or with ``keys``
    None the whole state: a key asked for (or acknowledged, for a whole state) that
    ``current`` lacks is removed.
    """
    upserted: list[Service] = []
    new: dict[str, str] = {}
    present: set[str] = set()
    for service in current:
        key = service.key
        present.add(key)
        digest = content_hash(service)
        if acked.get(key) != digest:
            upserted.append(service)
            new[key] = digest
    asked = acked.keys() if keys is None else keys
    removed = tuple(sorted(k for k in asked if k not in present and k in acked))
    return Delta(tuple(upserted), removed, new)


def amend(acked: dict[str, str], delta: Delta) -> None:
    """Record that the registry acknowledged ``delta``."""
    acked.update(delta.hashes)
    for key in delta.removed:
        acked.pop(key, None)
