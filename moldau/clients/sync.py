"""Blocking wrappers for scripts: ``SyncProducer``, ``SyncConsumer``, ``SyncAdmin``.

Each wrapper owns one event loop running in a background thread and forwards every call to
the asynchronous client on that loop (``asyncio.run_coroutine_threadsafe``), blocking the
caller until it returns. Same method names as the async clients, without ``await``; use
them as context managers (or call ``start()`` and ``close()``). Each call crosses threads,
so a blocking wrapper is for scripts and tools, not for high throughput.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from moldau.clients.admin import Admin
from moldau.clients.consumer import Consumer
from moldau.clients.producer import Producer
from moldau.clients.records import Record
from moldau.clients.types import (
    BrokerMetadata,
    NewTopic,
    RecordMetadata,
    TopicDescription,
    TopicPartition,
)

T = TypeVar("T")


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class _LoopThread:
    """An event loop running forever in a daemon thread until ``stop()``."""

    def __init__(self, name: str) -> None:
        self.loop = _new_loop()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("a blocking client cannot be called from its own loop")
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise TimeoutError(f"no result within {timeout} s") from None

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a plain function on the loop thread (client state lives there)."""
        async def go() -> T:
            return fn(*args)
        return self.run(go())

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


class _SyncBase:
    _client: Any

    def __init__(self, name: str) -> None:
        self._lt = _LoopThread(name)
        self._started = False
        self._closed = False

    def start(self) -> None:
        if not self._started:
            self._lt.run(self._client.start())
            self._started = True

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self._started:
                self._lt.run(self._client.stop())
        finally:
            self._lt.stop()

    stop = close

    def __enter__(self) -> Any:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _to_concurrent(fut: asyncio.Future[T]) -> concurrent.futures.Future[T]:
    out: concurrent.futures.Future[T] = concurrent.futures.Future()

    def done(f: asyncio.Future[T]) -> None:
        if f.cancelled():
            out.cancel()
        elif f.exception() is not None:
            out.set_exception(f.exception())
        else:
            out.set_result(f.result())

    fut.add_done_callback(done)
    return out


class SyncProducer(_SyncBase):
    """``Producer`` for blocking code: ``send`` returns a ``concurrent.futures.Future``."""

    def __init__(self, bootstrap_servers: str | Sequence[str], **kwargs: Any) -> None:
        super().__init__("moldau-sync-producer")
        self._client = self.producer = Producer(bootstrap_servers, **kwargs)

    def send(self, topic: str, value: bytes | None = None, key: bytes | None = None,
             partition: int | None = None, timestamp_ms: int | None = None,
             headers: list[tuple[str, bytes]] | None = None
             ) -> concurrent.futures.Future[RecordMetadata]:
        """Buffer a record (blocking while the buffer is full); the future resolves on ack."""
        async def go() -> concurrent.futures.Future[RecordMetadata]:
            fut = await self.producer.send(topic, value, key, partition, timestamp_ms, headers)
            return _to_concurrent(fut)
        return self._lt.run(go())

    def send_and_wait(self, topic: str, value: bytes | None = None, key: bytes | None = None,
                      partition: int | None = None, timestamp_ms: int | None = None,
                      headers: list[tuple[str, bytes]] | None = None) -> RecordMetadata:
        return self._lt.run(self.producer.send_and_wait(topic, value, key, partition,
                                                        timestamp_ms, headers))

    def send_batch(self, topic: str, values: Sequence[bytes | None], *,
                   partition: int | None = None, key: bytes | None = None,
                   timestamp_ms: int | None = None) -> RecordMetadata:
        return self._lt.run(self.producer.send_batch(topic, values, partition=partition,
                                                     key=key, timestamp_ms=timestamp_ms))

    def flush(self, timeout: float | None = None) -> None:
        self._lt.run(self.producer.flush(), timeout)

    def partitions_for(self, topic: str) -> list[int]:
        return self._lt.run(self.producer.partitions_for(topic))

    def __enter__(self) -> SyncProducer:
        self.start()
        return self


