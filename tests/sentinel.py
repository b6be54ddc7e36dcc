"""A Redis Sentinel topology of the test's own: 1 primary, 2 replicas, 3 Sentinels.

Every process is a real ``redis-server`` (or Valkey) on a free loopback port, started
from the shipped files in ``deploy/redis/`` (``redis.conf``, ``sentinel.conf``,
``users.acl``) with their ``change-me-*`` passwords replaced by random ones and only the
addresses, the data directory and the Sentinel timings overridden; so the failover tests
also prove that the shipped ACLs let the registry, the resolver, the replicas and Sentinel
do their work. One user is added for the harness alone (``test-admin``, everything), to
flush, inspect and wait.

Used by ``tests/test_sentinel.py`` (one topology per module, restored after each test)
and by ``bench/sentinel_failover.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import redis

from globaldns.redis_server import RedisProcess

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "redis"
SERVICE = "globaldns"
HOST = "127.0.0.1"
USERS = ("registry", "resolver", "sentinel", "replication")

FAST = ("--repl-diskless-sync-delay", "0")
"""A full sync starts at once (the shipped 5 s wait for more replicas only slows tests)."""

T = TypeVar("T")


def wait_for(check: Callable[[], T | None], what: str, timeout: float = 90.0) -> T:
    """Poll ``check`` until it returns something truthy (a hang guard, not a speed)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (redis.RedisError, OSError) as exc:
            last = exc
        if last:
            return last  # type: ignore[no-any-return]
        time.sleep(0.05)
    raise AssertionError(f"{what}: not reached in {timeout}s (last: {last!r})")


