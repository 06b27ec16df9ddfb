"""``moldau console-producer``: Kafka's ``kafka-console-producer.sh``, one record per line.

Input is read in chunks by a thread (stdin may be a terminal, a pipe or a file) and handed
to the event loop through a small bounded queue, so a fast pipe is backpressured by the
producer's buffer rather than read into memory. Every line goes to ``Producer.send`` as it
arrives; the producer's short linger sends it within milliseconds (a person typing sees it
in a consumer at once) while a fast pipe still fills whole batches. At end of input
everything is flushed and acknowledged before the exit.
"""

from __future__ import annotations

import argparse
import sys
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
    import asyncio

    from moldau.clients.producer import Producer

CHUNK = 64 * 1024
MAX_REPORTED_ERRORS = 10
TOPIC_WAIT_S = 5.0
# the line-reader properties Kafka's LineMessageReader takes, with its defaults
READER_DEFAULTS = {
    "parse.key": "false", "key.separator": "\t", "ignore.error": "false",
    "parse.headers": "false", "headers.delimiter": "\t", "headers.separator": ",",
    "headers.key.separator": ":", "null.marker": "",
}


def register(sub: Any, name: str, **kw: Any) -> None:
    p = sub.add_parser(
        name, **kw,
        description="Read lines from standard input and send each one as a record to a "
        "topic, as kafka-console-producer.sh does.")
    p.add_argument("--bootstrap-server", "--broker-list", dest="bootstrap_server",
                   metavar="HOST:PORT[,...]", required=True, help="the broker(s) to connect to")
    p.add_argument("--topic", required=True, help="the topic to produce to")
    p.add_argument("--property", action="append", metavar="KEY=VALUE",
                   help="a line reader setting: parse.key=true, key.separator=SEP, "
                   "ignore.error=true, parse.headers=true, headers.delimiter=SEP, "
                   "headers.separator=SEP, headers.key.separator=SEP, null.marker=TEXT")
    p.add_argument("--reader-config", metavar="FILE",
                   help="a properties file of line reader settings")
    p.add_argument("--producer-property", action="append", metavar="KEY=VALUE",
                   help="a producer setting such as linger.ms=5 or acks=all (repeatable)")
    p.add_argument("--producer.config", "--producer-config", dest="producer_config",
                   metavar="FILE", help="a properties file of producer settings")
    p.add_argument("--request-required-acks", metavar="ACKS", default=None,
                   help="the acks the producer waits for: 0, 1, -1 or all (default: 1)")
    p.add_argument("--compression-codec", nargs="?", const="gzip", default=None,
                   metavar="CODEC",
                   help="none, gzip or lz4 (gzip when given without a value)")
    p.add_argument("--batch-size", type=int, metavar="BYTES",
                   help="the largest batch the producer builds")
    p.add_argument("--timeout", type=int, metavar="MS",
                   help="how long a record may wait to fill a batch (linger.ms; default 5)")
    p.add_argument("--request-timeout-ms", type=int, metavar="MS",
                   help="how long to wait for a broker's answer")
    p.add_argument("--max-block-ms", type=int, metavar="MS",
                   help="how long a send may wait for metadata or buffer space")
    p.add_argument("--message-send-max-retries", type=int, metavar="N",
                   help="how often a failed batch is retried")
    p.add_argument("--retry-backoff-ms", type=int, metavar="MS",
                   help="the pause before a retry")
    p.add_argument("--sync", action="store_true",
                   help="wait for each record to be acknowledged before reading the next line")
    p.set_defaults(func=run)


def _producer_settings(args: argparse.Namespace) -> dict[str, Any]:
    from moldau.clients.producer import Producer

    props: dict[str, str] = {"acks": "1"}
    if args.producer_config:
        props.update(read_properties_file(args.producer_config))
    props.update(parse_properties(args.producer_property, "--producer-property"))
    flag_props = {
        "acks": args.request_required_acks, "compression.type": args.compression_codec,
        "batch.size": args.batch_size, "linger.ms": args.timeout,
        "request.timeout.ms": args.request_timeout_ms, "max.block.ms": args.max_block_ms,
        "retries": args.message_send_max_retries, "retry.backoff.ms": args.retry_backoff_ms,
    }
    props.update({k: str(v) for k, v in flag_props.items() if v is not None})
    kwargs = client_kwargs(Producer, props, "producer")
    try:  # let the producer's own checks word a bad value
        from moldau.clients.producer import parse_acks
        from moldau.clients.records import Compression

        parse_acks(kwargs.get("acks", 1))
        Compression.parse(kwargs.get("compression_type", "none"))
    except ValueError as e:
        raise CliError(str(e)) from None
    return kwargs


