"""The broker's link to the metadata service: its session, its registration under
``/brokers/ids/<id>``, and the watches that keep the ``MetadataCache`` and the
``ReplicaManager`` in step with the tree.

Watches are one-shot and fire on the client's event loop; a watch callback only records
which part of the tree went stale and wakes the sync loop, which re-reads that part (leaving
a new watch) and applies it. Re-reading is idempotent, so duplicate or spurious events cost a
read and nothing else. Paths and what a change means::

    /brokers/ids                           children: live brokers
    /brokers/topics                        children: topics created or deleted
    /brokers/topics/<t>                    data: replica assignment (partitions added)
    /brokers/topics/<t>/partitions/<p>/state   data: leader, leader epoch, ISR
    /config/topics/<t>                     data: config overrides
    /controller                            exists/data: the controller's id

If the session expires, the loop opens a new one, registers again and re-reads everything
(watches do not survive a session).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from typing import TYPE_CHECKING, Any

from moldau.broker.metadata_cache import MetadataCache, TopicMetadata
from moldau.broker.replica_manager import ReplicaManager
from moldau.clients.metadata.client import MetadataClient, Stat
from moldau.clients.metadata.layout import (
    BROKER_IDS,
    CLUSTER_ID,
    CONFIG_TOPICS,
    CONTROLLER,
    PERSISTENT_ROOTS,
    TOPICS,
    BrokerInfo,
    PartitionState,
    TopicAssignment,
    broker_path,
    decode_topic_config,
    partition_state_path,
    topic_config_path,
    topic_path,
)
from moldau.clients.protocol import ErrorCode, MoldauError

if TYPE_CHECKING:
    from moldau.broker.controller import Controller

log = logging.getLogger(__name__)

Key = tuple[Any, ...]
_BROKERS: Key = ("brokers",)
_TOPICS: Key = ("topics",)
_CONTROLLER: Key = ("controller",)
_RETRY_DELAY = 0.5


class BrokerIdInUse(RuntimeError):
    pass


def _key_for(path: str) -> Key | None:
    """Which part of the cache a watch on ``path`` invalidates."""
    if path == BROKER_IDS or path.startswith(BROKER_IDS + "/"):
        return _BROKERS
    if path == TOPICS:
        return _TOPICS
    if path.startswith(TOPICS + "/"):
        rest = path[len(TOPICS) + 1:].split("/")
        if len(rest) == 1:
            return ("topic", rest[0])
        if len(rest) == 4 and rest[1] == "partitions" and rest[3] == "state":
            with contextlib.suppress(ValueError):
                return ("state", rest[0], int(rest[2]))
        return ("topic", rest[0])
    if path.startswith(CONFIG_TOPICS + "/"):
        return ("config", path[len(CONFIG_TOPICS) + 1:])
    if path == CONTROLLER:
        return _CONTROLLER
    return None


class MetadataListener:
    """Owns the metadata session; see the module docstring. ``client`` is the current
    session's client (it changes after an expiry)."""

    def __init__(self, broker_id: int, connect: str, session_timeout_ms: int,
                 info: BrokerInfo, cache: MetadataCache, replicas: ReplicaManager, *,
                 connect_timeout: float = 10.0) -> None:
        self.broker_id = broker_id
        self.connect = connect
        self.session_timeout_ms = session_timeout_ms
        self.connect_timeout = connect_timeout
        self.info = info
        self.cache = cache
        self.replicas = replicas
        self._client: MetadataClient | None = None
        self._dirty: set[Key] = set()
        self._wakeup = asyncio.Event()
        self._expired = False
        self._task: asyncio.Task[None] | None = None
        # the controller campaigns with this session (set by the server)
        self.controller: Controller | None = None
        # czxid of this broker's registration: tells a restart from a long pause
        self.broker_epoch = -1

    @property
    def client(self) -> MetadataClient:
        if self._client is None:
            raise MoldauError(ErrorCode.CONNECTION_LOSS, "no metadata session")
        return self._client

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await self._open_session()
        await self._ensure_roots()
        await self._load_cluster_id()
        await self._register()
        await self._load_all()
        self.replicas.remove_stray_logs(self.cache.topics.values())
        self._task = asyncio.get_running_loop().create_task(self._run(), name="metadata-sync")

    async def stop(self) -> None:
        """Stop syncing and close the session: the registration disappears at once."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        client, self._client = self._client, None
        if client is not None:
            try:
                async with asyncio.timeout(3):
                    await client.close()
            except Exception as e:
                log.warning("closing the metadata session failed: %s", e)

    async def _open_session(self) -> None:
        client = MetadataClient(self.connect, session_timeout_ms=self.session_timeout_ms,
                                client_id=f"broker-{self.broker_id}",
                                connect_timeout=self.connect_timeout)
        await client.start()
        client.on_expired = self._on_expired
        self._client = client
        self._expired = False

    def _on_expired(self, *_: Any) -> None:
        log.warning("metadata session expired; opening a new one")
        self._expired = True
        if self.controller is not None:
            self.controller.session_lost()
        self._wakeup.set()

    def request_reload(self, key: Key) -> None:
        self._dirty.add(key)
        self._wakeup.set()

    def reload_topic(self, topic: str) -> None:
        """Re-read a topic now (after this broker changed it), not only when its watch
        fires."""
        self.request_reload(("topic", topic))

    def reload_topics(self) -> None:
        self.request_reload(_TOPICS)

    def _on_watch(self, event: Any) -> None:
        key = _key_for(event.path)
        if key is not None:
            self.request_reload(key)

    # ------------------------------------------------------------------ startup steps

    async def _ensure_roots(self) -> None:
        for path in PERSISTENT_ROOTS:
            await self.client.ensure_path(path)

    async def _load_cluster_id(self) -> None:
        client = self.client
        for _ in range(3):
            try:
                data, _stat = await client.get(CLUSTER_ID)
                self.cache.cluster_id = str(json.loads(data.decode())["id"])
                return
            except MoldauError as e:
                if e.code != ErrorCode.NO_NODE:
                    raise
            except (ValueError, KeyError, TypeError) as e:
                log.warning("unreadable cluster id (%s)", e)
                return
            new_id = uuid.uuid4().hex[:22]
            try:
                await client.create(CLUSTER_ID, json.dumps(
                    {"version": "1", "id": new_id}).encode(), make_parents=True)
                log.info("created cluster id %s", new_id)
            except MoldauError as race:
                if race.code != ErrorCode.NODE_EXISTS:
                    raise

    async def _register(self) -> None:
        """Create ``/brokers/ids/<id>``. A node left by this id's previous session (a broker
        killed without closing it) goes when that session times out: wait that long, then
        give up."""
        client = self.client
        path = broker_path(self.broker_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.session_timeout_ms / 1000 + 2.0
        warned = False
        while True:
            try:
                await client.create(path, self.info.encode(), ephemeral=True)
                log.info("registered at %s as %s:%d", path, self.info.host, self.info.port)
                stat = await client.exists(path)
                self.broker_epoch = stat.czxid if stat is not None else -1
                return
            except MoldauError as e:
                if e.code != ErrorCode.NODE_EXISTS:
                    raise
            gone = asyncio.Event()

            def on_change(_ev: object, g: asyncio.Event = gone) -> None:
                g.set()

            stat = await client.exists(path, watch=on_change)
            if stat is None:
                continue
            if not warned:
                log.warning("%s exists (a previous session of broker %d?); waiting up to "
                            "%.1fs for it to expire", path, self.broker_id,
                            deadline - loop.time())
                warned = True
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise BrokerIdInUse(
                    f"broker id {self.broker_id} is registered by another live broker "
                    f"({path} exists); is a broker with this id already running?")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, 1.0)):
                    await gone.wait()

    # ------------------------------------------------------------------ reading the tree

    async def _get(self, path: str) -> bytes | None:
        """Read ``path`` leaving a watch; if it does not exist, leave a watch for its
        creation instead."""
        found = await self._get_stat(path)
        return found[0] if found is not None else None

    async def _get_stat(self, path: str) -> tuple[bytes, Stat] | None:
        client = self.client
        try:
            return await client.get(path, watch=self._on_watch)
        except MoldauError as e:
            if e.code != ErrorCode.NO_NODE:
                raise
        if await client.exists(path, watch=self._on_watch) is None:
            return None
        return await client.get(path, watch=self._on_watch)

    async def _load_all(self) -> None:
        await self._load_brokers()
        await self._load_controller()
        await self._load_topics(full=True)

    async def _load_brokers(self) -> None:
        client = self.client
        ids = await client.children(BROKER_IDS, watch=self._on_watch)
        brokers: dict[int, BrokerInfo] = {}

        async def one(child: str) -> None:
            try:
                bid = int(child)
                data, _ = await client.get(broker_path(bid))
                brokers[bid] = BrokerInfo.decode(bid, data)
            except MoldauError as e:
                if e.code != ErrorCode.NO_NODE:
                    raise
            except (ValueError, KeyError, TypeError) as e:
                log.warning("ignoring unreadable broker registration %s: %s", child, e)

        await asyncio.gather(*(one(c) for c in ids))
        if brokers.keys() != self.cache.brokers.keys():
            log.info("live brokers: %s", sorted(brokers))
        self.cache.brokers = brokers
        self.cache.notify()

    async def _load_controller(self) -> None:
        data = await self._get(CONTROLLER)
        controller = -1
        if data is not None:
            try:
                controller = int(json.loads(data.decode())["brokerid"])
            except (ValueError, KeyError, TypeError):
                log.warning("unreadable %s: %r", CONTROLLER, data[:100])
        self.cache.controller_id = controller
        self.cache.notify()

    async def _load_topics(self, full: bool) -> None:
        names = set(await self.client.children(TOPICS, watch=self._on_watch))
        known = set(self.cache.topics)
        for gone in known - names:
            self._remove_topic(gone)
        todo = names if full else names - known
        await asyncio.gather(*(self._load_topic(t) for t in sorted(todo)))

    def _remove_topic(self, name: str) -> None:
        if self.cache.topics.pop(name, None) is not None:
            log.info("topic %s deleted", name)
        self.replicas.remove_topic(name)
        self.cache.notify()

    async def _load_topic(self, name: str) -> None:
        found = await self._get_stat(topic_path(name))
        if found is None:
            self._remove_topic(name)
            return
        data, stat = found
        try:
            assignment = TopicAssignment.decode(data).partitions
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            log.error("ignoring topic %s: unreadable assignment (%s)", name, e)
            return
        states: dict[int, PartitionState] = {}
        versions: dict[int, int] = {}

        async def state(p: int) -> None:
            found = await self._read_state(name, p)
            if found is not None:
                states[p], versions[p] = found

        config, *_ = await asyncio.gather(self._read_config(name),
                                          *(state(p) for p in assignment))
        assert isinstance(config, dict)
        old = self.cache.topics.get(name)
        if old is not None and old.created != stat.czxid:
            # deleted and created again before this broker looked: the old logs must go
            self._remove_topic(name)
            old = None
        topic = TopicMetadata(name, dict(sorted(assignment.items())), states, versions,
                              config, created=stat.czxid)
        self.cache.topics[name] = topic
        if old is None:
            log.info("topic %s: %d partitions", name, topic.num_partitions)
        self._apply(topic)

    async def _read_state(self, name: str, p: int) -> tuple[PartitionState, int] | None:
        """The partition's state and the version of its node, or None."""
        found = await self._get_stat(partition_state_path(name, p))
        if found is None:
            return None
        data, stat = found
        try:
            return PartitionState.decode(data), stat.version
        except (ValueError, KeyError, TypeError) as e:
            log.error("unreadable state of %s-%d: %s", name, p, e)
            return None

    async def _read_config(self, name: str) -> dict[str, str]:
        data = await self._get(topic_config_path(name))
        if data is None:
            return {}
        try:
            return decode_topic_config(data)
        except (ValueError, TypeError, AttributeError) as e:
            log.error("unreadable config of topic %s: %s", name, e)
            return {}

    async def _reload_state(self, name: str, p: int) -> None:
        topic = self.cache.topics.get(name)
        if topic is None or p not in topic.assignment:
            return
        found = await self._read_state(name, p)
        topic = self.cache.topics.get(name)
        if topic is None:
            return
        if found is None:
            topic.states.pop(p, None)
            topic.state_versions.pop(p, None)
        elif found[1] >= topic.state_versions.get(p, -1):
            topic.states[p], topic.state_versions[p] = found
        self._apply(topic)

    async def _reload_config(self, name: str) -> None:
        if name not in self.cache.topics:
            return
        config = await self._read_config(name)
        topic = self.cache.topics.get(name)
        if topic is None:
            return
        changed = config != topic.config
        if changed:
            log.info("topic %s: config overrides now %s", name, config)
        topic.config = config
        self._apply(topic)
        if changed and self.controller is not None:
            # unclean.leader.election.enable may now let an offline partition lead again
            self.controller.topic_changed(name)

    def _apply(self, topic: TopicMetadata) -> None:
        try:
            self.replicas.apply_topic(topic)
        except Exception:
            log.exception("applying topic %s failed", topic.name)
        self.cache.notify()

    # ------------------------------------------------------------------ the sync loop

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if self._expired:
                try:
                    await self._renew_session()
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    log.warning("re-opening the metadata session failed: %s; retrying", e)
                    await asyncio.sleep(_RETRY_DELAY)
                    self._wakeup.set()
                continue
            dirty, self._dirty = self._dirty, set()
            try:
                await self._reload(dirty)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                if isinstance(e, MoldauError):
                    # connection loss or an expired session: the client reconnects, or
                    # on_expired has already asked for a new session
                    log.warning("metadata reload failed (%s); retrying", e)
                else:
                    log.exception("metadata reload failed; retrying")
                self._dirty |= dirty
                await asyncio.sleep(_RETRY_DELAY)
                self._wakeup.set()

    async def _reload(self, keys: set[Key]) -> None:
        if _BROKERS in keys:
            await self._load_brokers()
        if _CONTROLLER in keys:
            await self._load_controller()
        if _TOPICS in keys:
            await self._load_topics(full=False)
        topics = {k[1] for k in keys if k[0] == "topic"}
        jobs = [self._load_topic(t) for t in sorted(topics)]
        jobs += [self._reload_state(k[1], k[2]) for k in keys
                 if k[0] == "state" and k[1] not in topics]
        jobs += [self._reload_config(k[1]) for k in keys
                 if k[0] == "config" and k[1] not in topics]
        if jobs:
            await asyncio.gather(*jobs)

    async def _renew_session(self) -> None:
        old, self._client = self._client, None
        if old is not None:
            with contextlib.suppress(Exception):
                await old.close()
        await self._open_session()
        await self._ensure_roots()
        await self._register()
        self._dirty.clear()
        await self._load_all()
        log.info("metadata session renewed; broker %d registered again", self.broker_id)
        if self.controller is not None:
            self.controller.session_renewed()