class SentinelTopology:
    def __init__(
        self, binary: str, *, down_after_ms: int = 1000, failover_timeout_ms: int = 5000
    ) -> None:
        self.binary = binary
        self.passwords = {user: secrets.token_hex(12) for user in USERS}
        self.passwords["admin"] = secrets.token_hex(12)
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.servers: list[RedisProcess] = []
        self.sentinels: list[RedisProcess] = []

    # -- the shipped files, with this topology's passwords and addresses ---------------

    def _shipped(self, name: str) -> str:
        text = (DEPLOY / name).read_text()
        for user in USERS:
            text = text.replace(f"change-me-{user}", self.passwords[user])
        unknown = re.findall(r"change-me-[a-z]+", text)
        assert not unknown, f"{name}: passwords the test does not know: {unknown}"
        return text

    def shipped_server(self, replica_of: int | None) -> RedisProcess:
        """A server (not started) from deploy/redis/redis.conf and users.acl."""
        process = RedisProcess(binary=self.binary, host=HOST)
        acl = process.dir / "users.acl"
        acl.write_text(
            self._shipped("users.acl")
            + f"user test-admin on >{self.passwords['admin']} ~* &* +@all\n"
        )
        config = process.dir / "redis.conf"
        config.write_text(self._shipped("redis.conf"))
        process.config = config
        args = ["--aclfile", str(acl), *FAST]
        if replica_of is not None:
            args += ["--replicaof", HOST, str(replica_of)]
        process.args = tuple(args)
        return process

    def _sentinel(self, primary_port: int) -> RedisProcess:
        process = RedisProcess(binary=self.binary, host=HOST)
        text = self._shipped("sentinel.conf")
        text, found = re.subn(
            rf"^sentinel monitor {SERVICE} \S+ \d+ 2$",
            f"sentinel monitor {SERVICE} {HOST} {primary_port} 2",
            text,
            flags=re.M,
        )
        assert found == 1, "deploy/redis/sentinel.conf: no 'sentinel monitor globaldns … 2' line"
        for option, value in (
            ("down-after-milliseconds", self.down_after_ms),
            ("failover-timeout", self.failover_timeout_ms),
        ):
            text, found = re.subn(
                rf"^sentinel {option} {SERVICE} \d+$",
                f"sentinel {option} {SERVICE} {value}",
                text,
                flags=re.M,
            )
            assert found == 1, f"deploy/redis/sentinel.conf: no 'sentinel {option}' line"
        config = process.dir / "sentinel.conf"
        config.write_text(text)
        process.config = config
        # Its own log, kept for the diagnosis a timeout prints (see :meth:`views`).
        process.args = ("--sentinel", "--logfile", str(process.dir / "sentinel.log"))
        return process

    def views(self) -> str:
        """What each Sentinel says and its log's last lines: a hang guard's message."""
        out = []
        for i, sentinel in enumerate(self.sentinels):
            try:
                named = self._ask_sentinel(sentinel, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
            except (redis.RedisError, OSError) as exc:
                named = repr(exc)
            log = sentinel.dir / "sentinel.log"
            tail = log.read_text(errors="replace").splitlines()[-12:] if log.exists() else []
            out.append(
                f"sentinel {i} (port {sentinel.port}, alive={sentinel.alive()}) names {named}; "
                "log:\n  " + "\n  ".join(tail)
            )
        return "\n".join(out)

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        try:
            primary = self.shipped_server(None)
            self.servers.append(primary)
            primary.start()
            for _ in range(2):
                self.servers.append(self.shipped_server(primary.port))
                self.servers[-1].start()
            for _ in range(3):
                self.sentinels.append(self._sentinel(primary.port))
                self.sentinels[-1].start()
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for process in [*self.sentinels, *self.servers]:
            process.stop()

    @property
    def sentinel_hosts(self) -> str:
        return ",".join(f"{HOST}:{s.port}" for s in self.sentinels)

    def url(self, user: str = "registry", db: int = 0) -> str:
        """``redis+sentinel://`` for a component that logs in as ``globaldns-<user>``."""
        return (
            f"redis+sentinel://globaldns-{user}:{self.passwords[user]}@"
            f"{self.sentinel_hosts}/{SERVICE}/{db}"
        )

    def admin(self, port: int) -> redis.Redis:
        return redis.Redis(
            host=HOST,
            port=port,
            username="test-admin",
            password=self.passwords["admin"],
            decode_responses=True,
            socket_timeout=2,
            socket_connect_timeout=2,
        )

    def server(self, port: int) -> RedisProcess:
        return next(s for s in self.servers if s.port == port)

    # -- what the Sentinels say --------------------------------------------------------

    def _ask_sentinel(self, sentinel: RedisProcess, *command: str) -> Any:
        with redis.Redis(host=HOST, port=sentinel.port, socket_timeout=2) as client:
            return client.execute_command(*command)

    def primary_port(self) -> int:
        """The primary all three Sentinels name (waits for them to agree)."""

        def agreed() -> int | None:
            named = set()
            for sentinel in self.sentinels:
                if not sentinel.alive():
                    continue
                _host, port = self._ask_sentinel(
                    sentinel, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE
                )
                named.add(int(port))
            return named.pop() if len(named) == 1 else None

        try:
            return wait_for(agreed, "the Sentinels agree on a primary")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.views()}") from None

    def role(self, port: int) -> str:
        with self.admin(port) as client:
            return str(client.execute_command("ROLE")[0])

    def online_replicas(self, port: int) -> list[int]:
        with self.admin(port) as client:
            info = client.info("replication")
        return [
            int(v["port"])
            for k, v in info.items()
            if k.startswith("slave") and isinstance(v, dict) and v.get("state") == "online"
        ]

    def wait_healthy(self) -> int:
        """Every process up, the primary with 2 replicas online, each Sentinel seeing the
        same primary, both replicas (not down) and the other two Sentinels."""

        def healthy() -> int | None:
            port = self.primary_port()
            if self.role(port) != "master" or len(self.online_replicas(port)) != 2:
                return None
            for sentinel in self.sentinels:
                replicas = self._ask_sentinel(sentinel, "SENTINEL", "REPLICAS", SERVICE)
                up = [r for r in replicas if "down" not in _field(r, "flags")]
                others = self._ask_sentinel(sentinel, "SENTINEL", "SENTINELS", SERVICE)
                if len(up) != 2 or len(others) != 2:
                    return None
            return port

        return wait_for(healthy, "the Sentinel topology is healthy", timeout=120)

    def wait_failover(self, old_port: int) -> int:
        """The Sentinels name a new primary, and it accepts writes (a replica acked)."""

        def moved() -> int | None:
            port = self.primary_port()
            if port == old_port or self.role(port) != "master":
                return None
            return port if self.online_replicas(port) else None

        return wait_for(moved, f"a new primary instead of {old_port}", timeout=120)

    def restart_as_primary(self, port: int) -> None:
        """Start a dead server as its configuration says after it was a primary: no
        ``replicaof`` (and empty: nothing is persisted here)."""
        server = self.server(port)
        server.args = ("--aclfile", str(server.dir / "users.acl"), *FAST)
        server.start()

    def restore(self) -> int:
        """Restart every dead server as a replica of the current primary; wait healthy."""
        primary = self.primary_port()
        for server in self.servers:
            if server.pid is not None and not server.alive():
                server.args = ("--aclfile", str(server.dir / "users.acl"), *FAST)
                server.args += ("--replicaof", HOST, str(primary))
                server.start()
        return self.wait_healthy()

    def flush(self) -> None:
        with self.admin(self.primary_port()) as client:
            client.flushall()

    def settle(self) -> None:
        """Wait until both replicas hold every write the primary acknowledged."""
        with self.admin(self.primary_port()) as client:
            wait_for(lambda: client.execute_command("WAIT", 2, 1000) == 2, "replicas in sync")

    def changes(self, port: int | None = None) -> list[tuple[str, dict[str, str]]]:
        """The change stream as ``port`` (default: the primary) holds it."""
        with self.admin(port or self.primary_port()) as client:
            return list(client.xrange("gdns:chg"))


def _field(reply: Any, name: str) -> str:
    """A field of one SENTINEL REPLICAS entry (a dict, or a flat list in RESP2)."""
    if isinstance(reply, dict):
        value = reply.get(name, reply.get(name.encode(), ""))
    else:
        items = list(reply)
        pairs = dict(zip(items[::2], items[1::2], strict=True))
        value = pairs.get(name, pairs.get(name.encode(), ""))
    return value.decode() if isinstance(value, bytes) else str(value)


# -- load while a fault happens: reports through the real API, queries to the resolver --


