"""The back-off every loop shares, and the supervisor that restarts a failed task
(with a fake clock and a fixed random source; real asyncio, tiny waits)."""

from __future__ import annotations

import asyncio

import pytest

from registry.aio import backoff_s, supervise


def test_the_back_off_doubles_up_to_its_cap_and_is_jittered_down_only() -> None:
    top = [backoff_s(n, first_s=0.5, max_s=30, rng=lambda: 1.0) for n in range(1, 10)]
    assert top == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    bottom = [backoff_s(n, first_s=0.5, max_s=30, rng=lambda: 0.0) for n in range(1, 10)]
    assert bottom == [t / 2 for t in top]


async def test_a_task_that_raises_is_started_again_until_told_to_stop() -> None:
    stop = asyncio.Event()
    runs: list[int] = []
    failures: list[tuple[str, float]] = []

    async def run(stop: asyncio.Event) -> None:
        runs.append(len(runs))
        if len(runs) <= 3:
            raise ValueError(f"bad value {len(runs)}")
        await stop.wait()

    def failed(error: Exception, wait: float) -> None:
        failures.append((str(error), wait))
        if len(failures) == 3:
            asyncio.get_running_loop().call_later(0.05, stop.set)

    await supervise(run, stop, on_failure=failed, first_s=0.001, max_s=0.004, rng=lambda: 1.0)
    assert runs == [0, 1, 2, 3]
    assert failures == [("bad value 1", 0.001), ("bad value 2", 0.002), ("bad value 3", 0.004)]


async def test_a_run_that_lasted_starts_the_back_off_over() -> None:
    stop = asyncio.Event()
    now = [0.0]
    waits: list[float] = []

    async def run(stop: asyncio.Event) -> None:
        now[0] += 100 if len(waits) == 2 else 1  # the third run lasts a while
        raise RuntimeError("again")

    def failed(error: Exception, wait: float) -> None:
        waits.append(wait)
        if len(waits) == 4:
            stop.set()

    await supervise(
        run,
        stop,
        on_failure=failed,
        first_s=0.001,
        max_s=1,
        healthy_s=60,
        rng=lambda: 1.0,
        clock=lambda: now[0],
    )
    assert waits == [0.001, 0.002, 0.001, 0.002]


async def test_returning_early_is_a_failure_and_cancelling_is_not() -> None:
    stop = asyncio.Event()
    failures: list[str] = []

    async def returns(stop: asyncio.Event) -> None:
        return

    def failed(error: Exception, wait: float) -> None:
        failures.append(str(error))
        stop.set()

    await supervise(returns, stop, on_failure=failed, first_s=0.001)
    assert failures == ["returned before it was told to stop"]

    async def waits(stop: asyncio.Event) -> None:
        await asyncio.Event().wait()

    task = asyncio.create_task(supervise(waits, asyncio.Event(), on_failure=failed))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert failures == ["returned before it was told to stop"]
