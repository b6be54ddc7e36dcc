"""Response rate limiting: token buckets on a fake clock, then over real sockets."""

from __future__ import annotations

import socket
import time
from collections import Counter

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import pytest

from resolver.rrl import Action, RateLimiter, RrlConfig
from tests.helpers import HANG_GUARD_S
from tests.resolver.conformance_server import running_server


def run(
    limiter: RateLimiter,
    n: int,
    *,
    client: str = "192.0.2.7",
    kind: str = "answer",
    name: bytes = b"api",
    start: float = 0.0,
    step: float = 0.0,
) -> Counter[Action]:
    return Counter(limiter.check(client, kind, name, start + i * step) for i in range(n))


def test_a_burst_beyond_the_rate_is_dropped_and_slipped() -> None:
    limiter = RateLimiter(RrlConfig(rate=5, slip=2))
    counts = run(limiter, 105)
    assert counts[Action.SEND] == 5
    assert counts[Action.SLIP] == 50 and counts[Action.DROP] == 50


def test_within_the_rate_nothing_is_limited() -> None:
    limiter = RateLimiter(RrlConfig(rate=5))
    assert run(limiter, 100, step=0.25) == Counter({Action.SEND: 100})


def test_accounts_are_per_netblock_kind_and_name() -> None:
    limiter = RateLimiter(RrlConfig(rate=1, slip=0))
    assert limiter.check("192.0.2.1", "answer", b"a", 0) is Action.SEND
    assert limiter.check("192.0.2.200", "answer", b"a", 0) is Action.DROP  # same /24
    assert limiter.check("192.0.3.1", "answer", b"a", 0) is Action.SEND  # other /24
    assert limiter.check("192.0.2.1", "answer", b"b", 0) is Action.SEND  # other name
    assert limiter.check("192.0.2.1", "nxdomain", b"", 0) is Action.SEND  # other kind
    assert limiter.check("2001:db8:0:1::1", "answer", b"a", 0) is Action.SEND
    assert limiter.check("2001:db8:0:ff::1", "answer", b"a", 0) is Action.DROP  # same /56


def test_a_flooder_recovers_about_a_window_after_it_stops() -> None:
    limiter = RateLimiter(RrlConfig(rate=10, window=5, slip=0))
    run(limiter, 1000)  # drives the account to -window * rate
    assert limiter.check("192.0.2.7", "answer", b"api", 4.0) is Action.DROP
    assert limiter.check("192.0.2.7", "answer", b"api", 5.2) is Action.SEND


def test_log_only_and_exempt_never_limit() -> None:
    assert run(RateLimiter(RrlConfig(rate=1, log_only=True)), 50)[Action.SEND] == 50
    exempt = RateLimiter(RrlConfig(rate=1, exempt=("192.0.2.0/24",)))
    assert run(exempt, 50)[Action.SEND] == 50


def test_the_table_is_bounded_and_evicts() -> None:
    limiter = RateLimiter(RrlConfig(rate=1, table_size=100))
    for i in range(1000):
        limiter.check(f"10.{i // 256}.{i % 256}.1", "answer", b"a", 0)
    assert len(limiter.accounts) == 100
    assert limiter.stats["evicted"] == 900


def _outcome(sock: socket.socket, limiter: RateLimiter, dropped_before: int) -> str:
    """What became of the query just sent: ``full``, ``tc``, or ``dropped``.

    A reply is a reply however late; a query is dropped when the server counted it as
    dropped. No timeout decides: the short socket timeout only lets us look at the
    server's count between reads, and the loop gives up only as a hang guard.
    """
    sock.settimeout(0.01)
    deadline = time.monotonic() + HANG_GUARD_S
    while time.monotonic() < deadline:
        try:
            reply = dns.message.from_wire(sock.recv(4096))
        except TimeoutError:
            if limiter.stats["dropped"] > dropped_before:
                return "dropped"
            continue
        return "tc" if reply.flags & dns.flags.TC else "full"
    raise AssertionError("neither a reply nor a drop (hang guard)")


def test_over_udp_limited_tcp_free_cookies_exempt(monkeypatch: pytest.MonkeyPatch) -> None:
    with running_server(rrl_rate=5, rrl_slip=2) as server:
        limiter = server.responder.limiter
        assert limiter is not None
        # The buckets' clock stands still, as in the fake-clock tests above, so what is
        # limited does not depend on how fast this machine sends (no refill meanwhile).
        check = limiter.check
        monkeypatch.setattr(
            limiter, "check", lambda client, kind, name, now: check(client, kind, name, 0.0)
        )
        wire = dns.message.make_query("api.production.global.example.com", "A").to_wire()
        seen: Counter[str] = Counter()
        order = []
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for _ in range(60):
                dropped_before = limiter.stats["dropped"]
                sock.sendto(wire, ("127.0.0.1", server.port))
                outcome = _outcome(sock, limiter, dropped_before)
                seen[outcome] += 1
                order.append(outcome)
        # rate 5: five answers, then every 2nd limited one slips (TC), the rest drop.
        assert seen == Counter(full=5, tc=27, dropped=28), seen
        assert order[:7] == ["full"] * 5 + ["dropped", "tc"], order

        # TCP is never limited.
        for _ in range(20):
            reply = dns.message.from_wire(_tcp(server.port, wire))
            assert reply.answer

        # A client that returns our server cookie is a real client: not limited.
        client = b"abcdefgh"
        first = dns.message.make_query(
            "web.production.global.example.com", "A", options=[dns.edns.CookieOption(client, b"")]
        )
        reply = dns.message.from_wire(_tcp(server.port, first.to_wire()))
        [cookie] = [o for o in reply.options if o.otype == dns.edns.COOKIE]
        again = dns.message.make_query(
            "web.production.global.example.com",
            "A",
            options=[dns.edns.CookieOption(client, cookie.server)],
        )
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(10)  # a real client's queries are never dropped: only a hang guard
            for _ in range(30):
                sock.sendto(again.to_wire(), ("127.0.0.1", server.port))
                reply = dns.message.from_wire(sock.recv(4096))
                assert reply.answer and not reply.flags & dns.flags.TC
        assert limiter.stats["dropped"] == 28  # the cookie client lost nothing


def _tcp(port: int, wire: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(len(wire).to_bytes(2, "big") + wire)
        stream = sock.makefile("rb")
        return stream.read(int.from_bytes(stream.read(2), "big"))
