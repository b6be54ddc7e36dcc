"""The measuring DNS clients of bench/scale.py: the flip poller and the latency stream.

Both send A queries carrying an EDNS Client Subnet option (RFC 7871) for one cluster's
client network, from 127.0.0.1, so the resolver answers as to a client of that cluster.
Queries are packed by hand (they are the same few bytes every time); answers are read
with dnspython, an independent codec.

* :class:`Poller` asks one name again and again until the answer shows what a flip
  changed (an address appears or disappears) and says when that answer arrived.
* :func:`latency_stream` (run in a process of its own) sends a query every ``interval``
  seconds to a random service, open loop: sends keep their schedule whatever the
  answers do, so a slow answer is measured as slow and does not hide the next ones.
"""

from __future__ import annotations

import random
import select
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Any

TYPE_A, CLASS_IN, OPT, ECS = 1, 1, 41, 8


def encode_name(name: str) -> bytes:
    return b"".join(bytes((len(p),)) + p.encode() for p in name.strip(".").split(".")) + b"\0"


def query_wire(name: str, subnet: str, prefix_len: int = 24) -> bytes:
    """A query without its 2-byte ID: RD clear, one OPT with ECS ``subnet/prefix_len``."""
    address = socket.inet_aton(subnet)[: (prefix_len + 7) // 8]
    option = struct.pack("!HHHBB", ECS, 4 + len(address), 1, prefix_len, 0) + address
    opt = b"\0" + struct.pack("!HHIH", OPT, 1232, 0, len(option)) + option
    head = struct.pack("!HHHHH", 0, 1, 0, 0, 1)
    return head + encode_name(name) + struct.pack("!HH", TYPE_A, CLASS_IN) + opt


def addresses(wire: bytes) -> tuple[int, set[str]]:
    """The rcode and the A addresses of an answer."""
    import dns.message
    import dns.rdatatype

    message = dns.message.from_wire(wire)
    found = {
        rdata.address
        for rrset in message.answer
        if rrset.rdtype == dns.rdatatype.A
        for rdata in rrset
    }
    return message.rcode(), found


class Poller:
    """Asks one name over UDP until its answer does (or does not) hold an address."""

    def __init__(self, port: int, timeout_s: float = 0.2) -> None:
        self.address = ("127.0.0.1", port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.connect(self.address)
        self.sock.settimeout(timeout_s)
        self.qid = random.randrange(1 << 16)
        self.queries = 0
        self.timeouts = 0
        self.rtts: list[float] = []
        """Seconds from each send to its answer (one name, asked again and again: mostly
        answered from the resolver's cache, unlike the latency stream's random names)."""

    def close(self) -> None:
        self.sock.close()

    def ask(self, wire: bytes) -> tuple[int, set[str]] | None:
        """One query; None on a timeout. Answers to earlier IDs are skipped."""
        self.qid = (self.qid + 1) & 0xFFFF
        sent = time.monotonic()
        self.sock.send(struct.pack("!H", self.qid) + wire)
        self.queries += 1
        try:
            while True:
                data = self.sock.recv(4096)
                if len(data) >= 12 and struct.unpack("!H", data[:2])[0] == self.qid:
                    if len(self.rtts) < 1_000_000:
                        self.rtts.append(time.monotonic() - sent)
                    return addresses(data)
        except TimeoutError:
            self.timeouts += 1
            return None

    def wait_for(
        self, wire: bytes, target: str, present: bool, *, deadline: float, pause_s: float
    ) -> float | None:
        """Monotonic time of the first answer where ``target`` is (not) in the answer."""
        while time.monotonic() < deadline:
            got = self.ask(wire)
            if got is not None and (target in got[1]) == present:
                return time.monotonic()
            if pause_s > 0:
                time.sleep(pause_s)
        return None


@dataclass
class StreamResult:
    sent: int = 0
    answered: int = 0
    lost: int = 0
    latencies_us: list[int] = field(default_factory=list)
    rcodes: dict[int, int] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "answered": self.answered,
            "lost": self.lost,
            "latencies_us": self.latencies_us,
            "rcodes": self.rcodes,
            "seconds": self.seconds,
        }


def latency_stream(
    port: int,
    names: list[str],
    subnets: list[str],
    interval_s: float,
    stop: Any,
    out: Any,
    *,
    timeout_s: float = 1.0,
    seed: int = 11,
) -> None:
    """Until ``stop`` is set: a query every ``interval_s`` to a random name and subnet.

    Runs in a process of its own; puts a :class:`StreamResult` dict on ``out``.
    """
    from scale_procs import die_with_parent

    die_with_parent()
    rng = random.Random(seed)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    result = StreamResult()
    pending: dict[int, float] = {}
    qid = 0
    start = next_send = time.monotonic()
    while not stop.is_set():
        now = time.monotonic()
        if now >= next_send:
            qid = (qid + 1) & 0xFFFF
            wire = query_wire(rng.choice(names), rng.choice(subnets))
            try:
                sock.send(struct.pack("!H", qid) + wire)
                pending[qid] = time.monotonic()
                result.sent += 1
            except BlockingIOError:
                result.lost += 1
            next_send += interval_s
            if next_send < now - 1.0:  # far behind (machine stalled): do not burst
                next_send = now
            continue
        ready, _, _ = select.select([sock], [], [], max(0.0, next_send - now))
        if ready:
            while True:
                try:
                    data = sock.recv(4096)
                except BlockingIOError:
                    break
                arrived = time.monotonic()
                if len(data) < 12:
                    continue
                rid = struct.unpack("!H", data[:2])[0]
                sent = pending.pop(rid, None)
                if sent is None:
                    continue
                result.answered += 1
                result.latencies_us.append(int((arrived - sent) * 1e6))
                rcode = data[3] & 0x0F
                result.rcodes[rcode] = result.rcodes.get(rcode, 0) + 1
        expired = [k for k, t in pending.items() if now - t > timeout_s]
        for k in expired:
            del pending[k]
            result.lost += 1
    # What is still in flight gets a last chance to arrive.
    end = time.monotonic() + timeout_s
    while pending and time.monotonic() < end:
        ready, _, _ = select.select([sock], [], [], 0.05)
        if not ready:
            continue
        data = sock.recv(4096)
        sent = pending.pop(struct.unpack("!H", data[:2])[0], None) if len(data) >= 12 else None
        if sent is not None:
            result.answered += 1
            result.latencies_us.append(int((time.monotonic() - sent) * 1e6))
    result.lost += len(pending)
    result.seconds = time.monotonic() - start
    sock.close()
    out.put(result.as_dict())
