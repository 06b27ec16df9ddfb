"""The ``moldau`` command: dispatch to a console tool, and report failures as one line.

Start-up is kept fast on purpose: this module and the command modules it imports to build
the parser use only the standard library at import time; asyncio, the wire protocol and the
client library are imported by the command that runs.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from moldau.clients.cli import daemons
from moldau.clients.cli.base import ArgumentParser, CliError

VERSION = "0.1.0"

# name, aliases, module (under moldau.clients.cli; None: handled before argparse), help.
# Only the module of the command being run is imported.
COMMANDS: tuple[tuple[str, tuple[str, ...], str | None, str], ...] = (
    ("topics", (), "topics",
     "create, list, describe, alter and delete topics (kafka-topics.sh)"),
    ("console-producer", ("produce",), "console_producer",
     "send each line of standard input as a record (kafka-console-producer.sh)"),
    ("console-consumer", ("consume",), "console_consumer",
     "print the records of a topic as they arrive (kafka-console-consumer.sh)"),
    ("broker", (), None, "run a broker daemon (moldau broker --help for its options)"),
    ("jobmanager", (), None, "run a JobManager daemon (moldau jobmanager --help)"),
    ("taskmanager", (), None, "run a TaskManager daemon (moldau taskmanager --help)"),
    ("metadata", (), "daemons",
     "inspect the metadata tree (ls/get/stat), or run a metadata node"),
    ("local", (), "local", "run an embedded cluster on this machine (start, status, stop, "
     "demo)"),
    ("run", (), "jobs", "run a job script on the cluster (flink run)"),
    ("list", (), "jobs", "list the jobs of the JobManager (flink list)"),
    ("cancel", (), "jobs", "cancel a running job (flink cancel)"),
    ("info", (), "jobs", "print the job graph a job script builds (flink info)"),
)


def version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError
        from importlib.metadata import version as dist_version

        return dist_version("moldau")
    except (ImportError, PackageNotFoundError):  # running from a source tree
        return VERSION


def build_parser(selected: str | None = None) -> ArgumentParser:
    """The ``moldau`` parser; only ``selected``'s subparser is built in full (all of them
    when None), the others are listed by name and help."""
    import importlib

    parser = ArgumentParser(
        prog="moldau",
        description="moldau: a Kafka-style distributed log and a Flink-style stream "
        "processor. Console tools for topics, producing and consuming, the metadata "
        "service, the daemons, and an embedded local cluster.",
        epilog="Run 'moldau COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    for name, aliases, module, help_text in COMMANDS:
        if module is not None and (selected is None or selected == name or selected in aliases):
            importlib.import_module(f"moldau.clients.cli.{module}").register(
                sub, name, aliases=list(aliases), help=help_text)
        else:
            sub.add_parser(name, add_help=False, aliases=list(aliases), help=help_text)
    return parser


def _selected(argv: Sequence[str]) -> str | None:
    for a in argv:
        if not a.startswith("-"):
            return a
    return ""


def _report(exc: BaseException) -> int:
    """Turn an exception that escaped a command into one line on stderr; the exit status."""
    if isinstance(exc, CliError):
        print(f"{exc.prefix}{exc.message}", file=sys.stderr)
        return exc.exit_code
    from moldau.clients.protocol import MoldauError

    if isinstance(exc, MoldauError):
        detail = f": {exc.message}" if exc.message else ""
        print(f"Error: {exc.code.name}{detail}", file=sys.stderr)
        return 1
    if isinstance(exc, TimeoutError):
        print(f"Error: timed out{': ' + str(exc) if str(exc) else ''}", file=sys.stderr)
        return 1
    if isinstance(exc, OSError):
        print(f"Error: {exc.strerror or exc}", file=sys.stderr)
        return 1
    if os.environ.get("MOLDAU_DEBUG"):
        raise exc
    print(f"Error: unexpected {type(exc).__name__}: {exc} "
          "(set MOLDAU_DEBUG=1 to see where)", file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    # the daemons parse their own arguments: hand them over untouched
    passthrough = daemons.passthrough(args_list)
    if passthrough is not None:
        return passthrough
    parser = build_parser(_selected(args_list))
    args = parser.parse_args(args_list)
    if args.version:
        print(f"moldau {version()}")
        return 0
    if not args.command:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # stdout went away (``| head``): not an error worth a line
        _silence_stdout()
        return 0
    except Exception as e:
        return _report(e)


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
