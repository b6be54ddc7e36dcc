"""Simulated agents for bench/scale.py: one report chain per cluster, in a few processes.

The wire contract (docs/architecture.md, "Reports: a whole-state sync, then deltas"): a
delta names as ``base_seq`` the seq the registry last acknowledged for the cluster, so a
cluster's reports form a chain and are posted one at a time. :class:`Chain` holds that
seq behind a lock; everything that posts for a cluster (heartbeats, the background churn,
the propagation flips, the throughput run) takes the lock. A 409 means the registry
does not hold our base: the chain sends its whole state again, as an agent does.

Each :func:`agent_process` owns a disjoint set of clusters and takes commands from the
benchmark over a pipe (see :meth:`Agents.command`), so the benchmark process itself
only measures.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from scale_procs import die_with_parent
from scale_world import Scenario, delta_body, gzipped, service_record, whole_state_chunks

SAMPLE = 5000  # request latencies kept per kind


@dataclass
class Chain:
    """One cluster's report chain."""

    index: int
    name: str
    token: str
    seq: int
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    not_ready: dict[int, frozenset[int]] = field(default_factory=dict)
    """Per service, the endpoints flipped from their initial readiness."""


@dataclass
class Posted:
    status: int
    payload: Any
    t_post: float
    t_ack: float
    body_bytes: int


