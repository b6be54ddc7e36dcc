"""Who is calling: bearer tokens for clusters, operators and readers.

Three roles, each with up to two tokens at once so a token is rotated without a window
in which nothing works (add the new one, roll the agents or operators over, remove the
old one):

* a **cluster** token (``GLOBALDNS_CLUSTER_TOKENS``): reports and heartbeats for that
  cluster, and reading its grant — nothing else;
* the **admin** token (``GLOBALDNS_ADMIN_TOKEN``): drains, policy overrides, and explain
  for any client;
* the **read** token (``GLOBALDNS_READ_TOKEN``, optional): the inspection routes
  (clusters, services, drains). Unset, those routes are open, as before; set, they need
  it or the admin token.

Configuration holds each token as ``sha256:<64 hex digits>`` (``globaldns token new``
prints a token and its hash), so a leaked configuration or environment does not leak a
credential. A plain value is still accepted — dev mode and tests generate them — and is
hashed at start. A presented token is hashed once and compared with every configured
hash in constant time (:func:`hmac.compare_digest`), all of them, so the time taken does
not say which role or cluster came close.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

PREFIX = "sha256:"
_HASHED = re.compile(r"^sha256:[0-9a-f]{64}$")
MIN_LENGTH = 16
PER_ROLE = 2


def bearer(header: str) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header; None otherwise."""
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


def hashed(token: str) -> str:
    """How configuration stores ``token``."""
    return PREFIX + digest(token).hex()


def new() -> str:
    """A fresh token: 32 random bytes, URL-safe."""
    return secrets.token_urlsafe(32)


def configured(value: str, *, where: str) -> bytes:
    """The digest a configured value stands for: a ``sha256:`` hash, or a plain token
    (at least 16 characters). ValueError naming ``where`` otherwise."""
    if value.startswith(PREFIX):
        if not _HASHED.match(value):
            raise ValueError(f"{where}: a hashed token is sha256: and 64 lower-case hex digits")
        return bytes.fromhex(value.removeprefix(PREFIX))
    if len(value) < MIN_LENGTH:
        raise ValueError(f"{where}: a token needs at least {MIN_LENGTH} characters")
    return digest(value)


def split(value: str | Iterable[str]) -> tuple[str, ...]:
    """A role's tokens as configured: one value, comma-separated values, or a list."""
    parts = value.split(",") if isinstance(value, str) else list(value)
    return tuple(p.strip() for p in parts if p.strip())


@dataclass(frozen=True)
class Tokens:
    clusters: Mapping[str, tuple[bytes, ...]] = field(default_factory=dict)
    admin: tuple[bytes, ...] = ()
    read: tuple[bytes, ...] = ()

    @classmethod
    def from_config(
        cls,
        clusters: Mapping[str, Iterable[str]],
        admin: Iterable[str] = (),
        read: Iterable[str] = (),
    ) -> Tokens:
        """Digests of what configuration holds; ValueError naming the setting and the
        cluster when a value is malformed, a role has more than two, or two roles share one."""
        by_cluster = {}
        for cluster, values in clusters.items():
            where = f"GLOBALDNS_CLUSTER_TOKENS[{cluster}]"
            by_cluster[cluster] = _role(values, where)
        tokens = cls(
            by_cluster,
            _role(admin, "GLOBALDNS_ADMIN_TOKEN"),
            _role(read, "GLOBALDNS_READ_TOKEN"),
        )
        everyone = [d for ds in by_cluster.values() for d in ds] + [*tokens.admin, *tokens.read]
        if len(set(everyone)) != len(everyone):
            raise ValueError("two clusters or roles share a token: every token must be its own")
        return tokens

    def cluster(self, presented: str) -> str | None:
        """The cluster whose token this is, if any."""
        offered = digest(presented)
        found = None
        for name, digests in self.clusters.items():
            for known in digests:
                if hmac.compare_digest(known, offered):
                    found = name
        return found

    def is_admin(self, presented: str | None) -> bool:
        return presented is not None and _any(self.admin, digest(presented))

    def may_read(self, presented: str | None) -> bool:
        """Inspection: open when no read token is configured, else read or admin."""
        if not self.read:
            return True
        if presented is None:
            return False
        offered = digest(presented)
        return _any(self.read, offered) | _any(self.admin, offered)


def _role(values: Iterable[str], where: str) -> tuple[bytes, ...]:
    found = tuple(configured(v, where=where) for v in values)
    if len(found) > PER_ROLE:
        raise ValueError(f"{where}: at most {PER_ROLE} tokens at once (the old and the new)")
    return found


def _any(known: Iterable[bytes], offered: bytes) -> bool:
    matched = False
    for candidate in known:
        matched |= hmac.compare_digest(candidate, offered)
    return matched
