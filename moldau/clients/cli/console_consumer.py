"""``moldau console-consumer``: Kafka's ``kafka-console-consumer.sh``.

Prints each record as it arrives (Kafka's DefaultMessageFormatter: value, optionally
timestamp, partition, offset, headers and key), flushing stdout after every poll so a pipe
or a terminal sees records at once. Without ``--partition`` it reads every partition of the
topic, and picks up partitions added while it runs. ``Processed a total of N messages`` goes
to stderr at exit, whether by ``--max-messages``, ``--timeout-ms``, end of input or Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING, Any

from moldau.clients.cli.base import (
    CliError,
    check_reachable,
    client_kwargs,
    parse_properties,
    read_properties_file,
    split_servers,
)

if TYPE_CHECKING:
    from moldau.clients.records import Record

POLL_MS = 500
PARTITION_REFRESH_S = 5.0
TOPIC_WAIT_S = 5.0
FORMATTER_DEFAULTS = {
    "print.timestamp": "false", "print.key": "false", "print.value": "true",
    "print.partition": "false", "print.offset": "false", "print.headers": "false",
    "key.separator": "\t", "line.separator": "\n", "headers.separator": ",",
    "headers.key.separator": ":", "null.literal": "null",
}


def register(sub: Any, name: str, **kw: Any) -> None:
    p = sub.add_parser(
        name, **kw,
        description="Read records from a topic and print each one on its own line, as "
        "kafka-console-consumer.sh does.")
    p.add_argument("--bootstrap-server", "--broker-list", dest="bootstrap_server",
                   metavar="HOST:PORT[,...]", required=True, help="the broker(s) to connect to")
    p.add_argument("--topic", help="the topic to consume")
    p.add_argument("--include", "--whitelist", dest="include", metavar="REGEX",
                   help="consume every topic whose name matches this regular expression")
    p.add_argument("--from-beginning", action="store_true",
                   help="start with the earliest record, not with the records produced from "
                   "now on")
    p.add_argument("--partition", type=int, metavar="P",
                   help="consume only this partition (from the end unless --offset or "
                   "--from-beginning says otherwise)")
    p.add_argument("--offset", metavar="OFFSET",
                   help="with --partition: a non-negative offset, 'earliest' or 'latest' "
                   "(default: latest)")
    p.add_argument("--max-messages", type=int, metavar="N",
                   help="exit after printing N records")
    p.add_argument("--timeout-ms", type=int, metavar="MS",
                   help="exit when no record arrives for MS milliseconds")
    p.add_argument("--property", action="append", metavar="KEY=VALUE",
                   help="a formatter setting: print.key, print.timestamp, print.partition, "
                   "print.offset, print.headers, print.value (true/false), key.separator, "
                   "line.separator, headers.separator, null.literal")
    p.add_argument("--consumer-property", action="append", metavar="KEY=VALUE",
                   help="a consumer setting such as fetch.max.wait.ms=100 (repeatable)")
    p.add_argument("--consumer.config", "--consumer-config", dest="consumer_config",
                   metavar="FILE", help="a properties file of consumer settings")
    p.add_argument("--group", metavar="GROUP",
                   help="accepted; consumer groups are not built yet, so this consumer "
                   "reads all partitions itself and commits nothing")
    p.add_argument("--isolation-level", choices=("read_uncommitted", "read_committed"),
                   help="accepted for compatibility (there are no transactions yet)")
    p.add_argument("--skip-message-on-error", action="store_true",
                   help="accepted for compatibility")
    p.set_defaults(func=run)


class Formatter:
    """Kafka's DefaultMessageFormatter (pure): a record -> the bytes printed for it."""

    def __init__(self, props: dict[str, str]) -> None:
        unknown = sorted(set(props) - set(FORMATTER_DEFAULTS))
        if unknown:
            sys.stderr.write(f"Warning: ignoring unknown --property {', '.join(unknown)}\n")
        p = {**FORMATTER_DEFAULTS, **props}

        def flag(k: str) -> bool:
            return p[k].strip().lower() == "true"

        self.timestamp = flag("print.timestamp")
        self.key = flag("print.key")
        self.value = flag("print.value")
        self.partition = flag("print.partition")
        self.offset = flag("print.offset")
        self.headers = flag("print.headers")
        self.sep = _unescape(p["key.separator"]).encode()
        self.line_sep = _unescape(p["line.separator"]).encode()
        self.headers_sep = _unescape(p["headers.separator"]).encode()
        self.headers_key_sep = _unescape(p["headers.key.separator"]).encode()
        self.null = p["null.literal"].encode()
        self.plain = not (self.timestamp or self.key or self.partition or self.offset
                          or self.headers) and self.value

    def render(self, records: list[Record]) -> bytes:
        """The bytes printed for ``records``; values only (the default) without a Python
        call per record."""
        if self.plain:
            from operator import attrgetter

            values = list(map(attrgetter("value"), records))
            if None in values:
                values = [self.null if v is None else v for v in values]
            return self.line_sep.join(values) + self.line_sep
        return b"".join(map(self.format, records))

    def format(self, r: Record) -> bytes:
        if self.plain:
            return (self.null if r.value is None else r.value) + self.line_sep
        cols: list[bytes] = []
        if self.timestamp:
            cols.append(b"CreateTime:%d" % r.timestamp if r.timestamp >= 0
                        else b"NO_TIMESTAMP")
        if self.partition:
            cols.append(b"Partition:%d" % r.partition)
        if self.offset:
            cols.append(b"Offset:%d" % r.offset)
        if self.headers:
            hs = r.headers or ()
            cols.append(self.headers_sep.join(
                _to_bytes(k) + self.headers_key_sep + (self.null if v is None else _to_bytes(v))
                for k, v in hs) if hs else b"NO_HEADERS")
        if self.key:
            cols.append(self.null if r.key is None else r.key)
        out = self.sep.join(cols)
        if self.value:
            if cols:
                out += self.sep
            out += self.null if r.value is None else r.value
        return out + self.line_sep