class SyncConsumer(_SyncBase):
    """``Consumer`` for blocking code; iterating yields records as they arrive."""

    def __init__(self, *topics: str, bootstrap_servers: str | Sequence[str],
                 **kwargs: Any) -> None:
        super().__init__("moldau-sync-consumer")
        self._client = self.consumer = Consumer(*topics, bootstrap_servers=bootstrap_servers,
                                                **kwargs)

    def assign(self, partitions: Iterable[tuple[str, int]]) -> None:
        self._lt.call(self.consumer.assign, list(partitions))

    def subscribe(self, topics: Iterable[str]) -> None:
        self._lt.run(self.consumer.subscribe(list(topics)))

    def assignment(self) -> set[TopicPartition]:
        return self._lt.call(self.consumer.assignment)

    def seek(self, tp: tuple[str, int], offset: int) -> None:
        self._lt.call(self.consumer.seek, tp, offset)

    def seek_to_beginning(self, *partitions: Any) -> None:
        self._lt.run(self.consumer.seek_to_beginning(*partitions))

    def seek_to_end(self, *partitions: Any) -> None:
        self._lt.run(self.consumer.seek_to_end(*partitions))

    def position(self, tp: tuple[str, int]) -> int:
        return self._lt.run(self.consumer.position(tp))

    def beginning_offsets(self, partitions: Iterable[tuple[str, int]]
                          ) -> dict[TopicPartition, int]:
        return self._lt.run(self.consumer.beginning_offsets(list(partitions)))

    def end_offsets(self, partitions: Iterable[tuple[str, int]]) -> dict[TopicPartition, int]:
        return self._lt.run(self.consumer.end_offsets(list(partitions)))

    def offsets_for_times(self, timestamps: Mapping[tuple[str, int], int]
                          ) -> dict[TopicPartition, tuple[int, int] | None]:
        return self._lt.run(self.consumer.offsets_for_times(dict(timestamps)))

    def partitions_for(self, topic: str) -> set[int]:
        return self._lt.run(self.consumer.partitions_for(topic))

    def pause(self, *partitions: Any) -> None:
        self._lt.call(self.consumer.pause, *partitions)

    def resume(self, *partitions: Any) -> None:
        self._lt.call(self.consumer.resume, *partitions)

    def poll(self, timeout_ms: int = 1000, max_records: int | None = None) -> list[Record]:
        return self._lt.run(self.consumer.poll(timeout_ms, max_records))

    def getmany(self, timeout_ms: int = 1000, max_records: int | None = None
                ) -> dict[TopicPartition, list[Record]]:
        return self._lt.run(self.consumer.getmany(timeout_ms, max_records))

    def __iter__(self) -> Iterator[Record]:
        while not self._closed:
            yield from self.poll(1000)

    def __enter__(self) -> SyncConsumer:
        self.start()
        return self


class SyncAdmin(_SyncBase):
    """``Admin`` for blocking code."""

    def __init__(self, bootstrap_servers: str | Sequence[str], **kwargs: Any) -> None:
        super().__init__("moldau-sync-admin")
        self._client = self.admin = Admin(bootstrap_servers, **kwargs)

    def create_topics(self, topics: Sequence[NewTopic], validate_only: bool = False,
                      timeout_ms: int = 30000) -> None:
        self._lt.run(self.admin.create_topics(topics, validate_only, timeout_ms))

    def create_topics_results(self, topics: Sequence[NewTopic], validate_only: bool = False,
                              timeout_ms: int = 30000) -> dict[str, Any]:
        return self._lt.run(self.admin.create_topics_results(topics, validate_only,
                                                             timeout_ms))

    def delete_topics(self, names: Iterable[str], timeout_ms: int = 30000) -> None:
        self._lt.run(self.admin.delete_topics(list(names), timeout_ms))

    def list_topics(self, include_internal: bool = False) -> list[str]:
        return self._lt.run(self.admin.list_topics(include_internal))

    def describe_topics(self, names: Iterable[str] | None = None) -> list[TopicDescription]:
        return self._lt.run(self.admin.describe_topics(
            None if names is None else list(names)))

    def describe_configs(self, topic: str) -> dict[str, str]:
        return self._lt.run(self.admin.describe_configs(topic))

    def alter_configs(self, topic: str, set: Mapping[str, Any] | None = None,
                      delete: Iterable[str] = ()) -> None:
        self._lt.run(self.admin.alter_configs(topic, set, list(delete)))

    def create_partitions(self, topic: str, total_count: int) -> None:
        self._lt.run(self.admin.create_partitions(topic, total_count))

    def describe_cluster(self) -> tuple[list[BrokerMetadata], int, str]:
        return self._lt.run(self.admin.describe_cluster())

    def __enter__(self) -> SyncAdmin:
        self.start()
        return self
