"""Moving bytes: UDP datagrams and TCP messages in, the responder's bytes out.

UDP is read with a reader callback that drains the socket (up to a bound per wake-up):
on CPython the datagram-endpoint API costs four more syscalls per packet (see the
performance notes). TCP follows RFC 7766: pipelined queries are answered in order, the
length and the message go out in one write, a connection idle for a few seconds is
closed, and a stalled message times out; connections are capped in total and per source.
"""

from __future__ import annotations

import asyncio
import socket
from collections import Counter

import structlog

from resolver.respond import Responder

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


class TcpServer:
    def __init__(
        self,
        responder: Responder,
        *,
        idle_timeout: float,
        read_timeout: float,
        max_connections: int,
        max_per_source: int,
    ) -> None:
        self.responder = responder
        self.idle_timeout = idle_timeout
        self.read_timeout = read_timeout
        self.writers: set[asyncio.StreamWriter] = set()
        self.max_connections = max_connections
        self.max_per_source = max_per_source
        self.per_source: Counter[str] = Counter()
        self.open = 0
        self.server: asyncio.Server | None = None

    async def start(self, sock: socket.socket) -> None:
        self.server = await asyncio.start_server(self._connection, sock=sock)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        source = peer[0] if peer else "?"
        if self.open >= self.max_connections or self.per_source[source] >= self.max_per_source:
            self.responder.stats["tcp_refused"] += 1
            writer.close()
            return
        self.open += 1
        self.per_source[source] += 1
        self.writers.add(writer)
        try:
            await self._serve(reader, writer, source)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            pass
        finally:
            self.writers.discard(writer)
            self.open -= 1
            self.per_source[source] -= 1
            if not self.per_source[source]:
                del self.per_source[source]
            writer.close()

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, source: str
    ) -> None:
        while True:
            try:
                prefix = await asyncio.wait_for(reader.readexactly(2), self.idle_timeout)
            except (TimeoutError, asyncio.IncompleteReadError):
                return
            length = int.from_bytes(prefix, "big")
            if length == 0:
                return
            message = await asyncio.wait_for(reader.readexactly(length), self.read_timeout)
            reply = self.responder.handle(message, source, tcp=True)
            if reply is not None:
                writer.write(len(reply).to_bytes(2, "big") + reply)
                await writer.drain()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            for writer in list(self.writers):
                writer.close()
            await self.server.wait_closed()
