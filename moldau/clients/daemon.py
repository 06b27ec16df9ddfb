"""What every moldau daemon shares: uvloop, logging, and a signal-driven shutdown trigger.

The signal handler only sets an event; the daemon's ``serve(shutdown_trigger)`` owns the
shutdown order (stop accepting, drain, flush, deregister, cancel the rest).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable

import uvloop

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), format=LOG_FORMAT,
                        stream=sys.stderr)


def run_daemon(serve: Callable[[asyncio.Event], Awaitable[None]]) -> int:
    """Run ``serve(shutdown_event)`` on uvloop until it returns; SIGTERM/SIGINT set the event."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(stop)

    try:
        uvloop.run(main())
    except KeyboardInterrupt:
        return 130
    return 0
