"""``python -m moldau.taskmanager``: run one TaskManager.

Prints ``moldau taskmanager <id> ready on HOST:PORT`` once its slot processes are up
(PORT serves the JobManager; slot ``n`` receives records on PORT+1+n when a port is
given, on a free port otherwise); exits 0 after a clean shutdown on SIGTERM/SIGINT, 1 when
it cannot start.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from moldau.clients.daemon import LOG_FORMAT, run_daemon, setup_logging
from moldau.clients.rpc import parse_hostport

log = logging.getLogger("moldau.taskmanager")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="moldau-taskmanager",
                                description="Run a moldau TaskManager (a stream worker).")
    p.add_argument("--jobmanager", required=True, metavar="HOST:PORT",
                   help="the JobManager's RPC address (its --rpc, default port 6123)")
    p.add_argument("--slots", type=int, default=1,
                   help="task slots (each one OS process); default 1")
    p.add_argument("--data-dir", required=True, help="directory for stdout, log and job files")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--data-port", type=int, default=0,
                   help="port for the JobManager's requests; slot n takes PORT+1+n for "
                        "records (0: free ports)")
    p.add_argument("--id", dest="tm_id", help="this TaskManager's id (default HOST:PORT-xxxxxx)")
    p.add_argument("--cancel-timeout-s", type=float, default=30.0,
                   help="kill a slot process whose tasks ignore a cancel this long")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        jm = parse_hostport(args.jobmanager, 6123)
    except ValueError as e:
        print(f"moldau taskmanager: {e}", file=sys.stderr)
        return 1
    if args.slots < 1:
        print("moldau taskmanager: --slots must be at least 1", file=sys.stderr)
        return 1
    data_dir = Path(args.data_dir)
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        print(f"moldau taskmanager: cannot use --data-dir {data_dir}: {e.strerror}",
              file=sys.stderr)
        return 1
    setup_logging(args.log_level)
    fh = logging.FileHandler(data_dir / "taskmanager.log")
    fh.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.getLogger().addHandler(fh)
    from moldau.taskmanager.task_executor import TaskExecutor

    exit_code = 0

    async def serve(stop: asyncio.Event) -> None:
        nonlocal exit_code
        te = TaskExecutor(jobmanager=jm, slots=args.slots, data_dir=data_dir, host=args.host,
                          port=args.data_port, tm_id=args.tm_id, log_level=args.log_level,
                          cancel_timeout=args.cancel_timeout_s)
        try:
            host, port = await te.start()
        except Exception as e:
            log.debug("start failed", exc_info=True)
            print(f"moldau taskmanager: cannot start: {e}", file=sys.stderr)
            exit_code = 1
            await te.stop()
            return
        print(f"moldau taskmanager {te.tm_id} ready on {host}:{port}", flush=True)
        await te.serve(stop)

    rc = run_daemon(serve)
    return exit_code or rc


if __name__ == "__main__":
    sys.exit(main())
