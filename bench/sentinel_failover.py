"""Write gap and DNS impact of Redis Sentinel failovers, on the real processes.

    .venv/bin/python bench/sentinel_failover.py [--failovers 5] [--fault kill|freeze]
                                                [--down-after-ms 2000]

Starts the shipped deploy/redis/ configuration (1 primary, 2 replicas, 3 Sentinels; the
harness of tests/sentinel.py) with the shipped ``down-after-milliseconds``, the registry
(through ``redis+sentinel://``) and a resolver, then, per failover: an agent-like writer
sends whole states back to back through the HTTP API and a client asks the resolver for a
known name every few milliseconds while the primary is killed (SIGKILL) or frozen
(SIGSTOP, resumed after the failover). Prints, per failover and in sum, the write gap
(the fault → the first report answered 200), the reports refused meanwhile (503), and the
DNS queries answered, failed and the slowest. Nothing here is a test: the numbers are for
the README and the issue.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from globaldns.redis_server import find_binary
from registry import logs
from tests.helpers import TOKENS, eventually, registry, resolver
from tests.sentinel import DnsProbe, ReportWriter, SentinelTopology

NAME = "api.production.global.example.com"
EVENTS: list[tuple[str, float]] = []
"""(what, time.monotonic()): faults, failovers and resumes, to place lost reports."""


async def one(
    topology: SentinelTopology, writer: ReportWriter, dns_port: int, fault: str
) -> dict[str, float]:
    probe = DnsProbe(dns_port, NAME)
    start = len(writer.answers)
    async with probe.running():
        await asyncio.sleep(1.0)
        old = await asyncio.to_thread(topology.primary_port)
        server = topology.server(old)
        assert server.pid is not None
        if fault == "kill":
            server.kill()
        else:
            os.kill(server.pid, signal.SIGSTOP)
        at = time.monotonic()
        EVENTS.append((f"{fault} {old}", at))
        try:
            await asyncio.to_thread(topology.wait_failover, old)
            EVENTS.append(("failed over", time.monotonic()))
            await eventually(lambda: writer.acked_after(at) >= 1, timeout=120)
        finally:
            if fault == "freeze":
                os.kill(server.pid, signal.SIGCONT)
                EVENTS.append((f"resumed {old}", time.monotonic()))
        await asyncio.sleep(1.0)
    gap = writer.gap_after(at) or float("nan")
    refused = sum(1 for _, s, t in writer.answers[start:] if s != 200 and t > at)
    await asyncio.to_thread(topology.restore)
    return {
        "gap_s": gap,
        "refused": refused,
        "dns_answered": probe.answered,
        "dns_failed": len(probe.failed),
        "dns_slowest_ms": probe.slowest * 1000,
    }


async def main(args: argparse.Namespace) -> int:
    logs.configure(json=False, level="error")
    binary = find_binary(prefer_system=not args.valkey)
    topology = SentinelTopology(
        binary, down_after_ms=args.down_after_ms, failover_timeout_ms=args.failover_timeout_ms
    )
    await asyncio.to_thread(topology.start)
    results = []
    try:
        async with (
            registry(topology.url("registry"), report_rate=0) as api,  # writes back to back
            resolver(topology.url("resolver"), rrl_rate=0) as bound,
            aiohttp.ClientSession() as session,
            ReportWriter(session, api, TOKENS["us-east-prod"]).running() as writer,
        ):
            await eventually(lambda: len(writer.acked()) >= 3)
            for i in range(args.failovers):
                result = await one(topology, writer, bound.dns_port, args.fault)
                results.append(result)
                print(
                    f"failover {i + 1}: write gap {result['gap_s']:.2f} s, "
                    f"{result['refused']:.0f} reports refused (503); DNS "
                    f"{result['dns_answered']:.0f} answered, {result['dns_failed']:.0f} failed, "
                    f"slowest {result['dns_slowest_ms']:.1f} ms",
                    flush=True,
                )
            await writer.hold()  # nothing acknowledged after the stream is read
            changes = await asyncio.to_thread(topology.changes)
            lost = writer.lost(changes, "us-east-prod")
            for seq in lost:
                answered = next(t for n, _, t in writer.answers if n == seq)
                what, when = min(EVENTS, key=lambda e: abs(e[1] - answered))
                near = [(n, writer.generations.get(n)) for n in range(seq - 3, seq + 4)]
                print(
                    f"lost: report {seq}, answered 200 {answered - when:+.3f} s from {what}; "
                    f"(seq, generation) around it: {near}"
                )
    finally:
        await asyncio.to_thread(topology.stop)
    gaps = [r["gap_s"] for r in results]
    print(
        f"\n{binary.rsplit('/', 1)[-1]}, {args.fault}, down-after-milliseconds "
        f"{args.down_after_ms}: write gap min {min(gaps):.2f} / median "
        f"{statistics.median(gaps):.2f} / max {max(gaps):.2f} s over {len(gaps)} failovers; "
        f"DNS failed {sum(r['dns_failed'] for r in results):.0f} of "
        f"{sum(r['dns_answered'] + r['dns_failed'] for r in results):.0f}, slowest "
        f"{max(r['dns_slowest_ms'] for r in results):.1f} ms; reports answered 200 "
        f"and lost: {len(lost)} of {len(writer.acked())}"
    )
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--failovers", type=int, default=5)
    parser.add_argument("--fault", choices=["kill", "freeze"], default="kill")
    parser.add_argument("--down-after-ms", type=int, default=2000, help="the shipped value")
    parser.add_argument("--failover-timeout-ms", type=int, default=5000)
    parser.add_argument("--valkey", action="store_true", help="the embedded Valkey binary")
    sys.exit(asyncio.run(main(parser.parse_args())))
