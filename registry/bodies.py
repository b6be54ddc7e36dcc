"""Request bodies: read within a size and a time, parsed within a depth and an integer width.

Everything here turns bad input into a :class:`~registry.rejections.Rejection` naming what
is wrong, never into an exception the server answers 500 for:

* **Time.** A body must arrive within ``timeout`` seconds of its headers (a client that
  sends one byte a minute holds a connection and a handler; 408, and the connection is
  closed). A client that goes away mid-body, or a gzip body that does not decompress,
  is a 400 too.
* **Size.** At most ``limit`` bytes after decompression (413, naming the limit; the
  connection is closed after the answer).
* **Depth.** The standard library's parser recurses, so a body of 100,000 ``[`` was a
  ``RecursionError``: bodies nested deeper than :data:`MAX_DEPTH` are refused before
  parsing, by a scan that never recurses. Reports go through pydantic's own parser
  instead (no Python recursion; it refuses nesting past 200 levels and numbers past
  4,300 digits), and the model bounds every integer field.
* **Integers.** A number of thousands of digits made ``int()`` raise (Python's
  4,300-digit guard) and one of 20 digits reached Redis: integers beyond 64 bits are
  refused while parsing, before ``int()`` is called.
* **Shape.** Handlers that expect an object get one, or a 400 (``[1, 2]`` as a drain was
  a ``TypeError``).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from typing import Any

from aiohttp import web

from registry.errors import LimitExceeded
from registry.model import MAX_INT64
from registry.rejections import Rejection

MAX_DEPTH = 32
"""Deepest nesting of a JSON body (a policy override, the deepest body parsed here, has 3)."""

INT64_MIN = -(1 << 63)

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"?', re.DOTALL)
"""A JSON string; an unterminated one runs to the end (with the closing quote required,
each of n unterminated quotes would scan to the end again: n squared)."""
_EMPTY_PAIR = re.compile(rb"\[\]|\{\}")
_NOT_BRACKET = bytes(c for c in range(256) if c not in b"[]{}")


class _BadNumber(ValueError):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def deeper_than(raw: bytes, limit: int) -> bool:
    """Whether the JSON text ``raw`` nests more than ``limit`` levels (without recursion).

    Strings are blanked, everything but brackets dropped, then innermost pairs removed
    ``limit`` times: what is left was deeper. Unbalanced text is left to the parser.
    """
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKET)
    for _ in range(limit):
        if not brackets:
            return False
        fewer = _EMPTY_PAIR.sub(b"", brackets)
        if fewer == brackets:
            return False  # unbalanced or mismatched: not JSON, the parser says where
        brackets = fewer
    return bool(brackets)


def _int64(digits: str) -> int:
    if len(digits.lstrip("-")) > 19 or not INT64_MIN <= (value := int(digits)) <= MAX_INT64:
        shown = digits if len(digits) <= 24 else f"{digits[:12]}...({len(digits)} digits)"
        raise _BadNumber(f"integer {shown} does not fit in 64 bits")
    return value


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _BadNumber(f"number {text[:24]} is out of range")
    return value


def _no_constant(name: str) -> Any:
    raise _BadNumber(f"{name} is not JSON")


def _surrogate_free(value: Any) -> None:
    """A lone ``\\ud800`` escape parses to a string nothing can encode: refuse it here
    (the depth is already bounded, so this recursion is too)."""
    if isinstance(value, str):
        value.encode()
    elif isinstance(value, dict):
        for key, item in value.items():
            key.encode()
            _surrogate_free(item)
    elif isinstance(value, list):
        for item in value:
            _surrogate_free(item)


def parse(raw: bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """The JSON value of ``raw``; a 400 :class:`Rejection` naming the problem otherwise."""
    if deeper_than(raw, max_depth):
        raise Rejection(400, "json_depth", f"body nests deeper than {max_depth} levels")
    try:
        value = json.loads(
            raw.decode(), parse_int=_int64, parse_float=_finite, parse_constant=_no_constant
        )
        _surrogate_free(value)
    except _BadNumber as exc:
        raise Rejection(400, "json_integer", f"body: {exc.message}") from None
    except UnicodeEncodeError:
        raise Rejection(
            400, "json", "body has an unpaired surrogate escape (\\ud800 to \\udfff): not text"
        ) from None
    except UnicodeDecodeError as exc:
        raise Rejection(400, "json", f"body is not UTF-8: {exc}") from None
    except json.JSONDecodeError as exc:
        raise Rejection(400, "json", f"body is not JSON: {exc}") from None
    return value


def unparsable(message: str) -> Rejection:
    """A report pydantic could not parse (``Invalid JSON: ...``), by what was wrong."""
    if "recursion limit" in message:
        return Rejection(400, "json_depth", f"body nests too deep: {message}")
    if "number out of range" in message:
        return Rejection(400, "json_integer", f"body: {message}")
    return Rejection(400, "json", f"body is not JSON: {message}")


def parse_object(raw: bytes, *, what: str) -> dict[str, Any]:
    """Like :func:`parse`, for handlers that take an object; an empty body is ``{}``."""
    if not raw.strip():
        return {}
    value = parse(raw)
    if not isinstance(value, dict):
        raise Rejection(
            400,
            "body_shape",
            f"{what} must be a JSON object, not {type(value).__name__}",
            field="(body)",
        )
    return value


async def read(
    request: web.Request, *, limit: int, timeout: float, what: str = "body bytes"
) -> bytes:
    """The whole body (aiohttp undoes ``Content-Encoding: gzip``), all of it within
    ``timeout`` seconds; :class:`~registry.errors.LimitExceeded` past ``limit`` bytes."""
    parts: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.content.iter_chunked(1 << 16):
                size += len(chunk)
                if size > limit:
                    raise LimitExceeded(what, size, limit)
                parts.append(chunk)
    except TimeoutError:
        raise Rejection(
            408, "body_timeout", f"the body did not arrive within {timeout:g} s", close=True
        ) from None
    except (ConnectionError, web.RequestPayloadError) as exc:
        raise Rejection(
            400, "body_incomplete", f"the body could not be read: {exc}", close=True
        ) from None
    return b"".join(parts)


def too_large(exc: LimitExceeded) -> Rejection:
    """413 naming the limit and the value (``{"error", "limit", "value", "max"}``)."""
    return Rejection(
        413, "too_large", str(exc), limit=exc.limit, value=exc.value, max=exc.maximum, close=True
    )
