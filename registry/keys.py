"""Every Redis key globaldns uses, in one place.

All keys share the ``gdns:`` prefix so that a Redis ACL can fence them
(``%R~gdns:*`` for the resolver's read-only user). Keys are built here from validated
names only; no client-supplied string ever becomes a key without passing a model.

=============================  ======  =====================================================
key                            type    holds
=============================  ======  =====================================================
``gdns:gen``                   string  generation: INCR on every change of records or drains
``gdns:chg``                   stream  one entry per change: ``cluster``, ``kind`` (below),
                                       ``keys`` (the services it names, comma-separated),
                                       ``obs`` (when the agent observed it, ms); capped
                                       with MAXLEN ~ :data:`STREAM_MAXLEN`
``gdns:clusters``              set     names of clusters that ever reported
``gdns:cluster:<c>``           hash    ``region``, ``seq``, ``last_seen_ms`` (lease)
``gdns:cluster:<c>:services``  hash    ``<namespace>/<name>`` → the service record (JSON)
``gdns:cluster:<c>:digests``   hash    ``<namespace>/<name>`` → its content hash: written in
                                       the same MULTI as the record, read to resync cheaply
``gdns:drains``                hash    ``<cluster>`` → the drain (JSON): survives reports
``gdns:policies``              hash    ``<namespace>/<name>`` → an operator's policy (JSON)
``gdns:decisions``             hash    ``drain:<c>`` / ``policy:<ns>/<name>`` → the revision of
                                       the latest operator decision on it, cleared ones
                                       included (:mod:`registry.decisions`)
``gdns:decisions:rev``         string  the newest of those revisions
``gdns:registry``              hash    ``alive_ms``: the Redis time a registry replica last
                                       wrote (once a second): whether anyone is taking
                                       heartbeats (:mod:`resolver.outages`)
=============================  ======  =====================================================

Change-stream kinds: ``services`` (the ``keys`` of ``cluster`` were upserted or removed:
read them again), ``cluster`` (too many to name: compare ``cluster``'s digests), ``drain``
and ``undrain`` (``cluster``'s drain), ``policy`` (the override of the ``keys``).

:data:`PATTERNS` names each row of the table; :func:`pattern` tells which row a key
belongs to, so that metrics about keys (``globaldns_*_bad_records``) carry one label value
per row, never one per cluster.
"""

from __future__ import annotations

PREFIX = "gdns:"
GENERATION = PREFIX + "gen"
CHANGES = PREFIX + "chg"
CLUSTERS = PREFIX + "clusters"
DRAINS = PREFIX + "drains"
POLICIES = PREFIX + "policies"
REGISTRY = PREFIX + "registry"
DECISIONS = PREFIX + "decisions"
DECISIONS_REV = PREFIX + "decisions:rev"

STREAM_MAXLEN = 10_000
MAX_KEYS_PER_CHANGE = 64
"""A change touching more services is announced as ``cluster`` (compare the digests)."""


def cluster(name: str) -> str:
    return f"{PREFIX}cluster:{name}"


def services(name: str) -> str:
    return f"{PREFIX}cluster:{name}:services"


def digests(name: str) -> str:
    return f"{PREFIX}cluster:{name}:digests"


PATTERNS = (
    GENERATION,
    CHANGES,
    CLUSTERS,
    cluster("<c>"),
    services("<c>"),
    digests("<c>"),
    DRAINS,
    POLICIES,
    DECISIONS,
    DECISIONS_REV,
    REGISTRY,
)
"""Every key of the schema, the per-cluster ones with ``<c>`` for the cluster."""

_FIXED = frozenset(p for p in PATTERNS if "<" not in p)


def pattern(key: str) -> str:
    """The row of :data:`PATTERNS` that ``key`` belongs to (``other`` for none)."""
    if key in _FIXED:
        return key
    name = key.removeprefix(PREFIX + "cluster:")
    if name == key:
        return "other"
    if name.endswith(":services"):
        return services("<c>")
    if name.endswith(":digests"):
        return digests("<c>")
    return cluster("<c>")
