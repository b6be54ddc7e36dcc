"""The registry: globaldns's shared kernel.

It holds the data model (:mod:`registry.model`), the one Redis key schema
(:mod:`registry.keys`), the pure health rules (:mod:`registry.health`), the store that is
the only code reading or writing Redis (:mod:`registry.store`) and the HTTP API through
which agents report and operators look (:mod:`registry.api`).

Nothing here imports :mod:`resolver` or :mod:`agents`; both depend on this package.
"""
