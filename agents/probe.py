"""Dialling an endpoint: the I/O half of active probing."""

from __future__ import annotations

import asyncio
import contextlib


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
