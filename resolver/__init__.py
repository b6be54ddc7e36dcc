"""The resolver: globaldns's authoritative DNS server, on the hot path.

It answers from an immutable in-memory snapshot of the registry
(:mod:`resolver.snapshot`), kept current by :mod:`resolver.sync`, and never touches Redis
while answering. :mod:`resolver.respond` is the one seam where bytes meet the pure
pipeline (parse → locate → policy → pack); :mod:`resolver.server` only moves bytes.
"""
