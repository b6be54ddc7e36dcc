"""Response rate limiting for UDP: token buckets per client netblock and response kind.

The scheme is BIND's and NSD's (see the conformance notes, section 5): every response is
charged to an account keyed by the client's netblock (/24 for IPv4, /56 for IPv6), the
kind of response, and the name — the qname and type for answers, the zone for NXDOMAIN
and NODATA (so a random-subdomain flood is one account, not millions), nothing for
errors. An account earns ``rate`` tokens a second, holds at most ``rate``, and may fall
to ``-window * rate``, so a flooding source recovers about ``window`` seconds after it
stops. A limited response is dropped, except every ``slip``-th, which goes out as a
tiny TC=1 reply that sends a real client to TCP (TCP is never limited). Errors cannot be
truncated usefully, so they "leak" whole at the slip rate.

The table is bounded: when it is full the least recently used account is evicted (a
flood of spoofed sources must not make us refuse to track new ones). Time comes in as an
argument, so tests run on a fake clock.
"""

from __future__ import annotations

import ipaddress
import socket
from collections import OrderedDict
from dataclasses import dataclass, field
from enum import Enum


class Action(Enum):
    SEND = "send"
    SLIP = "slip"
    DROP = "drop"


@dataclass(frozen=True)
class RrlConfig:
    rate: float = 100.0
    """Responses a second per account; 0 turns rate limiting off."""
    window: float = 15.0
    slip: int = 2
    ipv4_prefix: int = 24
    ipv6_prefix: int = 56
    table_size: int = 100_000
    log_only: bool = False
    exempt: tuple[str, ...] = ()
    """Client networks never limited (the CoreDNS of your own clusters, monitoring)."""


@dataclass(slots=True)
class _Account:
    balance: float
    last: float
    limited: int = 0


@dataclass
class RateLimiter:
    config: RrlConfig
    accounts: OrderedDict[tuple[int, int, str, bytes], _Account] = field(
        default_factory=OrderedDict
    )
    stats: dict[str, int] = field(
        default_factory=lambda: {"slipped": 0, "dropped": 0, "would_limit": 0, "evicted": 0}
    )

    def __post_init__(self) -> None:
        self._exempt = tuple(ipaddress.ip_network(n) for n in self.config.exempt)
        self._shift = {4: 32 - self.config.ipv4_prefix, 6: 128 - self.config.ipv6_prefix}

    def _netblock(self, client: str) -> tuple[int, int] | None:
        try:
            if ":" in client:
                return 6, int.from_bytes(socket.inet_pton(socket.AF_INET6, client)) >> self._shift[
                    6
                ]
            return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, client)) >> self._shift[4]
        except OSError:
            return None

    def exempt(self, client: str) -> bool:
        if not self._exempt:
            return False
        try:
            ip = ipaddress.ip_address(client)
        except ValueError:
            return False
        return any(ip in network for network in self._exempt)

    def check(self, client: str, kind: str, name: bytes, now: float) -> Action:
        rate = self.config.rate
        if rate <= 0:
            return Action.SEND
        block = self._netblock(client)
        if block is None or self.exempt(client):
            return Action.SEND
        key = (block[0], block[1], kind, name)
        account = self.accounts.get(key)
        if account is None:
            account = self.accounts[key] = _Account(balance=rate, last=now)
            if len(self.accounts) > self.config.table_size:
                self.accounts.popitem(last=False)
                self.stats["evicted"] += 1
        else:
            self.accounts.move_to_end(key)
            account.balance = min(rate, account.balance + (now - account.last) * rate)
            account.last = now
        account.balance = max(account.balance - 1, -self.config.window * rate)
        if account.balance >= 0:
            return Action.SEND
        if self.config.log_only:
            self.stats["would_limit"] += 1
            return Action.SEND
        account.limited += 1
        if self.config.slip and account.limited % self.config.slip == 0:
            self.stats["slipped"] += 1
            return Action.SLIP
        self.stats["dropped"] += 1
        return Action.DROP
