"""``python -m moldau.broker``: run one broker.

Prints ``moldau broker <id> ready on HOST:PORT`` once it serves; exits 0 after a clean
shutdown on SIGTERM/SIGINT, 1 when it cannot start (the reason on one stderr line).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from moldau.broker.config import (
    BrokerConfig,
    ConfigError,
    build_config,
    parse_override,
    parse_properties,
)
from moldau.clients.daemon import run_daemon, setup_logging

log = logging.getLogger("moldau.broker")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="moldau-broker",
        description="Run a moldau broker. Settings come from a Kafka-style server.properties "
                    "file, then these flags, then --override key=value (later wins).",
    )
    p.add_argument("config_file", nargs="?", help="server.properties file (as --config)")
    p.add_argument("--config", dest="config_opt", metavar="FILE",
                   help="server.properties file")
    p.add_argument("--broker-id", type=int, help="broker.id: this broker's unique id")
    p.add_argument("--listeners", help="listeners: HOST:PORT or PLAINTEXT://HOST:PORT to bind "
                                       "(port 0 picks a free one)")
    p.add_argument("--log-dirs", help="log.dirs: comma-separated data directories")
    p.add_argument("--zookeeper", help="zookeeper.connect: metadata service HOST:2181[,...]")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="set any server.properties key, e.g. num.partitions=3, "
                        "auto.create.topics.enable=true (default false here, unlike Kafka), "
                        "log.flush.policy=pagecache (default durable: produce acks wait for "
                        "fdatasync)")
    p.add_argument("--log-level", default="INFO",
                   choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


def load(argv: list[str] | None = None) -> tuple[BrokerConfig, list[str], str]:
    args = parser().parse_args(argv)
    sources: list[dict[str, str]] = []
    for path in (args.config_file, args.config_opt):
        if path:
            try:
                sources.append(parse_properties(Path(path).read_text()))
            except OSError as e:
                raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    flags: dict[str, str] = {}
    if args.broker_id is not None:
        flags["broker.id"] = str(args.broker_id)
    if args.listeners:
        flags["listeners"] = args.listeners
    if args.log_dirs:
        flags["log.dirs"] = args.log_dirs
    if args.zookeeper:
        flags["zookeeper.connect"] = args.zookeeper
    sources.append(flags)
    sources.append(dict(parse_override(o) for o in args.override))
    config, unknown = build_config(sources)
    return config, unknown, args.log_level


def main(argv: list[str] | None = None) -> int:
    try:
        config, unknown, level = load(argv)
    except ConfigError as e:
        print(f"moldau broker: {e}", file=sys.stderr)
        return 1
    setup_logging(level)
    if unknown:
        log.warning("ignoring unknown config keys: %s", ", ".join(unknown))
    # the daemon's imports are heavy: only pay for them once the config is good
    from moldau.broker.server import BrokerServer

    exit_code = 0

    async def serve(stop: asyncio.Event) -> None:
        nonlocal exit_code
        try:
            server = BrokerServer(config)
        except ValueError as e:
            print(f"moldau broker: {e}", file=sys.stderr)
            exit_code = 1
            return
        try:
            host, port = await server.start()
        except Exception as e:
            log.debug("start failed", exc_info=True)
            print(f"moldau broker {config.broker_id}: cannot start: {e}", file=sys.stderr)
            exit_code = 1
            await server.stop()
            return
        print(f"moldau broker {config.broker_id} ready on {host}:{port}", flush=True)
        await server.serve(stop)

    rc = run_daemon(serve)
    return exit_code or rc


if __name__ == "__main__":
    sys.exit(main())
