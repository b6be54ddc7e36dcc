"""Token buckets: how much one cluster may ask of the registry, and when it may ask again.

Why reports are limited per cluster: a report costs the registry in proportion to its
size (the parse builds Python objects with the interpreter lock held, even in a worker
thread, and the write holds Redis), and heartbeats wait behind it. One cluster posting
reports as fast as it can — a bug, a loop, a stolen token — delayed every other
cluster's heartbeats by seconds with a lease of six (issue #10). So each cluster has a
bucket of ``burst`` tokens that refills at ``per_s`` a second:

* a report is admitted when the bucket holds at least one token, and takes it;
* once its body is read it is charged one more token per ``bytes_per_token`` bytes, which
  may leave the bucket in debt: a whole state of 10 MB is admitted, and the cluster's
  next report waits until the debt is paid;
* a refused report is told when to come back (``retry_after_s``), and costs nothing.

Heartbeats are never limited: they are what must stay prompt. The defaults sit above
what a well-behaved agent sends (at most one report per 50 ms, ``agents/schedule.py``).

Pure: the time comes in as ``now`` (monotonic seconds), so the schedule is tested with a
fake clock (``tests/registry/test_limits.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Rate:
    per_s: float
    """Tokens earned a second; 0 turns the limit off."""
    burst: float
    """Tokens a bucket holds at most (and starts with)."""
    bytes_per_token: int = 256 << 10
    """A report is charged one more token per this many bytes of body."""
    max_debt: float = math.inf
    """How far below zero charges may take a bucket."""

    @property
    def off(self) -> bool:
        return self.per_s <= 0


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    retry_after_s: float = 0.0
    """When refused: how long until the bucket holds a token again."""


ALLOWED = Verdict(True)


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float

    def refill(self, rate: Rate, now: float) -> None:
        if now > self.at:
            self.tokens = min(rate.burst, self.tokens + (now - self.at) * rate.per_s)
            self.at = now


class Buckets:
    """One bucket per key (a cluster name: the keys are bounded by the configured tokens)."""

    def __init__(self, rate: Rate) -> None:
        self.rate = rate
        self._buckets: dict[str, _Bucket] = {}

    def _bucket(self, key: str, now: float) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(self.rate.burst, now)
        bucket.refill(self.rate, now)
        return bucket

    def take(self, key: str, now: float) -> Verdict:
        """Admit one more request for ``key`` if it has a token, taking it."""
        if self.rate.off:
            return ALLOWED
        bucket = self._bucket(key, now)
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return ALLOWED
        return Verdict(False, (1 - bucket.tokens) / self.rate.per_s)

    def charge(self, key: str, now: float, size: int) -> None:
        """Charge an admitted request for its ``size`` bytes (the debt may go below zero)."""
        if self.rate.off:
            return
        cost = size // self.rate.bytes_per_token
        if cost:
            bucket = self._bucket(key, now)
            bucket.tokens = max(bucket.tokens - cost, -self.rate.max_debt)

    def tokens(self, key: str, now: float) -> float:
        """What ``key`` holds at ``now`` (for tests and the status page)."""
        return self._bucket(key, now).tokens if not self.rate.off else self.rate.burst