class Agents:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        scenario: Scenario,
        chains: list[Chain],
        *,
        heartbeat_s: float,
        seed: int,
    ) -> None:
        self.session = session
        self.url = url.rstrip("/")
        self.scenario = scenario
        self.chains = {c.index: c for c in chains}
        self.heartbeat_s = heartbeat_s
        self.rng = random.Random(seed)
        self.counts: Counter[str] = Counter()
        self.latencies: dict[str, list[float]] = {}
        self.body_bytes: list[int] = []
        self.gzip_bytes: list[int] = []
        self.answers_without_changed = 0
        self.last_error = ""
        self.churn_rate = 0.0
        self.tasks: set[asyncio.Task[Any]] = set()

    # -- posting ---------------------------------------------------------------------

    async def _post(
        self, path: str, token: str, body: bytes, gzip: bool = False
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        if gzip:
            headers["Content-Encoding"] = "gzip"
        async with self.session.post(self.url + path, data=body, headers=headers) as response:
            raw = await response.read()
            try:
                return response.status, json.loads(raw or b"{}")
            except ValueError:
                return response.status, {"error": raw[:200].decode(errors="replace")}

    async def delta(self, chain: Chain, service: int, endpoint: int, kind: str) -> Posted:
        """Flip one endpoint's ``ready`` of ``service`` and post it as a delta."""
        async with chain.lock:
            flipped = chain.not_ready.get(service, frozenset()) ^ {endpoint}
            record = service_record(self.scenario, chain.index, service, flipped)
            seq = max(chain.seq + 1, time.time_ns())
            observed_ms = time.time_ns() // 1_000_000
            body = delta_body(seq=seq, base_seq=chain.seq, service=record, observed_ms=observed_ms)
            t_post = time.monotonic()
            try:
                status, payload = await self._post("/v1/reports", chain.token, body)
            except (aiohttp.ClientError, OSError) as exc:
                status, payload = 0, {"error": str(exc)}
            t_ack = time.monotonic()
            self._count(kind, status, payload, t_ack - t_post)
            if len(self.body_bytes) < SAMPLE:
                self.body_bytes.append(len(body))
                if len(self.gzip_bytes) < 200:
                    self.gzip_bytes.append(len(gzipped(iter([body]))[0]))
            if status == 200:
                chain.seq = seq
                chain.not_ready[service] = flipped
                if not isinstance(payload, dict) or "changed" not in payload:
                    self.answers_without_changed += 1
            elif status == 409:
                await self._resync(chain)
            return Posted(status, payload, t_post, t_ack, len(body))

    async def _resync(self, chain: Chain) -> None:
        """Send the cluster's whole state (called with the chain's lock held)."""
        seq = max(chain.seq + 1, time.time_ns())
        chunks = whole_state_chunks(self.scenario, chain.index, seq, chain.not_ready)
        body, _ = gzipped(chunks)
        t0 = time.monotonic()
        try:
            status, payload = await self._post("/v1/reports", chain.token, body, gzip=True)
        except (aiohttp.ClientError, OSError) as exc:
            status, payload = 0, {"error": str(exc)}
        self._count("resync", status, payload, time.monotonic() - t0)
        if status == 200:
            chain.seq = seq

    async def heartbeat(self, chain: Chain) -> None:
        async with chain.lock:
            t0 = time.monotonic()
            body = json.dumps({"seq": chain.seq}).encode()
            try:
                status, payload = await self._post("/v1/heartbeats", chain.token, body)
            except (aiohttp.ClientError, OSError) as exc:
                status, payload = 0, {"error": str(exc)}
            self._count("heartbeat", status, payload, time.monotonic() - t0)
            if status == 409:
                await self._resync(chain)

    def _count(self, kind: str, status: int, payload: Any, seconds: float) -> None:
        outcome = "ok" if status == 200 else str(status)
        self.counts[f"{kind}_{outcome}"] += 1
        if status != 200:
            self.last_error = f"{kind}: {status} {str(payload)[:300]}"
        kept = self.latencies.setdefault(kind, [])
        if len(kept) < SAMPLE:
            kept.append(seconds)

    # -- activities ------------------------------------------------------------------

    def churn_target(self) -> tuple[Chain, int, int]:
        s = self.scenario
        chain = self.chains[self.rng.choice(list(self.chains))]
        service = self.rng.randrange(s.flip_services, s.services) if s.services > 1 else 0
        return chain, service, self.rng.randrange(s.endpoints)

    async def heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            await asyncio.gather(*(self.heartbeat(c) for c in self.chains.values()))

    async def churn(self) -> None:
        """``churn_rate`` deltas a second on the churn services, on a fixed schedule."""
        next_at = time.monotonic()
        while True:
            if self.churn_rate <= 0:
                await asyncio.sleep(0.05)
                next_at = time.monotonic()
                continue
            next_at += 1.0 / self.churn_rate
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            if len(self.tasks) > 1000:
                self.counts["churn_skipped"] += 1
                continue
            self._spawn(self.delta(*self.churn_target(), kind="churn"))

    async def throughput(self, seconds: float) -> dict[str, Any]:
        """Every chain posts deltas back to back for ``seconds``."""
        before = self.counts["throughput_ok"]
        end = time.monotonic() + seconds

        async def run(chain: Chain) -> None:
            s = self.scenario
            while time.monotonic() < end:
                service = self.rng.randrange(s.flip_services, s.services) if s.services > 1 else 0
                await self.delta(chain, service, self.rng.randrange(s.endpoints), "throughput")

        start = time.monotonic()
        await asyncio.gather(*(run(c) for c in self.chains.values()))
        return {
            "accepted": self.counts["throughput_ok"] - before,
            "seconds": time.monotonic() - start,
            "chains": len(self.chains),
        }

    def _spawn(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def stats(self) -> dict[str, Any]:
        return {
            "counts": dict(self.counts),
            "latencies_s": self.latencies,
            "body_bytes": self.body_bytes,
            "gzip_bytes": self.gzip_bytes,
            "answers_without_changed": self.answers_without_changed,
            "last_error": self.last_error,
            "seqs": {c.name: c.seq for c in self.chains.values()},
        }

    # -- commands from the benchmark -------------------------------------------------

    async def command(self, message: tuple[Any, ...]) -> tuple[Any, ...] | None:
        match message:
            case ("probe",):
                posted = await self.delta(*self.churn_target(), kind="probe")
                return ("probe", posted.status, posted.payload, posted.body_bytes)
            case ("churn", rate):
                self.churn_rate = float(rate) / 1.0
                return ("churn", self.churn_rate)
            case ("flip", cluster, service, endpoint):
                posted = await self.delta(self.chains[cluster], service, endpoint, "flip")
                return ("flip", posted.t_post, posted.t_ack, posted.status, posted.payload)
            case ("throughput", seconds):
                return ("throughput", await self.throughput(float(seconds)))
            case ("stats",):
                return ("stats", self.stats())
        raise ValueError(f"unknown command {message!r}")


def agent_process(
    conn: Any,
    url: str,
    scenario: Scenario,
    chains: list[tuple[int, str, str, int]],
    heartbeat_s: float,
    seed: int,
) -> None:
    """A process of agents: one chain per ``(index, name, token, seq)``, commands on ``conn``.

    Answers every command on ``conn``; ``("stop",)`` answers the final stats and returns.
    """
    die_with_parent()
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    runner(_main(conn, url, scenario, chains, heartbeat_s, seed))


async def _main(
    conn: Any,
    url: str,
    scenario: Scenario,
    chains: list[tuple[int, str, str, int]],
    heartbeat_s: float,
    seed: int,
) -> None:
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()

    def readable() -> None:
        try:
            inbox.put_nowait(conn.recv())
        except EOFError:  # the benchmark went away
            inbox.put_nowait(("stop",))
            loop.remove_reader(conn.fileno())

    loop.add_reader(conn.fileno(), readable)
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        agents = Agents(
            session,
            url,
            scenario,
            [Chain(i, name, token, seq) for i, name, token, seq in chains],
            heartbeat_s=heartbeat_s,
            seed=seed,
        )
        background = [
            asyncio.ensure_future(agents.heartbeats()),
            asyncio.ensure_future(agents.churn()),
        ]

        async def answer(message: tuple[Any, ...]) -> None:
            try:
                conn.send(await agents.command(message))
            except Exception as exc:  # reported to the benchmark, which stops the run
                conn.send(("error", f"{message[0]}: {exc.__class__.__name__}: {exc}"))

        try:
            while True:
                message = await inbox.get()
                if message == ("stop",):
                    break
                agents._spawn(answer(message))
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            for task in list(agents.tasks):
                task.cancel()
            await asyncio.gather(*agents.tasks, return_exceptions=True)
            with contextlib.suppress(OSError):
                conn.send(("stopped", agents.stats()))