class ReportWriter:
    """Sends whole states for one cluster, back to back, through the registry API.

    Report ``n`` holds ``production/api`` (a name DNS is asked for) and ``production/w-n``
    (its own), so every report changes one service and leaves one change-stream entry
    naming ``production/w-n``: :meth:`lost` finds acknowledged reports that Redis no
    longer has. ``hold()`` pauses between reports (nothing in flight), ``release()`` goes on.
    """

    def __init__(self, session: aiohttp.ClientSession, api: str, token: str) -> None:
        self.session = session
        self.api = api
        self.token = token
        self.answers: list[tuple[int, int, float]] = []
        """(seq, HTTP status, time.monotonic() of the answer), in order."""
        self.generations: dict[int, int] = {}
        """seq → the generation its 200 named (which primary's history it joined)."""
        self.sent: dict[int, float] = {}
        """seq → time.monotonic() it was sent."""
        self._go = asyncio.Event()
        self._go.set()
        self._idle = asyncio.Event()
        self._stop = asyncio.Event()

    def report(self, seq: int) -> dict[str, Any]:
        def service(name: str) -> dict[str, Any]:
            return {
                "namespace": "production",
                "name": name,
                "ports": [{"name": "http", "port": 8080}],
                "endpoints": [{"address": "10.0.0.1", "conditions": {"ready": True}}],
            }

        return {"seq": seq, "services": [service("api"), service(f"w-{seq}")]}

    async def _send(self, seq: int) -> int:
        try:
            async with self.session.post(
                f"{self.api}/v1/reports",
                json=self.report(seq),
                headers={"Authorization": f"Bearer {self.token}"},
                timeout=aiohttp.ClientTimeout(total=5),
            ) as response:
                body = await response.json(content_type=None)
                if response.status == 200:
                    self.generations[seq] = int(body["generation"])
                return response.status
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return 0

    async def run(self) -> None:
        seq = 0
        while not self._stop.is_set():
            if not self._go.is_set():
                self._idle.set()
                await self._go.wait()
                continue
            self._idle.clear()
            seq += 1
            self.sent[seq] = time.monotonic()
            status = await self._send(seq)
            self.answers.append((seq, status, time.monotonic()))
            await asyncio.sleep(0.01 if status == 200 else 0.05)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[ReportWriter]:
        task = asyncio.create_task(self.run())
        try:
            yield self
        finally:
            self._stop.set()
            self._go.set()
            await task

    async def hold(self) -> None:
        self._go.clear()
        await self._idle.wait()

    def release(self) -> None:
        self._go.set()

    def acked(self) -> list[int]:
        return [seq for seq, status, _ in self.answers if status == 200]

    def acked_after(self, moment: float) -> int:
        return sum(1 for _, status, at in self.answers if status == 200 and at > moment)

    def gap_after(self, moment: float) -> float | None:
        """Seconds from ``moment`` to the first acknowledgement of a report sent after it
        (one in flight at ``moment`` may still be answered by the server it was sent to)."""
        first = next((at for n, s, at in self.answers if s == 200 and self.sent[n] > moment), None)
        return None if first is None else first - moment

    def refused(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for _, status, _ in self.answers:
            if status != 200:
                out[status] = out.get(status, 0) + 1
        return out

    def lost(self, changes: list[tuple[str, dict[str, str]]], cluster: str) -> list[int]:
        """Acknowledged reports with no change-stream entry in ``changes`` (XRANGE)."""
        named = set()
        for _, fields in changes:
            if fields.get("cluster") == cluster:
                named.update(fields.get("keys", "").split(","))
        return [seq for seq in self.acked() if f"production/w-{seq}" not in named]


class DnsProbe:
    """Asks the resolver for a known name, over and over; counts what was not an answer."""

    def __init__(self, port: int, name: str) -> None:
        self.port = port
        self.name = name
        self.answered = 0
        self.failed: list[str] = []
        self.slowest = 0.0
        self._stop = asyncio.Event()

    def _once(self) -> str | None:
        message = dns.message.make_query(self.name, "A")
        started = time.monotonic()
        try:
            reply = dns.query.udp(message, HOST, port=self.port, timeout=2.0)
        except (dns.exception.Timeout, OSError) as exc:
            return f"{exc.__class__.__name__}"
        finally:
            self.slowest = max(self.slowest, time.monotonic() - started)
        if reply.rcode() != dns.rcode.NOERROR:
            return dns.rcode.to_text(reply.rcode())
        if not any(rrset.rdtype == dns.rdatatype.A for rrset in reply.answer):
            return "no address"
        return None

    async def answers(self) -> bool:
        """One query (off the event loop, where the resolver may be running)."""
        return await asyncio.to_thread(self._once) is None

    async def run(self) -> None:
        while not self._stop.is_set():
            problem = await asyncio.to_thread(self._once)
            if problem is None:
                self.answered += 1
            else:
                self.failed.append(f"{problem} at {time.monotonic():.2f}")
            await asyncio.sleep(0.005)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[DnsProbe]:
        task = asyncio.create_task(self.run())
        try:
            yield self
        finally:
            self._stop.set()
            await task
