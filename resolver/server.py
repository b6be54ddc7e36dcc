"""Moving bytes: UDP datagrams and TCP messages in, the responder's bytes out.

UDP is read with a reader callback that drains the socket (up to a bound per wake-up):
on CPython the datagram-endpoint API costs four more syscalls per packet (see the
performance notes). TCP follows RFC 7766: pipelined queries are answered in order, the
length and the message go out in one write, a connection idle for a few seconds is
closed, a stalled message times out, and a client that does not read its answers is
disconnected once a write has waited ``write_timeout`` (the answers are dropped).
Connections are capped per source and in total; at the total cap a newcomer takes a
connection from the source holding the most (:mod:`resolver.admission`).
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass

import structlog

from resolver import admission
from resolver.respond import Responder
from resolver.settings import ResolverSettings

log = structlog.get_logger("resolver.server")

DRAIN_PER_WAKEUP = 64


class UdpServer:
    def __init__(self, sock: socket.socket, responder: Responder) -> None:
        self.sock = sock
        self.responder = responder
        self.loop = asyncio.get_running_loop()
        self.loop.add_reader(sock.fileno(), self._readable)

    def _readable(self) -> None:
        sock, handle = self.sock, self.responder.handle
        for _ in range(DRAIN_PER_WAKEUP):
            try:
                data, addr = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.responder.stats["udp_recv_error"] += 1
                return
            reply = handle(data, addr[0])
            if reply is not None:
                try:
                    sock.sendto(reply, addr)
                except OSError:
                    self.responder.stats["udp_send_error"] += 1

    def close(self) -> None:
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()


@dataclass(eq=False, slots=True)
class _Connection:
    writer: asyncio.StreamWriter
    source: str
    active: float
    """When a query last arrived (the longest idle is closed first to make room)."""

    def abort(self) -> None:
        """Close now, dropping whatever is unsent (``close`` would wait for a reader that
        may never read)."""
        self.writer.transport.abort()


class TcpServer:
    def __init__(
        self,
        responder: Responder,
        *,
        idle_timeout: float,
        read_timeout: float,
        write_timeout: float,
        max_connections: int,
        max_per_source: int,
    ) -> None:
        self.responder = responder
        self.idle_timeout = idle_timeout
        self.read_timeout = read_timeout
        self.write_timeout = write_timeout
        self.max_connections = max_connections
        self.max_per_source = max_per_source
        self.by_source: dict[str, set[_Connection]] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.server: asyncio.Server | None = None

    @classmethod
    def configured(cls, responder: Responder, settings: ResolverSettings) -> TcpServer:
        return cls(
            responder,
            idle_timeout=settings.tcp_idle_timeout_s,
            read_timeout=settings.tcp_read_timeout_s,
            write_timeout=settings.tcp_write_timeout_s,
            max_connections=settings.tcp_max_connections,
            max_per_source=settings.tcp_max_per_source,
        )

    @property
    def open(self) -> int:
        return sum(len(c) for c in self.by_source.values())

    async def start(self, sock: socket.socket) -> None:
        self.server = await asyncio.start_server(self._connection, sock=sock)

    def _admit(self, source: str) -> bool:
        counts = {s: len(c) for s, c in self.by_source.items()}
        match admission.admit(
            counts, source, max_total=self.max_connections, max_per_source=self.max_per_source
        ):
            case admission.Refuse():
                self.responder.stats["tcp_refused"] += 1
                return False
            case admission.Evict(source=heaviest):
                victim = min(self.by_source[heaviest], key=lambda c: c.active)
                self._forget(victim)
                victim.abort()
                self.responder.stats["tcp_evicted"] += 1
        return True

    def _forget(self, conn: _Connection) -> None:
        held = self.by_source.get(conn.source)
        if held is not None:
            held.discard(conn)
            if not held:
                del self.by_source[conn.source]

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        address = peer[0] if peer else "?"
        source = admission.source_of(address)
        if not self._admit(source):
            writer.transport.abort()
            return
        loop = asyncio.get_running_loop()
        conn = _Connection(writer, source, loop.time())
        self.by_source.setdefault(source, set()).add(conn)
        task = asyncio.current_task()
        if task is not None:
            self.tasks.add(task)
        try:
            await self._serve(reader, conn, address)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            pass
        finally:
            if task is not None:
                self.tasks.discard(task)
            self._forget(conn)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, conn: _Connection, address: str) -> None:
        loop, writer = asyncio.get_running_loop(), conn.writer
        while True:
            try:
                prefix = await asyncio.wait_for(reader.readexactly(2), self.idle_timeout)
            except (TimeoutError, asyncio.IncompleteReadError):
                return
            conn.active = loop.time()
            length = int.from_bytes(prefix, "big")
            if length == 0:
                return
            message = await asyncio.wait_for(reader.readexactly(length), self.read_timeout)
            reply = self.responder.handle(message, address, tcp=True)
            if reply is not None:
                writer.write(len(reply).to_bytes(2, "big") + reply)
                try:
                    await asyncio.wait_for(writer.drain(), self.write_timeout)
                except TimeoutError:
                    # The client does not read its answers: drop them and the connection.
                    self.responder.stats["tcp_write_timeout"] += 1
                    conn.abort()
                    return

    async def close(self) -> None:
        """Stop listening; let each connection send what it has (idle ones close at
        once), and abort those still unread after ``write_timeout``."""
        if self.server is None:
            return
        self.server.close()
        for held in list(self.by_source.values()):
            for conn in held:
                conn.writer.close()
        tasks = list(self.tasks)
        if tasks:
            await asyncio.wait(tasks, timeout=self.write_timeout)
            for held in list(self.by_source.values()):
                for conn in list(held):
                    conn.abort()
            await asyncio.gather(*tasks, return_exceptions=True)
        await self.server.wait_closed()
