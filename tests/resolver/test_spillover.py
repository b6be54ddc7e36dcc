"""Capacity-aware spillover through the real registry and resolver, with a flapping endpoint."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import aiohttp

from tests.helpers import TOKENS, addresses, aquery, eventually, registry, resolver

NAME = "api.production.global.example.com"
# The hold is timed by the registry on Redis's clock (no fake clock reaches it): it must
# outlast any pause between two flaps below (0.2 s apart) on a slow machine, by far.
POLICY = {"kind": "geo", "min_healthy": 2, "spill_hold_s": 4}


def report(seq: int, prefix: str, second_healthy: bool = True) -> dict[str, Any]:
    return {
        "seq": seq,
        "services": [
            {
                "namespace": "production",
                "name": "api",
                "policy": POLICY,
                "endpoints": [
                    {"address": f"{prefix}.1", "probe": {"healthy": True}},
                    {"address": f"{prefix}.2", "probe": {"healthy": second_healthy}},
                ],
            }
        ],
    }


async def test_spillover_moves_once_and_comes_back_without_flapping(redis_url: str) -> None:
    async with (
        registry(redis_url) as api,
        resolver(redis_url) as bound,
        aiohttp.ClientSession() as s,
    ):
        seq = 0

        async def post(cluster: str, prefix: str, healthy: bool = True) -> None:
            nonlocal seq
            seq += 1
            headers = {"Authorization": f"Bearer {TOKENS[cluster]}"}
            body = report(seq, prefix, healthy)
            async with s.post(f"{api}/v1/reports", json=body, headers=headers) as r:
                assert r.status == 200, await r.text()

        async def side() -> str:
            found = addresses(await aquery(bound.dns_port, NAME, source="127.0.2.1"))
            if not found:  # before the resolver has the first reports
                return "none"
            return "eu" if found[0].startswith("10.2.") else "us"

        await post("us-east-prod", "10.1.0")
        await post("eu-west-prod", "10.2.0")
        await eventually(lambda: _is(side, "eu"))

        flapped = asyncio.Event()

        async def keep_alive() -> None:
            # Leases last 6 s and this test longer, however slow the machine: us-east
            # (the spill target) reports all along, eu-west (healthy) once it stopped
            # flapping. Else Europe could come "back" because us-east expired, or never,
            # because eu-west did.
            while True:
                await asyncio.sleep(0.5)
                await post("us-east-prod", "10.1.0")
                if flapped.is_set():
                    await post("eu-west-prod", "10.2.0")

        alive = asyncio.create_task(keep_alive())
        try:
            await _flap_and_return(post, side, flapped)
        finally:
            alive.cancel()
            await asyncio.gather(alive, return_exceptions=True)


async def _flap_and_return(post: Any, side: Any, flapped: asyncio.Event) -> None:
    """Europe's capacity flaps; its clients move to us-east once, and back once."""
    seen: list[str] = [await side()]  # before the first flap

    async def watch() -> None:
        while not flapped.is_set():
            seen.append(await side())
            await asyncio.sleep(0.03)

    async def flap() -> None:
        for i in range(16):  # the second EU endpoint alternates every 0.2 s
            await post("eu-west-prod", "10.2.0", healthy=i % 2 == 1)
            await asyncio.sleep(0.2)
        await post("eu-west-prod", "10.2.0", healthy=True)
        flapped.set()

    await asyncio.gather(flap(), watch())
    changes = [b for a, b in itertools.pairwise(seen) if a != b]
    assert seen[0] == "eu" and changes == ["us"], f"answers flapped: {changes}"
    # Steady capacity for spill_hold_s brings Europe back, once: it stays.
    await eventually(lambda: _is(side, "eu"))
    assert [await side() for _ in range(20)] == ["eu"] * 20


async def _is(side: Any, wanted: str) -> bool:
    return bool(await side() == wanted)
