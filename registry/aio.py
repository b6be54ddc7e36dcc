"""Small asyncio helpers every long-running loop shares."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds`` or until ``stop`` is set; returns whether it was set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=max(0.0, seconds))
    return stop.is_set()


def backoff_s(
    failures: int,
    *,
    first_s: float,
    max_s: float,
    rng: Callable[[], float] = random.random,
) -> float:
    """The wait after the ``failures``-th failure in a row (1, 2, ...): doubling from
    ``first_s`` up to ``max_s``, then jittered down by up to half, so that processes
    that failed together do not retry in step and no wait exceeds ``max_s``."""
    step = min(max_s, first_s * 2.0 ** max(0, failures - 1))
    return step * (0.5 + rng() / 2)


async def supervise(
    run: Callable[[asyncio.Event], Awaitable[None]],
    stop: asyncio.Event,
    *,
    on_failure: Callable[[Exception, float], None],
    first_s: float = 0.5,
    max_s: float = 30.0,
    healthy_s: float = 60.0,
    rng: Callable[[], float] = random.random,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Run ``run(stop)`` until ``stop`` is set, starting it again whenever it raises (or
    returns early), after :func:`backoff_s`. ``on_failure(error, wait_s)`` is told of
    each failure before the wait (to count and log it). A run that lasted ``healthy_s``
    starts the back-off over. Cancellation is not a failure: it ends the supervision."""
    failures = 0
    while not stop.is_set():
        started = clock()
        try:
            await run(stop)
        except Exception as exc:
            error = exc
        else:
            if stop.is_set():
                return
            error = RuntimeError("returned before it was told to stop")
        if clock() - started >= healthy_s:
            failures = 0
        failures += 1
        wait = backoff_s(failures, first_s=first_s, max_s=max_s, rng=rng)
        on_failure(error, wait)
        await sleep_or_stop(stop, wait)
