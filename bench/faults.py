"""The control-plane faults of issue #12, one after another, each counted answer by answer.

    .venv/bin/python bench/faults.py [--outage-s 20] [--lease-s 6]

Runs the real registry, resolver and one agent per cluster (in one process, as the test
suite does; ``tests/reliability/world.py``) against a Redis of its own, with a client in
each region asking for ``api.production`` every 10 ms. For each fault it prints how many
answers there were, how many failed (timeout, SERVFAIL, NXDOMAIN, empty) and how many
were wrong (not the nearest live cluster's endpoints, or the drained cluster's):

* Redis restarted empty, with eu-west drained (a drain must not be undone);
* the registry down for ``--outage-s`` (longer than the lease);
* Redis down for ``--outage-s``;
* two of three clusters silent at once for ``--outage-s`` (a partition);
* a resolver started while Redis is down, then Redis back (counts NXDOMAIN separately).

Numbers for the README and the issue note; the behaviour itself is asserted by
``tests/reliability``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from globaldns.redis_server import RedisProcess, find_binary  # noqa: E402
from registry import logs  # noqa: E402
from tests.helpers import eventually, registry, resolver  # noqa: E402
from tests.reliability.world import CLIENT, Watcher, admin, fleet, goes_to  # noqa: E402

NEAREST = {c: frozenset({c}) for c in CLIENT}


@contextlib.asynccontextmanager
async def watching(port: int, expected: dict[str, frozenset[str]]) -> AsyncIterator[Counter[str]]:
    tally: Counter[str] = Counter()
    async with contextlib.AsyncExitStack() as stack:
        watchers = {
            home: await stack.enter_async_context(Watcher(port, CLIENT[home])) for home in expected
        }
        yield tally
    for home, watcher in watchers.items():
        for seen in watcher.seen:
            tally["answers"] += 1
            if isinstance(seen, str):
                tally[f"failed: {seen}"] += 1
            elif seen != expected[home]:
                tally["wrong"] += 1
                tally[f"wrong: {home} got {','.join(sorted(seen))}"] += 1


def show(name: str, tally: Counter[str]) -> None:
    failed = sum(v for k, v in tally.items() if k.startswith("failed"))
    detail = {k: v for k, v in tally.items() if k.startswith(("failed", "wrong:"))}
    print(
        f"{name:58} answers {tally['answers']:6}  failed {failed:4} {detail or ''}"
        f"  wrong {tally['wrong']:4}",
        flush=True,
    )


async def run(args: argparse.Namespace) -> None:
    binary = find_binary(prefer_system=True)
    redis = RedisProcess(binary=binary)
    redis.start()
    lease = {"lease_ttl_s": args.lease_s}
    try:
        async with resolver(redis.url, **lease) as bound:
            port = bound.dns_port
            async with registry(redis.url, **lease) as api, fleet(api) as agents:
                await eventually(lambda: goes_to(port, CLIENT["ap-south-prod"], "ap-south-prod"))
                await admin("POST", f"{api}/v1/clusters/eu-west-prod/drain", {"reason": "bench"})
                await eventually(lambda: goes_to(port, CLIENT["eu-west-prod"], "us-east-prod"))
                drained = {**NEAREST, "eu-west-prod": frozenset({"us-east-prod"})}
                async with watching(port, drained) as tally:
                    redis.kill()
                    redis.start()
                    await asyncio.sleep(args.outage_s)
                show("Redis restarted empty (eu-west drained)", tally)
                await admin("DELETE", f"{api}/v1/clusters/eu-west-prod/drain")
                await eventually(lambda: goes_to(port, CLIENT["eu-west-prod"], "eu-west-prod"))
                async with watching(port, NEAREST) as tally:
                    redis.kill()
                    await asyncio.sleep(args.outage_s)
                    redis.start()
                    await asyncio.sleep(args.lease_s * 2)
                show(f"Redis down {args.outage_s:g} s", tally)
                async with watching(port, NEAREST) as tally:
                    await agents.stop("eu-west-prod")
                    await agents.stop("ap-south-prod")
                    await asyncio.sleep(args.outage_s)
                    agents.start("eu-west-prod")
                    agents.start("ap-south-prod")
                    await asyncio.sleep(args.lease_s)
                show(f"two of three clusters silent {args.outage_s:g} s", tally)
            async with watching(port, NEAREST) as tally:
                await asyncio.sleep(args.outage_s)
                async with registry(redis.url, **lease) as api, fleet(api):
                    await asyncio.sleep(args.lease_s * 2)
            show(f"registry down {args.outage_s:g} s", tally)
        redis.kill()
        async with resolver(redis.url, wait_for_sync=False, **lease) as bound:
            async with watching(bound.dns_port, NEAREST) as tally:
                await asyncio.sleep(2)
                redis.start()
                async with registry(redis.url, **lease) as api, fleet(api):
                    await asyncio.sleep(args.lease_s)
            show("resolver started with Redis down, then Redis back", tally)
    finally:
        redis.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outage-s", type=float, default=20.0)
    parser.add_argument("--lease-s", type=float, default=6.0)
    args = parser.parse_args()
    logs.configure(json=False, level="error")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
