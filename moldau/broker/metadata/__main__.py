"""``python -m moldau.broker.metadata``: run one metadata node until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Sequence

from moldau.broker.metadata.config import MetadataConfig, load_config
from moldau.broker.metadata.server import MetadataServer
from moldau.clients.daemon import run_daemon, setup_logging

log = logging.getLogger("moldau.broker.metadata")


async def serve(config: MetadataConfig, stop: asyncio.Event) -> None:
    server = MetadataServer(config)
    host, port = await server.start()
    log.info("serving on %s:%d, data in %s", host, port, config.data_dir)
    if server.peer_address is not None:
        log.info("quorum member %d of %s, peer port on %s:%d", config.id,
                 sorted(config.peer_map()), *server.peer_address)
    print(f"moldau metadata ready on {host}:{port}", flush=True)
    await server.serve_until(stop)


def main(argv: Sequence[str] | None = None) -> int:
    config = load_config(argv)
    setup_logging(config.log_level)
    return run_daemon(lambda stop: serve(config, stop))


if __name__ == "__main__":
    sys.exit(main())
