"""structlog, configured once per process: console lines in dev, JSON everywhere else."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

import structlog

from registry.badrecords import BadRecord


def configure(*, json: bool, level: str = "info") -> None:
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # aiohttp's access log and asyncio's warnings go through the standard library.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(name)s %(message)s")


def skipped(log: structlog.typing.FilteringBoundLogger, reader: str) -> Callable[[BadRecord], None]:
    """One warning line per bad record the store skipped (the store says when: the first
    time, then at most once a minute while it stays bad); no traceback, it is data."""

    def say(record: BadRecord) -> None:
        log.warning(
            f"unreadable record in Redis skipped by the {reader}",
            key=record.key,
            kind=record.kind,
            field=record.field,
            why=record.why,
        )

    return say
