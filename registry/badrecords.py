"""Records the store could not read: each is skipped, counted and said, never fatal.

What Redis holds is input like any other: a hand edit, a restore from the wrong backup, a
bug in another version. One bad value must cost its own record and nothing else — not the
resolver's sync, not the other clusters, not the registry's GET routes. So the store
(:mod:`registry.store`), the fence where replies become models, checks every value it
reads (integers, names, hex digests, JSON against the model, the key's Redis type) and
reports what it skips as a :class:`BadRecord` instead of raising; what the reader does
without the record is the reader's choice (the resolver keeps what it held, the registry
lists the problem beside its answer).

A :class:`Tally` counts them by the kind of key (:func:`registry.keys.pattern`: a label
with one value per row of the key schema, however many clusters there are) and says
which to log: each distinct record once, then at most once per ``every_s`` while it
stays bad, so that a bad lease read every second is one log line a minute, not sixty.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from registry import keys

_SHOWN = 40
"""Characters of a bad value quoted in ``why`` (a log line, not a dump)."""


@dataclass(frozen=True, slots=True)
class BadRecord:
    key: str
    """The Redis key."""
    field: str
    """The hash field, the stream entry ID, or "" for the key as a whole."""
    why: str

    @property
    def kind(self) -> str:
        """The key's row of the schema (:data:`registry.keys.PATTERNS`)."""
        return keys.pattern(self.key)

    def as_dict(self) -> dict[str, str]:
        return {"key": self.key, "kind": self.kind, "field": self.field, "why": self.why}


def shown(value: object) -> str:
    """A stored value as quoted in ``why``: repr, cut short."""
    text = repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


class Tally:
    """Bad records counted by kind, and which of them to log (pure: time comes in)."""

    def __init__(self, *, every_s: float = 60.0, remember: int = 10_000) -> None:
        self.every_s = every_s
        self.remember = remember
        self.counts: Counter[str] = Counter()
        """Records skipped, by :attr:`BadRecord.kind` (every read that skipped one)."""
        self._said: dict[BadRecord, float] = {}

    def note(self, record: BadRecord, now: float) -> bool:
        """Count ``record``; True when it should be logged (``now``: a monotonic clock)."""
        self.counts[record.kind] += 1
        said = self._said.get(record)
        if said is not None and now - said < self.every_s:
            return False
        if said is None and len(self._said) >= self.remember:
            self._said = {r: t for r, t in self._said.items() if now - t < self.every_s}
            if len(self._said) >= self.remember:
                self._said.clear()
        self._said[record] = now
        return True
