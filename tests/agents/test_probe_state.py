"""Rise/fall smoothing: the first result decides, later flips need a streak."""

from __future__ import annotations

from agents.probe_state import Track, observe


def run(results: list[bool], *, rise: int = 2, fall: int = 3) -> list[bool]:
    track: Track | None = None
    out = []
    for ok in results:
        track = observe(track, ok, "" if ok else "refused", rise=rise, fall=fall)
        out.append(track.healthy)
    return out


def test_first_result_decides() -> None:
    assert run([True]) == [True]
    assert run([False]) == [False]


def test_fall_needs_consecutive_failures() -> None:
    assert run([True, False, False, True, False, False, False]) == [
        True,
        True,
        True,
        True,
        True,
        True,
        False,
    ]


def test_rise_needs_consecutive_passes() -> None:
    assert run([False, True, False, True, True]) == [False, False, False, False, True]


def test_alternating_results_never_flip() -> None:
    assert run([True, False] * 10) == [True] * 20