class LineReader:
    """Kafka's LineMessageReader: a line -> (headers, key, value), all bytes (pure)."""

    def __init__(self, props: dict[str, str]) -> None:
        unknown = sorted(set(props) - set(READER_DEFAULTS))
        if unknown:
            sys.stderr.write(f"Warning: ignoring unknown --property {', '.join(unknown)}\n")
        p = {**READER_DEFAULTS, **props}
        self.parse_key = p["parse.key"].strip().lower() == "true"
        self.key_sep = p["key.separator"].encode()
        self.ignore_error = p["ignore.error"].strip().lower() == "true"
        self.parse_headers = p["parse.headers"].strip().lower() == "true"
        self.headers_delim = p["headers.delimiter"].encode()
        self.headers_sep = p["headers.separator"].encode()
        self.headers_key_sep = p["headers.key.separator"].encode()
        self.null_marker = p["null.marker"].encode() or None
        if self.parse_key and not self.key_sep:
            raise CliError("key.separator must not be empty")
        self.line_number = 0
        self.plain = not (self.parse_key or self.parse_headers)

    def parse(self, line: bytes) -> tuple[list[tuple[str, bytes]] | None, bytes | None,
                                          bytes | None]:
        self.line_number += 1
        headers: list[tuple[str, bytes]] | None = None
        rest = line
        if self.parse_headers:
            head, sep, after = rest.partition(self.headers_delim)
            if not sep:
                if not self.ignore_error:
                    raise CliError(f"No headers delimiter found on line number "
                                   f"{self.line_number}: '{_show(line)}'")
            else:
                rest = after
                headers = []
                for h in head.split(self.headers_sep) if head else ():
                    k, _, v = h.partition(self.headers_key_sep)
                    headers.append((k.decode(errors="replace"), v))
        key: bytes | None = None
        if self.parse_key:
            k, sep, after = rest.partition(self.key_sep)
            if sep:
                key, rest = k, after
            elif not self.ignore_error:
                raise CliError(f"No key separator found on line number {self.line_number}: "
                               f"'{_show(line)}'")
        value: bytes | None = rest
        if self.null_marker is not None:
            if key == self.null_marker:
                key = None
            if value == self.null_marker:
                value = None
        return headers, key, value


def _show(line: bytes) -> str:
    return line.decode(errors="replace")


def run(args: argparse.Namespace) -> int:
    props: dict[str, str] = {}
    if args.reader_config:
        props.update(read_properties_file(args.reader_config))
    props.update(parse_properties(args.property, "--property"))
    reader = LineReader(props)
    settings = _producer_settings(args)
    from moldau.clients.cli.base import run_async

    return run_async(_produce(args, reader, settings))


def _start_stdin_reader(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[bytes],
                        prompt: bool) -> None:
    """A daemon thread reads stdin in chunks (b"" at end of input) into ``queue``; waiting
    for room in the queue is the backpressure."""
    import asyncio
    import os
    import threading

    fd = sys.stdin.fileno()

    def reader() -> None:
        while True:
            if prompt:
                sys.stdout.write(">")
                sys.stdout.flush()
            try:
                data = os.read(fd, CHUNK)
            except OSError:
                data = b""
            try:
                asyncio.run_coroutine_threadsafe(queue.put(data), loop).result()
            except (asyncio.CancelledError, Exception):
                return  # the loop is gone: we are exiting
            if not data:
                return

    threading.Thread(target=reader, name="stdin-reader", daemon=True).start()


