"""A registry replica's own copy of the operator decisions: memory, and a file if set.

The copy in memory already outlives a Redis that restarts empty or fails over to a
replica that missed a write (the replica's upkeep writes it back). The file
(``<GLOBALDNS_STATE_DIR>/decisions.json``, on a persistent volume) makes it outlive a
restart of the registry as well. The file is small — one line per drain or override
ever made — and replaced whole (write, fsync, rename), in a worker thread so the event
loop never waits on the disk.

The file is input like any other: one that cannot be read is moved aside as
``decisions.json.unreadable`` with one log line, and the journal starts from Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

import structlog

from registry.decisions import DRAIN, POLICY, Decision, newer

log = structlog.get_logger("registry.journal")

FILE_NAME = "decisions.json"
_MAX_BYTES = 64 << 20


class Journal:
    def __init__(self, state_dir: Path | None) -> None:
        self.path = state_dir / FILE_NAME if state_dir is not None else None
        self.held: dict[str, Decision] = {}
        self._lock = asyncio.Lock()
        if self.path is not None:
            self.held = _load(self.path)

    @property
    def rev(self) -> int:
        """The newest revision held (0: none)."""
        return max((d.rev for d in self.held.values()), default=0)

    async def record(self, decisions: Iterable[Decision]) -> list[Decision]:
        """Keep each decision newer than the one held; returns those kept."""
        kept = [d for d in decisions if newer(d, self.held.get(d.subject))]
        if not kept:
            return []
        for decision in kept:
            self.held[decision.subject] = decision
        if self.path is not None:
            async with self._lock:
                body = _dump(self.held.values())
                await asyncio.to_thread(_replace, self.path, body)
        return kept


def _dump(decisions: Iterable[Decision]) -> bytes:
    rows = [
        {"subject": d.subject, "rev": d.rev, "value": d.value}
        for d in sorted(decisions, key=lambda d: d.subject)
    ]
    return json.dumps({"version": 1, "decisions": rows}, indent=1).encode()


def _replace(path: Path, body: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    with open(partial, "wb") as out:
        out.write(body)
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, path)


def _load(path: Path) -> dict[str, Decision]:
    try:
        if path.stat().st_size > _MAX_BYTES:
            raise ValueError(f"larger than {_MAX_BYTES} bytes")
        return _parse(json.loads(path.read_bytes()))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, TypeError, KeyError) as exc:
        aside = path.with_name(path.name + ".unreadable")
        log.error(
            "decision journal unreadable; moved aside, starting from what Redis holds",
            path=str(path),
            moved_to=str(aside),
            error=str(exc),
        )
        with contextlib.suppress(OSError):
            os.replace(path, aside)
        return {}


def _parse(doc: object) -> dict[str, Decision]:
    if not isinstance(doc, dict) or doc.get("version") != 1:
        raise ValueError("not a version 1 decision journal")
    rows = doc["decisions"]
    if not isinstance(rows, list):
        raise ValueError("decisions is not a list")
    held: dict[str, Decision] = {}
    for row in rows:
        subject, rev, value = row["subject"], row["rev"], row["value"]
        if not isinstance(subject, str) or not subject.startswith((DRAIN, POLICY)):
            raise ValueError(f"bad subject {subject!r}")
        if not isinstance(rev, int) or isinstance(rev, bool) or not 0 < rev < 1 << 62:
            raise ValueError(f"bad revision for {subject}")
        if value is not None and not isinstance(value, str):
            raise ValueError(f"bad value for {subject}")
        held[subject] = Decision(subject, rev, value)
    return held
