"""What every client shares: broker connections and the cluster metadata cache.

``ClusterClient`` bootstraps from a list of ``host:port`` addresses, keeps one pooled,
pipelined ``Connection`` per broker node id (plus the bootstrap ones until brokers are known),
and caches Metadata answers: brokers, controller, and per topic its partitions with leader,
leader epoch, replicas and in-sync replicas.

Invariants:
- the cache only moves forward: an answer replaces what it covers (the topics it names, or
  everything for an all-topics request) and bumps ``version``; listeners run after each
  update;
- a refresh happens when asked (``refresh``), when a client reports an error
  (``request_update``, coalesced and spaced by ``retry_backoff_ms``), and at the latest
  ``metadata_max_age_ms`` after the previous one;
- connection failures surface as retriable ``MoldauError`` (NETWORK_EXCEPTION,
  REQUEST_TIMED_OUT) and mark the node for a reconnect with exponential backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from moldau.clients.protocol import ErrorCode, Message, MoldauError
from moldau.clients.protocol.messages import (
    ApiVersionsRequest,
    ApiVersionsResponse,
    MetadataRequest,
    MetadataResponse,
)
from moldau.clients.rpc import Connection, parse_hostports
from moldau.clients.types import BrokerMetadata, PartitionInfo, TopicDescription, TopicPartition

log = logging.getLogger(__name__)

DEFAULT_PORT = 9092


@dataclass(frozen=True, slots=True)
class TopicMetadata:
    name: str
    internal: bool
    partitions: dict[int, PartitionInfo]
    available: tuple[int, ...]  # partitions with a leader, ascending

    def describe(self) -> TopicDescription:
        return TopicDescription(self.name, self.internal,
                                tuple(self.partitions[p] for p in sorted(self.partitions)))


def parse_metadata(resp: MetadataResponse) -> tuple[dict[int, BrokerMetadata],
                                                    dict[str, TopicMetadata],
                                                    dict[str, ErrorCode]]:
    """Split a Metadata answer into brokers, healthy topics and per-topic errors (pure)."""
    brokers: dict[int, BrokerMetadata] = {}
    for b in resp.brokers:
        node_id, host, port = int(b[0]), str(b[1]), int(b[2])
        rack = b[3] if len(b) > 3 else None
        brokers[node_id] = BrokerMetadata(node_id, host, port, rack)
    topics: dict[str, TopicMetadata] = {}
    errors: dict[str, ErrorCode] = {}
    for t in resp.topics:
        name = t["name"]
        err = ErrorCode.of(t.get("error_code", 0))
        if err is not ErrorCode.NONE and not t.get("partitions"):
            errors[name] = err
            continue
        parts: dict[int, PartitionInfo] = {}
        for p in t.get("partitions") or ():
            info = PartitionInfo(
                partition=int(p["partition"]),
                leader=int(p.get("leader", -1)),
                leader_epoch=int(p.get("leader_epoch", -1)),
                replicas=tuple(p.get("replicas") or ()),
                isr=tuple(p.get("isr") or ()),
                offline_replicas=tuple(p.get("offline_replicas") or ()),
            )
            parts[info.partition] = info
        available = tuple(sorted(p for p, i in parts.items() if i.leader >= 0))
        topics[name] = TopicMetadata(name, bool(t.get("internal", False)), parts, available)
        if err is not ErrorCode.NONE:
            errors[name] = err
    return brokers, topics, errors


def _net_error(address: str, e: BaseException) -> MoldauError:
    if isinstance(e, MoldauError):
        return e
    if isinstance(e, TimeoutError):
        return MoldauError(ErrorCode.REQUEST_TIMED_OUT, f"no answer from {address} in time")
    return MoldauError(ErrorCode.NETWORK_EXCEPTION, f"{address}: {e or type(e).__name__}")


class _Node:
    """A broker (or bootstrap address) we may connect to, with its reconnect backoff."""

    __slots__ = ("address", "conn", "connecting", "failures", "host", "next_attempt", "port")

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.address = f"{host}:{port}"
        self.conn: Connection | None = None
        self.connecting: asyncio.Future[Connection] | None = None
        self.failures = 0
        self.next_attempt = 0.0


class ClusterClient:
    """Connections and metadata for producers, consumers and admin clients. No I/O until
    ``start()``."""

    def __init__(
        self,
        bootstrap_servers: str | Sequence[str],
        *,
        client_id: str = "moldau",
        request_timeout_ms: int = 30000,
        metadata_max_age_ms: int = 300000,
        retry_backoff_ms: int = 100,
        reconnect_backoff_ms: int = 50,
        reconnect_backoff_max_ms: int = 1000,
        connect_timeout_ms: int = 10000,
        ssl: Any = None,
    ) -> None:
        if isinstance(bootstrap_servers, str):
            addrs = parse_hostports(bootstrap_servers, DEFAULT_PORT)
        else:
            addrs = [a for s in bootstrap_servers for a in parse_hostports(s, DEFAULT_PORT)]
        self.client_id = client_id
        self.request_timeout = request_timeout_ms / 1000
        self.metadata_max_age = metadata_max_age_ms / 1000
        self.retry_backoff = retry_backoff_ms / 1000
        self.reconnect_backoff = reconnect_backoff_ms / 1000
        self.reconnect_backoff_max = reconnect_backoff_max_ms / 1000
        self.connect_timeout = connect_timeout_ms / 1000
        self._ssl = ssl
        self._bootstrap = [_Node(h, p) for h, p in addrs]
        self._nodes: dict[int, _Node] = {}
        self.api_versions: dict[str, dict[int, tuple[int, int]]] = {}

        self.brokers: dict[int, BrokerMetadata] = {}
        self.controller_id = -1
        self.cluster_id = ""
        self.topics: dict[str, TopicMetadata] = {}
        self.topic_errors: dict[str, ErrorCode] = {}
        self.version = 0
        self.last_refresh = 0.0
        self._tracked: set[str] = set()
        self._all_topics = False
        self._listeners: list[Callable[[ClusterClient], None]] = []

        self._update_needed = False
        self._wake: asyncio.Event | None = None
        self._updated: asyncio.Event | None = None
        self._refresh_lock: asyncio.Lock | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._closing: set[asyncio.Task[None]] = set()
        self._rng = random.Random()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Connect to a bootstrap broker and load the metadata of the tracked topics."""
        self._wake = asyncio.Event()
        self._updated = asyncio.Event()
        self._refresh_lock = asyncio.Lock()
        deadline = time.monotonic() + self.request_timeout
        while True:
            try:
                await self.refresh(sorted(self._tracked) if not self._all_topics else None)
                break
            except MoldauError as e:
                if not e.retriable or time.monotonic() >= deadline:
                    await self.stop()
                    raise MoldauError(e.code, f"cannot bootstrap from "
                                      f"{', '.join(n.address for n in self._bootstrap)}: "
                                      f"{e.message}") from e
                await asyncio.sleep(self.retry_backoff)
            except BaseException:
                await self.stop()
                raise
        self._task = asyncio.create_task(self._refresher(), name="moldau-metadata-refresh")

    async def stop(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for node in [*self._nodes.values(), *self._bootstrap]:
            if node.conn is not None:
                await node.conn.close()
                node.conn = None
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    # ------------------------------------------------------------------ metadata cache

    def track(self, topics: Iterable[str]) -> None:
        """Keep these topics in the cache from now on (refreshed with every update)."""
        self._tracked.update(topics)

    def track_all_topics(self, on: bool = True) -> None:
        self._all_topics = on

    def add_listener(self, cb: Callable[[ClusterClient], None]) -> None:
        """``cb(cluster)`` runs after every metadata update (synchronously: keep it short)."""
        self._listeners.append(cb)

    def remove_listener(self, cb: Callable[[ClusterClient], None]) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(cb)

    def topic(self, topic: str) -> TopicMetadata | None:
        return self.topics.get(topic)

    def partitions_for(self, topic: str) -> list[int] | None:
        """Partition numbers of ``topic``, or None if the cache does not know it."""
        t = self.topics.get(topic)
        return None if t is None else sorted(t.partitions)

    def partition_info(self, tp: tuple[str, int]) -> PartitionInfo | None:
        t = self.topics.get(tp[0])
        return None if t is None else t.partitions.get(tp[1])

    def leader_for(self, tp: tuple[str, int]) -> int | None:
        """The leader's node id, or None when unknown or leaderless."""
        t = self.topics.get(tp[0])
        if t is None:
            return None
        p = t.partitions.get(tp[1])
        if p is None or p.leader < 0:
            return None
        return p.leader

    def leader_epoch(self, tp: tuple[str, int]) -> int:
        p = self.partition_info(tp)
        return -1 if p is None else p.leader_epoch

    def describe(self, topic: str) -> TopicDescription | None:
        t = self.topics.get(topic)
        return None if t is None else t.describe()

    def request_update(self) -> None:
        """Ask for a refresh soon (coalesced, at most one per ``retry_backoff_ms``)."""
        self._update_needed = True
        if self._wake is not None:
            self._wake.set()

    async def wait_for_update(self, timeout: float | None = None) -> bool:
        """Wait for the next metadata update; False on timeout."""
        assert self._updated is not None
        self._updated.clear()
        self.request_update()
        try:
            async with asyncio.timeout(timeout):
                await self._updated.wait()
            return True
        except TimeoutError:
            return False

    async def refresh(self, topics: Iterable[str] | None = None, *,
                      allow_auto_topic_creation: bool = False) -> MetadataResponse:
        """Fetch metadata now. ``topics`` None asks for every topic and replaces the cache;
        a list asks for those plus the tracked ones and replaces what it covers. With
        ``allow_auto_topic_creation`` a broker configured to auto-create topics creates
        the missing ones (as Kafka's producer asks)."""
        assert self._refresh_lock is not None
        if topics is None or self._all_topics:
            names: list[str] | None = None
        else:
            names = sorted(set(topics) | self._tracked)
        async with self._refresh_lock:
            # a need reported while this request is out is served by the next refresh
            self._update_needed = False
            try:
                resp = await self.request_any(MetadataRequest(
                    topics=names, allow_auto_topic_creation=allow_auto_topic_creation))
            except BaseException:
                self._update_needed = True
                raise
            assert isinstance(resp, MetadataResponse)
            self._apply(resp, names)
        return resp

    def _apply(self, resp: MetadataResponse, names: list[str] | None) -> None:
        brokers, topics, errors = parse_metadata(resp)
        self.brokers = brokers
        self.controller_id = resp.controller_id
        self.cluster_id = resp.cluster_id
        if names is None:
            self.topics = topics
            self.topic_errors = errors
        else:
            for name in names:
                if name in topics:
                    self.topics[name] = topics[name]
                else:
                    self.topics.pop(name, None)
                if name in errors:
                    self.topic_errors[name] = errors[name]
                else:
                    self.topic_errors.pop(name, None)
        for node_id, node in list(self._nodes.items()):
            b = brokers.get(node_id)
            if b is None or (b.host, b.port) != (node.host, node.port):
                # gone or moved: forget the old address, reconnect on next use
                self._nodes.pop(node_id)
                if node.conn is not None:
                    self._close_soon(node.conn)
        self.version += 1
        self.last_refresh = time.monotonic()
        if self._updated is not None:
            self._updated.set()
        for cb in list(self._listeners):
            try:
                cb(self)
            except Exception:
                log.exception("metadata listener failed")

    async def _refresher(self) -> None:
        assert self._wake is not None
        failures = 0
        while not self._closed:
            due = self.last_refresh + self.metadata_max_age - time.monotonic()
            if not self._update_needed and due > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(due):
                        await self._wake.wait()
                continue
            # space refreshes: a burst of errors costs one request per backoff period
            wait = self.last_refresh + self.retry_backoff * (1 << min(failures, 5)) \
                - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                await self.refresh(() if not self._all_topics else None)
                failures = 0
            except MoldauError as e:
                failures += 1
                self.last_refresh = time.monotonic()
                log.debug("metadata refresh failed: %s", e)
            except Exception:
                failures += 1
                self.last_refresh = time.monotonic()
                log.exception("metadata refresh failed")

    # ------------------------------------------------------------------ connections

    def _node(self, node_id: int) -> _Node:
        node = self._nodes.get(node_id)
        if node is None:
            b = self.brokers.get(node_id)
            if b is None:
                # stale metadata named a broker that is gone: retriable after a refresh
                self.request_update()
                raise MoldauError(ErrorCode.NETWORK_EXCEPTION,
                                  f"broker {node_id} is not in the cluster metadata")
            node = self._nodes[node_id] = _Node(b.host, b.port)
        return node

    async def _connect(self, node: _Node) -> Connection:
        conn = node.conn
        if conn is not None and conn.is_open:
            return conn
        if node.connecting is not None:
            return await asyncio.shield(node.connecting)
        fut: asyncio.Future[Connection] = asyncio.get_running_loop().create_future()
        node.connecting = fut
        try:
            wait = node.next_attempt - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            conn = Connection(node.host, node.port, client_id=self.client_id, ssl=self._ssl)
            try:
                await conn.connect(timeout=self.connect_timeout)
                resp = await conn.request(ApiVersionsRequest(), timeout=self.request_timeout)
            except BaseException as e:
                await conn.close()
                self.request_update()
                node.failures += 1
                node.next_attempt = time.monotonic() + min(
                    self.reconnect_backoff * (1 << min(node.failures - 1, 10)),
                    self.reconnect_backoff_max) * (0.8 + 0.4 * self._rng.random())
                raise _net_error(node.address, e) from e
            assert isinstance(resp, ApiVersionsResponse)
            self.api_versions[node.address] = {int(a): (int(lo), int(hi))
                                               for a, lo, hi in resp.api_keys}
            node.failures = 0
            node.conn = conn
            fut.set_result(conn)
            return conn
        except BaseException as e:
            fut.set_exception(e if isinstance(e, Exception) else MoldauError(
                ErrorCode.NETWORK_EXCEPTION, f"connecting to {node.address} was cancelled"))
            fut.exception()  # mark retrieved: waiters see it, nobody else must
            raise
        finally:
            node.connecting = None

    def connected(self, node_id: int) -> Connection | None:
        """The open connection to ``node_id``, or None (no I/O)."""
        node = self._nodes.get(node_id)
        if node is not None and node.conn is not None and node.conn.is_open:
            return node.conn
        return None

    async def connection(self, node_id: int) -> Connection:
        """An open connection to broker ``node_id`` (connecting if needed)."""
        return await self._connect(self._node(node_id))

    def _close_soon(self, conn: Connection) -> None:
        task = asyncio.get_running_loop().create_task(conn.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _lost(self, node: _Node, conn: Connection | None) -> None:
        if conn is not None and node.conn is conn:
            node.conn = None
            self._close_soon(conn)
        self.request_update()

    async def request_to(self, node_id: int, msg: Message, *,
                         timeout: float | None = None) -> Any:
        """Send ``msg`` to broker ``node_id`` and return its answer.

        Connection trouble raises a retriable MoldauError (NETWORK_EXCEPTION or
        REQUEST_TIMED_OUT) and schedules a metadata refresh.
        """
        node = self._node(node_id)
        conn = node.conn
        try:
            if conn is None or not conn.is_open:
                conn = await self._connect(node)
            return await conn.request(msg, timeout=timeout or self.request_timeout)
        except (OSError, TimeoutError) as e:
            self._lost(node, conn)
            raise _net_error(node.address, e) from e

    async def send_only_to(self, node_id: int, msg: Message) -> None:
        """Send a request that gets no answer (produce with acks=0)."""
        node = self._node(node_id)
        conn = node.conn
        try:
            if conn is None or not conn.is_open:
                conn = await self._connect(node)
            await conn.send_only(msg)
        except (OSError, TimeoutError) as e:
            self._lost(node, conn)
            raise _net_error(node.address, e) from e

    def _candidates(self) -> list[_Node]:
        """Nodes to try for a request any broker can answer: connected ones first, then the
        other known brokers, then the bootstrap addresses."""
        known = []
        for node_id in self.brokers:
            try:
                known.append(self._node(node_id))
            except MoldauError:
                pass
        self._rng.shuffle(known)
        connected = [n for n in known if n.conn is not None and n.conn.is_open]
        others = [n for n in known if n not in connected]
        boot = list(self._bootstrap)
        self._rng.shuffle(boot)
        out = connected + others
        addresses = {n.address for n in out}
        out += [n for n in boot if n.address not in addresses]
        return out

    async def request_any(self, msg: Message, *, timeout: float | None = None) -> Any:
        """Send ``msg`` to any reachable broker, trying each in turn on connection trouble."""
        last: MoldauError | None = None
        for node in self._candidates():
            conn = node.conn
            try:
                if conn is None or not conn.is_open:
                    conn = await self._connect(node)
                return await conn.request(msg, timeout=timeout or self.request_timeout)
            except (OSError, TimeoutError) as e:
                if node.conn is conn and conn is not None:
                    node.conn = None
                    await conn.close()
                last = _net_error(node.address, e)
            except MoldauError as e:
                if not e.retriable:
                    raise
                last = e
        raise last or MoldauError(ErrorCode.NETWORK_EXCEPTION, "no broker address known")

    def least_loaded_node(self) -> int | None:
        """A connected broker with the fewest requests in flight, else any known broker."""
        best: tuple[int, int] | None = None
        for node_id, node in self._nodes.items():
            if node_id in self.brokers and node.conn is not None and node.conn.is_open:
                load = node.conn.in_flight
                if best is None or load < best[0]:
                    best = (load, node_id)
        if best is not None:
            return best[1]
        if self.brokers:
            return self._rng.choice(list(self.brokers))
        return None


def group_by_leader(cluster: ClusterClient, tps: Iterable[TopicPartition]
                    ) -> tuple[dict[int, list[TopicPartition]], list[TopicPartition]]:
    """Split partitions by their leader's node id; the second list has no known leader."""
    by_node: dict[int, list[TopicPartition]] = {}
    leaderless: list[TopicPartition] = []
    for tp in tps:
        leader = cluster.leader_for(tp)
        if leader is None:
            leaderless.append(tp)
        else:
            by_node.setdefault(leader, []).append(tp)
    return by_node, leaderless