async def _produce(args: argparse.Namespace, reader: LineReader,
                   settings: dict[str, Any]) -> int:
    import asyncio

    from moldau.clients.producer import Producer
    from moldau.clients.protocol import MoldauError

    await check_reachable(split_servers(args.bootstrap_server, 9092), "the broker(s) at")
    producer = Producer(args.bootstrap_server, client_id="console-producer", **settings)
    await producer.start()
    state = _SendState(args.topic)
    try:
        await _wait_for_topic(producer, args.topic)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=4)
        _start_stdin_reader(loop, queue, prompt=sys.stdin.isatty())
        pending = b""
        # plain lines (no key, no headers) of one chunk go out as one encoded batch: what
        # the sticky partitioner would do anyway, at a fraction of the per-record cost
        bulk = reader.plain and not args.sync
        while True:
            chunk = await queue.get()
            if not chunk:
                if pending:
                    await _send_line(producer, args, reader, state, pending.removesuffix(b"\r"))
                break
            lines = (pending + chunk).split(b"\n") if pending else chunk.split(b"\n")
            pending = lines.pop()
            if bulk and len(lines) > 1:
                await _send_bulk(producer, args, reader, state, lines)
                continue
            for line in lines:
                await _send_line(producer, args, reader, state, line.removesuffix(b"\r"))
        await producer.flush()
    except MoldauError as e:
        raise CliError(f"{e.code.name}: {e.message}" if e.message else e.code.name) from None
    finally:
        await producer.stop(timeout=5)
    if state.failed:
        raise CliError(f"{state.failed} of {state.sent} records could not be sent to topic "
                       f"{args.topic}")
    return 0


async def _wait_for_topic(producer: Producer, topic: str) -> None:
    """Fail early and clearly when the topic does not exist, instead of after the first
    line's max.block.ms."""
    import asyncio

    from moldau.clients.protocol import ErrorCode, MoldauError

    try:
        async with asyncio.timeout(TOPIC_WAIT_S):
            await producer.partitions_for(topic)
    except TimeoutError:
        raise CliError(f"topic '{topic}' does not exist or has no leader (waited "
                       f"{TOPIC_WAIT_S:.0f} s); create it with 'moldau topics --create "
                       f"--topic {topic} ...'") from None
    except MoldauError as e:
        if e.code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION:
            raise CliError(f"topic '{topic}' does not exist; create it with "
                           f"'moldau topics --create --topic {topic} ...'") from None
        raise


class _SendState:
    """Counts sends and reports the first failures as Kafka's producer callback does."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.sent = 0
        self.failed = 0

    def batch_callback(self, count: int) -> Any:
        def done(fut: asyncio.Future[Any]) -> None:
            if fut.cancelled() or fut.exception() is None:
                return
            self.failed += count
            if self.failed - count < MAX_REPORTED_ERRORS:
                sys.stderr.write(f"Error when sending {count} messages to topic {self.topic} "
                                 f"with error: {fut.exception()}\n")
        return done

    def callback(self, key: bytes | None, size: int) -> Any:
        def done(fut: asyncio.Future[Any]) -> None:
            if fut.cancelled():
                return
            exc = fut.exception()
            if exc is None:
                return
            self.failed += 1
            if self.failed <= MAX_REPORTED_ERRORS:
                shown = "null" if key is None else f"{len(key)} bytes"
                sys.stderr.write(
                    f"Error when sending message to topic {self.topic} with key: {shown}, "
                    f"value: {size} bytes with error: {exc}\n")
        return done


async def _send_bulk(producer: Producer, args: argparse.Namespace, reader: LineReader,
                     state: _SendState, lines: list[bytes]) -> None:
    values: list[bytes | None] = [line.removesuffix(b"\r") for line in lines]
    if reader.null_marker is not None:
        values = [None if v == reader.null_marker else v for v in values]
    reader.line_number += len(values)
    # a batch stays well under the request size limit: a chunk is at most CHUNK bytes
    fut = await producer.enqueue_batch(args.topic, values)
    state.sent += len(values)
    fut.add_done_callback(state.batch_callback(len(values)))


async def _send_line(producer: Producer, args: argparse.Namespace, reader: LineReader,
                     state: _SendState, line: bytes) -> None:
    headers, key, value = reader.parse(line)
    fut = await producer.send(args.topic, value, key=key, headers=headers)
    state.sent += 1
    fut.add_done_callback(state.callback(key, 0 if value is None else len(value)))
    if args.sync:
        import contextlib

        with contextlib.suppress(Exception):
            await fut
