"""Dialling an endpoint: the I/O half of active probing.

``tcp`` passes when a connection opens; ``http`` when a ``GET`` answers with a status from
200 to 399 (the kubelet's rule for HTTP probes). Both return ``(ok, why not)`` and never
raise: a probe's failure is a verdict, not an error.
"""

from __future__ import annotations

import asyncio
import contextlib

from agents.source import Check, Target


async def tcp(address: str, port: int, *, timeout: float) -> tuple[bool, str]:
    """Whether a TCP connection opens within ``timeout``, and why not."""
    try:
        _reader, writer = await asyncio.wait_for(asyncio.open_connection(address, port), timeout)
    except TimeoutError:
        return False, f"tcp {port}: no answer in {timeout:g}s"
    except OSError as exc:
        return False, f"tcp {port}: {exc.strerror or exc.__class__.__name__}"
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True, ""


async def http(address: str, port: int, path: str, *, timeout: float) -> tuple[bool, str]:
    """Whether ``GET path`` answers 2xx/3xx within ``timeout``, and why not."""
    host = f"[{address}]" if ":" in address else address
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: globaldns-agent\r\n"
        "Accept: */*\r\nConnection: close\r\n\r\n"
    ).encode()

    async def exchange() -> bytes:
        reader, writer = await asyncio.open_connection(address, port)
        try:
            writer.write(request)
            await writer.drain()
            return await reader.readline()
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    try:
        status_line = await asyncio.wait_for(exchange(), timeout)
    except TimeoutError:
        return False, f"http {port}{path}: no answer in {timeout:g}s"
    except OSError as exc:
        return False, f"http {port}{path}: {exc.strerror or exc.__class__.__name__}"
    parts = status_line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return False, f"http {port}{path}: not an HTTP answer"
    status = int(parts[1])
    if 200 <= status < 400:
        return True, ""
    return False, f"http {port}{path}: status {status}"


async def check(check: Check, target: Target) -> tuple[bool, str]:
    """Run ``check`` against one target."""
    if check.kind == "http":
        return await http(target.address, target.port, check.path, timeout=check.timeout_s)
    return await tcp(target.address, target.port, timeout=check.timeout_s)
