"""The zone's own settings as the resolver packs them: apex, SOA, NS and their addresses."""

from __future__ import annotations

from dataclasses import dataclass, field


def labels_of(name: str) -> tuple[bytes, ...]:
    return tuple(part.encode("ascii").lower() for part in name.strip(".").split(".") if part)


@dataclass(frozen=True)
class Zone:
    name: str = "global.example.com"
    ttl: int = 5
    negative_ttl: int = 5
    nameservers: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """NS names; those inside the zone are answered with the listed addresses."""
    hostmaster: str = ""

    @property
    def labels(self) -> tuple[bytes, ...]:
        return labels_of(self.name)

    @property
    def ns_names(self) -> tuple[tuple[bytes, ...], ...]:
        names = self.nameservers or {f"ns1.{self.name}": ()}
        return tuple(labels_of(n) for n in names)

    def ns_addresses(self, relative: tuple[bytes, ...]) -> tuple[str, ...] | None:
        """Addresses of an in-zone nameserver named by ``relative`` labels, if it is one."""
        for name, addresses in self.nameservers.items():
            full = labels_of(name)
            if full[len(full) - len(self.labels) :] == self.labels and (
                full[: len(full) - len(self.labels)] == relative
            ):
                return addresses
        return None

    @property
    def rname(self) -> tuple[bytes, ...]:
        return labels_of(self.hostmaster) if self.hostmaster else (b"hostmaster", *self.labels)