def _unescape(s: str) -> str:
    """``\\t``, ``\\n`` typed in a shell argument mean the control characters, as in Kafka."""
    return s.replace("\\t", "\t").replace("\\n", "\n").replace("\\r", "\r")


def _to_bytes(x: str | bytes) -> bytes:
    return x if isinstance(x, bytes) else x.encode()


class _Count:
    n = 0
    started = False  # "Processed a total" is only said once consuming began


def run(args: argparse.Namespace) -> int:
    if bool(args.topic) == bool(args.include):
        raise CliError("exactly one of --topic or --include is required")
    if args.offset is not None and args.partition is None:
        raise CliError("The partition is required when offset is specified.")
    if args.offset is not None and args.from_beginning:
        raise CliError("Options from-beginning and offset cannot be specified together.")
    if args.partition is not None and args.include:
        raise CliError("--partition needs --topic, not --include")
    if args.offset not in (None, "earliest", "latest") and not args.offset.isdigit():
        raise CliError(f"--offset must be a non-negative number, 'earliest' or 'latest', "
                           f"not {args.offset!r}")
    if args.max_messages is not None and args.max_messages < 1:
        raise CliError("--max-messages must be at least 1")
    formatter = Formatter(parse_properties(args.property, "--property"))
    props: dict[str, str] = {}
    if args.consumer_config:
        props.update(read_properties_file(args.consumer_config))
    props.update(parse_properties(args.consumer_property, "--consumer-property"))
    props.pop("group.id", None)
    props.setdefault("auto.offset.reset", "earliest" if args.from_beginning else "latest")
    if args.group:
        sys.stderr.write(f"Note: consumer groups are not built yet: --group {args.group} is "
                         "accepted, but this consumer reads every partition itself and "
                         "commits no offsets.\n")
    count = _Count()
    from moldau.clients.cli.base import run_async

    try:
        return run_async(_consume(args, formatter, props, count))
    finally:
        if count.started:
            sys.stdout.flush()
            sys.stderr.write(f"Processed a total of {count.n} messages\n")
            sys.stderr.flush()


