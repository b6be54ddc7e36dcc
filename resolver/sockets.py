"""Every socket the resolver listens on is made here."""

from __future__ import annotations

import socket


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def udp(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    sock = socket.socket(_family(host), socket.SOCK_DGRAM)
    try:
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setblocking(False)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise _naming(exc, host, port, "udp") from exc
    return sock


def tcp(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setblocking(False)
        sock.bind((host, port))
        sock.listen(512)
    except OSError as exc:
        sock.close()  # a port taken for TCP (pair() tries another) must not leak it
        raise _naming(exc, host, port, "tcp") from exc
    return sock


def _naming(exc: OSError, host: str, port: int, proto: str) -> OSError:
    """The same error, saying which address it was about (the CLI names the setting)."""
    error = OSError(exc.errno, f"{exc.strerror} ({host}:{port}/{proto})")
    error.filename = f"{host}:{port}"
    return error


def pair(host: str, port: int) -> tuple[socket.socket, socket.socket]:
    """A UDP and a TCP socket on the same port; with port 0, a free one for both."""
    for _ in range(50):
        u = udp(host, port)
        try:
            return u, tcp(host, u.getsockname()[1])
        except OSError:
            u.close()
            if port:
                raise
    raise OSError(f"no port free for both UDP and TCP on {host}")
