"""``moldau broker ...`` and ``moldau metadata ...``: run a daemon, or inspect the metadata tree.

The daemons parse their own arguments, so ``moldau broker ARGS`` replaces this process with
``python -m moldau.broker ARGS`` (the CLI never imports the daemons' code). ``moldau
metadata ls|get|stat PATH`` reads the tree through the metadata client; any other
``moldau metadata ARGS`` runs the metadata daemon the same way as the broker.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from moldau.clients.cli.base import CliError, check_reachable, child_env, split_servers

BROKER_MODULE = "moldau.broker"
METADATA_MODULE = "moldau.broker.metadata"
# daemons that take every argument themselves
EXEC_MODULES = {"broker": BROKER_MODULE, "jobmanager": "moldau.jobmanager",
                "taskmanager": "moldau.taskmanager"}
INSPECT_COMMANDS = ("ls", "get", "stat")
DEFAULT_ZOOKEEPER = "127.0.0.1:2181"


def exec_module(module: str, args: Sequence[str]) -> NoReturn:
    """Replace this process with ``python -m module args`` (same interpreter, same pid)."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, [sys.executable, "-m", module, *args], child_env())
    except OSError as e:  # pragma: no cover - the interpreter itself is missing
        sys.stderr.write(f"Error: cannot run {sys.executable}: {e.strerror or e}\n")
        sys.exit(1)


def passthrough(argv: Sequence[str]) -> int | None:
    """Exec the daemon when ``argv`` names one; None when argparse should handle argv."""
    if not argv:
        return None
    if argv[0] in EXEC_MODULES:
        exec_module(EXEC_MODULES[argv[0]], argv[1:])
    if argv[0] == "metadata":
        rest = list(argv[1:])
        if rest and rest[0] in INSPECT_COMMANDS:
            return None
        if any(a in ("-h", "--help") for a in rest):
            sys.stdout.write(
                "moldau metadata: inspect the metadata tree, or run a metadata node.\n\n"
                "  moldau metadata ls PATH [--zookeeper HOST:PORT]    list the children\n"
                "  moldau metadata get PATH [--zookeeper HOST:PORT]   print the data\n"
                "  moldau metadata stat PATH [--zookeeper HOST:PORT]  print the node's stat\n"
                "  moldau metadata [daemon options]                   run a metadata node:\n\n")
        exec_module(METADATA_MODULE, rest)
    return None


def register(sub: Any, name: str, **kw: Any) -> None:
    """``moldau metadata ls|get|stat`` (``moldau broker`` never reaches argparse)."""
    md = sub.add_parser(
        name, **kw,
        description="Inspect the metadata tree. Without a subcommand, run a metadata node "
        "(moldau metadata --help shows its options).")
    cmds = md.add_subparsers(dest="md_command", metavar="ls|get|stat", required=True)
    for name, text in (("ls", "list the children of PATH, one per line"),
                       ("get", "print the data of PATH"),
                       ("stat", "print the stat fields of PATH")):
        p = cmds.add_parser(name, help=text, description=text[:1].upper() + text[1:] + ".")
        p.add_argument("path", metavar="PATH", help="a node path such as /brokers/ids")
        p.add_argument("--zookeeper", "--server", dest="zookeeper", metavar="HOST:PORT[,...]",
                       default=None,
                       help=f"the metadata service (default: the local cluster's, else "
                       f"{DEFAULT_ZOOKEEPER})")
        p.set_defaults(func=run_inspect)


def run_inspect(args: argparse.Namespace) -> int:
    if not args.path.startswith("/"):
        raise CliError(f"path must start with '/': {args.path!r}")
    if args.zookeeper is None:
        from moldau.clients.cli.local import default_zookeeper

        args.zookeeper = default_zookeeper() or DEFAULT_ZOOKEEPER
    from moldau.clients.cli.base import run_async

    return run_async(_inspect(args))


async def _inspect(args: argparse.Namespace) -> int:
    await check_reachable(split_servers(args.zookeeper, 2181), "the metadata service at")
    from moldau.clients.metadata.client import MetadataClient
    from moldau.clients.protocol import ErrorCode, MoldauError

    client = MetadataClient(args.zookeeper)
    await client.start()
    try:
        if args.md_command == "ls":
            for child in sorted(await client.children(args.path)):
                print(child)
        elif args.md_command == "get":
            data, _ = await client.get(args.path)
            out = sys.stdout.buffer
            out.write(bytes(data))
            if data and not bytes(data).endswith(b"\n"):
                out.write(b"\n")
            out.flush()
        else:
            _, stat = await client.get(args.path)
            for key, value in stat_fields(stat).items():
                print(f"{key} = {value}")
    except MoldauError as e:
        if e.code == ErrorCode.NO_NODE:
            raise CliError(f"Node does not exist: {args.path}") from None
        raise
    finally:
        await client.close()
    return 0


def stat_fields(stat: Any) -> dict[str, Any]:
    """A Stat as ordered name -> value (a dataclass, a NamedTuple, or a dict)."""
    if isinstance(stat, dict):
        return dict(stat)
    if hasattr(stat, "_asdict"):
        return dict(stat._asdict())
    import dataclasses

    if dataclasses.is_dataclass(stat) and not isinstance(stat, type):
        return {f.name: getattr(stat, f.name) for f in dataclasses.fields(stat)}
    return {k: v for k, v in vars(stat).items() if not k.startswith("_")}
