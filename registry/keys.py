"""Every Redis key globaldns uses, in one place.

All keys share the ``gdns:`` prefix so that a Redis ACL can fence them
(``%R~gdns:*`` for the resolver's read-only user). Keys are built here from validated
names only; no client-supplied string ever becomes a key without passing a model.

=============================  ======  =====================================================
key                            type    holds
=============================  ======  =====================================================
``gdns:gen``                   string  generation: INCR on every change of records or drains
``gdns:chg``                   stream  one entry per change (``gen``, ``cluster``, ``kind``),
                                       capped with MAXLEN ~ :data:`STREAM_MAXLEN`
``gdns:clusters``              set     names of clusters that ever reported
``gdns:cluster:<c>``           hash    ``region``, ``seq``, ``last_seen_ms`` (lease)
``gdns:cluster:<c>:services``  hash    ``<namespace>/<name>`` → the service record (JSON)
``gdns:drains``                hash    ``<cluster>`` → the drain (JSON): survives reports
``gdns:policies``              hash    ``<namespace>/<name>`` → an operator's policy (JSON)
=============================  ======  =====================================================
"""

from __future__ import annotations

PREFIX = "gdns:"
GENERATION = PREFIX + "gen"
CHANGES = PREFIX + "chg"
CLUSTERS = PREFIX + "clusters"
DRAINS = PREFIX + "drains"
POLICIES = PREFIX + "policies"

STREAM_MAXLEN = 10_000


def cluster(name: str) -> str:
    return f"{PREFIX}cluster:{name}"


def services(name: str) -> str:
    return f"{PREFIX}cluster:{name}:services"
