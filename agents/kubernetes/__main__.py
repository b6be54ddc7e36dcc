"""``python -m agents.kubernetes``: the DaemonSet's entry point (settings from the env)."""

from __future__ import annotations

import asyncio
import signal
import sys

from pydantic import ValidationError

from agents.kubernetes.main import serve
from agents.kubernetes.settings import KubernetesAgentSettings
from registry import logs
from registry.errors import ConfigError
from registry.topology import describe


def main() -> int:
    try:
        settings = KubernetesAgentSettings()
    except ValidationError as exc:
        print(f"globaldns kubernetes agent: bad settings: {describe(exc)}", file=sys.stderr)
        return 2
    logs.configure(json=settings.log_json)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(settings, stop=stop)

    try:
        asyncio.run(run())
    except ConfigError as exc:
        print(f"globaldns kubernetes agent: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
