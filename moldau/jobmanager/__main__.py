"""``python -m moldau.jobmanager``: run the JobManager.

Prints ``moldau jobmanager ready on HOST:RPCPORT`` and then ``moldau jobmanager rest on
HOST:RESTPORT`` once both serve; exits 0 after a clean shutdown on SIGTERM/SIGINT, 1 when
it cannot start (the reason on stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from moldau.clients.daemon import LOG_FORMAT, run_daemon, setup_logging
from moldau.clients.rpc import parse_hostport
from moldau.jobmanager.config import (
    DEFAULT_REST_PORT,
    DEFAULT_RPC_PORT,
    ConfigError,
    JobManagerConfig,
    build_config,
    parse_flink_conf,
)

log = logging.getLogger("moldau.jobmanager")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="moldau-jobmanager",
        description="Run the moldau JobManager. Settings come from a flink-conf.yaml-style "
                    "file (key: value), then these flags.")
    p.add_argument("--rpc", metavar="HOST:PORT",
                   help=f"RPC address for TaskManagers and clients (default "
                        f"127.0.0.1:{DEFAULT_RPC_PORT}; port 0 picks a free one)")
    p.add_argument("--rest", metavar="HOST:PORT",
                   help=f"REST API and dashboard address (default 127.0.0.1:{DEFAULT_REST_PORT})")
    p.add_argument("--data-dir", help="directory for the job archive, uploads and the log")
    p.add_argument("--heartbeat-timeout-ms", type=int,
                   help="a TaskManager silent this long is lost (heartbeat.timeout, "
                        "default 10000)")
    p.add_argument("--config", metavar="FILE", help="flink-conf.yaml-style file")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


def load(argv: list[str] | None = None) -> tuple[JobManagerConfig, str]:
    args = parser().parse_args(argv)
    values: dict[str, str] = {}
    if args.config:
        try:
            values.update(parse_flink_conf(Path(args.config).read_text()))
        except OSError as e:
            raise ConfigError(f"cannot read config file {args.config}: {e.strerror}") from None
    try:
        if args.rpc:
            h, p = parse_hostport(args.rpc, DEFAULT_RPC_PORT)
            values["jobmanager.rpc.address"], values["jobmanager.rpc.port"] = h, str(p)
        if args.rest:
            h, p = parse_hostport(args.rest, DEFAULT_REST_PORT)
            values["rest.address"], values["rest.port"] = h, str(p)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if args.rest:
        values.pop("rest.bind-address", None)
    if args.heartbeat_timeout_ms is not None:
        values["heartbeat.timeout"] = str(args.heartbeat_timeout_ms)
    return build_config(values, args.data_dir), args.log_level


def main(argv: list[str] | None = None) -> int:
    try:
        config, level = load(argv)
        config.data_dir.mkdir(parents=True, exist_ok=True)
    except ConfigError as e:
        print(f"moldau jobmanager: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"moldau jobmanager: cannot use the data directory: {e}", file=sys.stderr)
        return 1
    setup_logging(level)
    fh = logging.FileHandler(config.data_dir / "jobmanager.log")
    fh.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.getLogger().addHandler(fh)
    from moldau.jobmanager.job_manager import JobManager

    exit_code = 0

    async def serve(stop: asyncio.Event) -> None:
        nonlocal exit_code
        jm = JobManager(config)
        try:
            host, port = await jm.start()
        except Exception as e:
            log.debug("start failed", exc_info=True)
            print(f"moldau jobmanager: cannot start: {e}", file=sys.stderr)
            exit_code = 1
            await jm.stop()
            return
        lines = [f"moldau jobmanager ready on {host}:{port}"]
        if jm.rest_address is not None:
            lines.append(f"moldau jobmanager rest on {jm.rest_address[0]}:{jm.rest_address[1]}")
        else:
            lines.append(f"moldau jobmanager rest unavailable ({jm.rest_error})")
        print("\n".join(lines), flush=True)
        await jm.serve(stop)

    rc = run_daemon(serve)
    return exit_code or rc


if __name__ == "__main__":
    sys.exit(main())
