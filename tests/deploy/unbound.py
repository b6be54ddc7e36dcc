"""A real Unbound on loopback, forwarding the global zone to a globaldns resolver: what
CoreDNS does in a cluster (deploy/coredns/global.server), with a forwarder Debian ships.

Its subnetcache module sends each client's /24 as EDNS Client Subnet to the resolver and
caches answers per the scope the resolver returns, so the resolver places the real client
rather than the forwarder.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode

from globaldns.redis_server import free_port
from tests.conftest import require_tool

ZONE = "global.example.com"


@dataclass(frozen=True)
class Unbound:
    port: int
    log: Path


def config(*, port: int, upstream_port: int, workdir: Path) -> str:
    return f"""server:
    interface: 127.0.0.1
    port: {port}
    do-daemonize: no
    use-syslog: no
    logfile: "{workdir / "unbound.log"}"
    verbosity: 1
    chroot: ""
    username: ""
    directory: "{workdir}"
    pidfile: "{workdir / "unbound.pid"}"
    num-threads: 1
    so-reuseport: no
    access-control: 127.0.0.0/8 allow
    do-not-query-localhost: no
    do-ip6: no
    qname-minimisation: no
    # No DNSSEC validation: the zone is unsigned, and there is no root to ask.
    module-config: "subnetcache iterator"
    domain-insecure: "{ZONE}"
    # EDNS Client Subnet towards the globaldns resolver only, the client's /24.
    send-client-subnet: 127.0.0.1
    max-client-subnet-ipv4: 24
    client-subnet-always-forward: yes
    # Unbound's own defaults would hold answers longer than some TTLs; say none.
    cache-min-ttl: 0
    serve-expired: no
    prefetch: no
    # Answered by Unbound itself: how the test knows it is up without asking upstream.
    local-zone: "unbound.test." static
    local-data: "ready.unbound.test. 60 IN A 127.0.0.1"

forward-zone:
    name: "{ZONE}"
    forward-addr: 127.0.0.1@{upstream_port}

remote-control:
    control-enable: no
"""


@contextlib.contextmanager
def running(upstream_port: int, workdir: Path) -> Iterator[Unbound]:
    binary = require_tool("unbound")
    port = free_port()
    conf = workdir / "unbound.conf"
    conf.write_text(config(port=port, upstream_port=upstream_port, workdir=workdir))
    checker = require_tool("unbound-checkconf")
    checked = subprocess.run([checker, str(conf)], capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    process = subprocess.Popen(
        [binary, "-d", "-c", str(conf)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _wait_until_listening(process, port, workdir / "unbound.log")
        yield Unbound(port=port, log=workdir / "unbound.log")
    finally:
        process.terminate()
        try:
            process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


def _wait_until_listening(process: subprocess.Popen[str], port: int, log: Path) -> None:
    """Until Unbound answers its own local name: a hang guard only, never a speed."""
    deadline = time.monotonic() + 30
    probe = dns.message.make_query("ready.unbound.test", "A")
    while True:
        if process.poll() is not None:
            output = process.stdout.read() if process.stdout else ""
            text = log.read_text() if log.exists() else ""
            raise AssertionError(f"unbound exited {process.returncode}: {output}{text}")
        try:
            dns.query.udp(probe, "127.0.0.1", port=port, timeout=0.5)
            return
        except (dns.exception.Timeout, OSError):
            if time.monotonic() > deadline:
                raise AssertionError("unbound never answered (hang guard, 30 s)") from None


def query(
    port: int, name: str, rdtype: str = "A", *, source: str = "127.0.0.1"
) -> dns.message.Message:
    """A stub's query: recursion desired, no ECS of its own (Unbound adds it)."""
    message = dns.message.make_query(name, rdtype, use_edns=0)
    message.flags |= dns.flags.RD
    return dns.query.udp(message, "127.0.0.1", port=port, source=source, timeout=5)
