"""Rise/fall smoothing of probe results: a pure state machine.

The first result decides at once (an agent that starts must not hide healthy endpoints
for ``rise`` intervals, nor publish dead ones for ``fall``). After that, the verdict flips
only after ``rise`` passes or ``fall`` failures in a row, so one lost packet does not move
traffic.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Track:
    healthy: bool
    streak: int = 0
    """Results in a row that disagree with ``healthy``."""
    detail: str = ""


def observe(track: Track | None, ok: bool, detail: str, *, rise: int, fall: int) -> Track:
    if track is None:
        return Track(healthy=ok, detail=detail)
    if ok == track.healthy:
        return Track(healthy=ok, detail=detail if not ok else "")
    streak = track.streak + 1
    if streak >= (rise if ok else fall):
        return Track(healthy=ok, detail=detail if not ok else "")
    return Track(healthy=track.healthy, streak=streak, detail=track.detail)