async def _consume(args: argparse.Namespace, formatter: Formatter, props: dict[str, str],
                   count: _Count) -> int:
    await check_reachable(split_servers(args.bootstrap_server, 9092), "the broker(s) at")
    from moldau.clients.consumer import Consumer
    from moldau.clients.protocol import MoldauError

    consumer = Consumer(bootstrap_servers=args.bootstrap_server, client_id="console-consumer",
                        **client_kwargs(Consumer, props, "consumer"))
    await consumer.start()
    try:
        tracker = _Assignment(consumer, args)
        await tracker.initial()
        count.started = True
        out = sys.stdout.buffer
        remaining = args.max_messages
        timeout_s = args.timeout_ms / 1000 if args.timeout_ms is not None else None
        last = time.monotonic()
        render = formatter.render
        while True:
            wait = POLL_MS
            if timeout_s is not None:
                wait = max(1, min(wait, int((last + timeout_s - time.monotonic()) * 1000)))
            records = await consumer.poll(timeout_ms=wait, max_records=remaining or 500)
            if records:
                if remaining is not None:
                    records = records[:remaining]
                out.write(render(records))
                out.flush()
                count.n += len(records)
                last = time.monotonic()
                if remaining is not None:
                    remaining -= len(records)
                    if remaining <= 0:
                        return 0
            elif timeout_s is not None and time.monotonic() - last >= timeout_s:
                return 0
            await tracker.maybe_refresh()
    except MoldauError as e:
        raise CliError(f"{e.code.name}: {e.message}" if e.message else e.code.name) from None
    finally:
        await consumer.stop()


class _Assignment:
    """Which partitions this consumer reads: one (``--partition``), or every partition of
    the matching topics, checked again every few seconds for new partitions and topics."""

    def __init__(self, consumer: Any, args: argparse.Namespace) -> None:
        self.consumer = consumer
        self.args = args
        self.assigned: set[tuple[str, int]] = set()
        self.next_refresh = 0.0

    async def initial(self) -> None:
        from moldau.clients.types import TopicPartition

        c, args = self.consumer, self.args
        if args.partition is not None:
            parts = await self._partitions(args.topic, wait=True)
            if args.partition not in parts:
                raise CliError(f"partition {args.partition} of topic '{args.topic}' does not "
                               f"exist (it has {len(parts)})")
            tp = TopicPartition(args.topic, args.partition)
            c.assign([tp])
            self.assigned = {tp}
            if args.offset == "earliest" or (args.offset is None and args.from_beginning):
                await _maybe_await(c.seek_to_beginning([tp]))
            elif args.offset is None or args.offset == "latest":
                await _maybe_await(c.seek_to_end([tp]))
            else:
                await _maybe_await(c.seek(tp, int(args.offset)))
            self.next_refresh = float("inf")
            return
        await self.refresh(wait=True)

    async def maybe_refresh(self) -> None:
        if time.monotonic() >= self.next_refresh:
            await self.refresh(wait=False)

    async def refresh(self, wait: bool) -> None:
        from moldau.clients.types import TopicPartition

        self.next_refresh = time.monotonic() + PARTITION_REFRESH_S
        topics = [self.args.topic] if self.args.topic else await self._matching_topics()
        wanted: set[tuple[str, int]] = set()
        for topic in topics:
            wanted.update((topic, p) for p in await self._partitions(topic, wait=wait))
        if wanted - self.assigned:
            new = wanted - self.assigned
            first = not self.assigned
            self.assigned |= wanted
            self.consumer.assign([TopicPartition(t, p) for t, p in sorted(self.assigned)])
            if not first:
                # records of a partition added while we run are all new to us
                await _maybe_await(self.consumer.seek_to_beginning(
                    [TopicPartition(t, p) for t, p in sorted(new)]))
            elif self.args.from_beginning:
                await _maybe_await(self.consumer.seek_to_beginning(
                    [TopicPartition(t, p) for t, p in sorted(new)]))

    async def _matching_topics(self) -> list[str]:
        import re

        try:
            rx = re.compile(self.args.include.replace(",", "|"))
        except re.error as e:
            raise CliError(f"bad --include pattern: {e}") from None
        names = await self.consumer.list_topics() if hasattr(
            self.consumer, "list_topics") else []
        return sorted(n for n in names if rx.fullmatch(n) and not n.startswith("__"))

    async def _partitions(self, topic: str, wait: bool) -> list[int]:
        import asyncio

        from moldau.clients.protocol import ErrorCode, MoldauError

        try:
            async with asyncio.timeout(TOPIC_WAIT_S if wait else 5.0):
                return sorted(await self.consumer.partitions_for(topic))
        except (TimeoutError, MoldauError) as e:
            if not wait:
                return sorted(p for t, p in self.assigned if t == topic)
            if isinstance(e, MoldauError) and e.code != ErrorCode.UNKNOWN_TOPIC_OR_PARTITION:
                raise
            raise CliError(f"topic '{topic}' does not exist; create it with "
                           f"'moldau topics --create --topic {topic} ...'") from None


async def _maybe_await(x: Any) -> Any:
    import inspect

    if inspect.isawaitable(x):
        return await x
    return x
