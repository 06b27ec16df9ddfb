"""The controller: one broker at a time moves partition leadership.

Every broker campaigns by creating the ephemeral ``/controller`` node; the one that succeeds
bumps ``/controller_epoch`` and is the controller until its metadata session ends (the node
goes with it and the others campaign again). Then it watches the live brokers and the topics
and keeps every partition's state node (leader, leader epoch, ISR) right:

- a partition whose leader is gone (its registration vanished, or came back with a new
  session: it restarted) gets the first live in-sync replica in assignment order as leader,
  with the epoch bumped; with none, it goes offline (leader -1) keeping its ISR, so that the
  first ISR member to return leads again, unless ``unclean.leader.election.enable`` lets any
  live replica lead (records may be lost);
- dead brokers leave the ISRs they are in (no epoch bump: the leader is unchanged);
- a returning broker needs nothing: it reads the states, follows the leaders, and the
  leaders add it to the ISR once it caught up;
- with ``auto.leader.rebalance.enable``, every ``leader.imbalance.check.interval.seconds``
  leadership goes back to each partition's preferred (first) replica where that replica is
  in sync (Kafka also waits for a 10 % imbalance per broker; this does not);
- ControlledShutdown: a stopping broker's leaderships move to other in-sync replicas and it
  leaves the ISRs (partitions with no other in-sync replica stay with it).

Zombie fencing: every write is a multi-op that first checks the version of
``/controller_epoch`` this controller wrote, and sets the state node with the version it
read. A controller that lost its session (or was replaced while it paused) cannot overwrite
a newer decision: its write fails, and it resigns. Topic replica assignment is done by the
broker serving CreateTopics (spread leaders, distinct brokers: ``assign_replicas``), which
writes the initial state (leader = first replica, ISR = all) in the same multi-op as the
topic; the controller corrects it if that leader is not live.

Events are handled one at a time by a single task (Kafka's ControllerEventManager), so
decisions never interleave.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, NamedTuple

from moldau.clients.metadata.layout import (
    BROKER_IDS,
    CONTROLLER,
    CONTROLLER_EPOCH,
    TOPICS,
    ControllerInfo,
    PartitionState,
    TopicAssignment,
    broker_path,
    decode_controller_epoch,
    encode_controller_epoch,
    partition_path,
    partition_state_path,
    partitions_path,
    topic_path,
)
from moldau.clients.protocol import ErrorCode, MoldauError

if TYPE_CHECKING:
    from moldau.broker.config import BrokerConfig
    from moldau.broker.metadata_cache import MetadataCache
    from moldau.broker.metadata_listener import MetadataListener
    from moldau.clients.metadata.client import MetadataClient, WatchEvent

log = logging.getLogger(__name__)

SWEEP_INTERVAL = 30.0  # a full pass over every partition, in case an event was missed
_PARALLEL = 32  # partition state writes in flight at once


class Decision(NamedTuple):
    leader: int
    leader_epoch: int
    isr: tuple[int, ...]


def decide(state: PartitionState, replicas: tuple[int, ...], live: Iterable[int], *,
           restarted: Iterable[int] = (), leaving: Iterable[int] = (),
           unclean: bool = False, preferred: bool = False) -> Decision | None:
    """The state a partition should have, or None if it is right as it is (pure).

    ``live``: registered brokers; ``restarted``: live brokers whose registration is new
    since the last look (they may have lost unflushed data: they lead only if no other
    in-sync replica can, and leave the ISR until they catch up again); ``leaving``: brokers
    in controlled shutdown (they lead only partitions nobody else can take).
    """
    live = set(live)
    restarted = set(restarted)
    leaving = set(leaving)
    isr = set(state.isr)

    def eligible(r: int) -> bool:
        return r in live and r not in leaving and r not in restarted

    if eligible(state.leader):
        new_isr = tuple(r for r in replicas if r in isr and eligible(r))
        if state.leader not in new_isr:
            new_isr = (state.leader, *new_isr)
        if preferred and replicas and replicas[0] != state.leader and replicas[0] in new_isr:
            return Decision(replicas[0], state.leader_epoch + 1, new_isr)
        if set(new_isr) != isr:
            return Decision(state.leader, state.leader_epoch, new_isr)
        return None
    candidates = [r for r in replicas if r in isr and eligible(r)]
    if not candidates:
        candidates = [r for r in replicas if r in isr and r in live and r not in leaving]
    if candidates:
        leader = candidates[0]
        new_isr = tuple(r for r in replicas if r in isr and (eligible(r) or r == leader))
        return Decision(leader, state.leader_epoch + 1, new_isr)
    if state.leader in leaving and state.leader in live:
        return None  # controlled shutdown: nobody else can take it; it stays until it stops
    if unclean:
        outsiders = [r for r in replicas if r in live and r not in leaving]
        if outsiders:
            return Decision(outsiders[0], state.leader_epoch + 1, (outsiders[0],))
    if state.leader == -1:
        return None
    # offline: keep the ISR (each member has every committed record) so one can lead again
    return Decision(-1, state.leader_epoch + 1, state.isr)


class ControllerMoved(Exception):
    """This broker is no longer the controller (its epoch was superseded)."""


class Controller:
    """Runs on every broker; acts only while it holds ``/controller``."""

    def __init__(self, broker_id: int, config: BrokerConfig, cache: MetadataCache,
                 listener: MetadataListener) -> None:
        self.broker_id = broker_id
        self.config = config
        self.cache = cache
        self.listener = listener
        self.active = False
        self.epoch = -1
        self._epoch_version = -1
        self._client: MetadataClient | None = None
        self.brokers: dict[int, int] = {}  # live broker -> czxid of its registration
        self.topics: dict[str, dict[int, tuple[int, ...]]] = {}
        self.shutting_down: set[int] = set()
        self._queue: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._timers: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Campaign once now (a lone broker is the controller when it reports ready), then
        keep handling events in the background."""
        try:
            await self._campaign()
        except MoldauError as e:
            log.warning("controller: first campaign failed: %s; retrying", e)
            self._enqueue("campaign")
        self._task = asyncio.get_running_loop().create_task(self._run(), name="controller")

    async def stop(self) -> None:
        for task in (self._timers, self._task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._timers = self._task = None
        self.active = False

    def session_lost(self) -> None:
        """The metadata session expired: ``/controller`` went with it."""
        self._enqueue("resign")

    def session_renewed(self) -> None:
        self._enqueue("resign")
        self._enqueue("campaign")

    def topic_changed(self, name: str) -> None:
        """A topic's config changed (seen by this broker's listener)."""
        if self.active:
            self._enqueue("topic", name)

    def _enqueue(self, *event: Any) -> None:
        self._queue.put_nowait(event)

    async def _run(self) -> None:
        while True:
            event = await self._queue.get()
            kind = event[0]
            try:
                if kind == "campaign":
                    await self._campaign()
                elif kind == "resign":
                    self._resign("its metadata session ended")
                elif kind == "controller_changed":
                    self._resign(f"{CONTROLLER} changed")
                    await self._campaign()
                elif not self.active:
                    if kind == "shutdown":
                        _answer(event[2], int(ErrorCode.NOT_CONTROLLER), [])
                    continue
                elif kind == "brokers":
                    await self._on_brokers()
                elif kind == "topics":
                    await self._on_topics()
                elif kind == "topic":
                    await self._on_topic(event[1])
                elif kind == "sweep":
                    await self._reconcile(self._all_partitions())
                elif kind == "rebalance":
                    await self._reconcile(self._all_partitions(), preferred=True)
                elif kind == "shutdown":
                    await self._on_controlled_shutdown(event[1], event[2])
            except asyncio.CancelledError:
                raise
            except ControllerMoved:
                self._resign("a newer controller epoch exists")
                self._enqueue("campaign")
            except MoldauError as e:
                if kind == "shutdown":
                    _answer(event[2], int(ErrorCode.REQUEST_TIMED_OUT), [])
                if e.code == ErrorCode.SESSION_EXPIRED:
                    self._resign("its metadata session expired")
                    continue
                log.warning("controller: handling %s failed: %s; retrying", kind, e)
                await asyncio.sleep(0.5)
                if kind != "shutdown":
                    self._queue.put_nowait(event)
            except Exception:
                log.exception("controller: handling %s failed", kind)
                if kind == "shutdown":
                    _answer(event[2], int(ErrorCode.UNKNOWN_SERVER_ERROR), [])

    # ------------------------------------------------------------------ election

    def _watch(self, kind: str, *args: Any) -> Any:
        """A watch callback that enqueues an event (only for the session it was set on)."""
        client = self._client

        def fire(_event: WatchEvent) -> None:
            if self._client is client:
                self._enqueue(kind, *args)
        return fire

    async def _campaign(self) -> None:
        if self.active:
            return
        client = self.listener.client
        self._client = client
        info = ControllerInfo(self.broker_id, int(time.time() * 1000))
        try:
            await client.create(CONTROLLER, info.encode(), ephemeral=True)
        except MoldauError as e:
            if e.code != ErrorCode.NODE_EXISTS:
                raise
            if await client.exists(CONTROLLER, watch=self._watch("campaign")) is None:
                self._enqueue("campaign")
            return
        await self._become_active(client)

    async def _become_active(self, client: MetadataClient) -> None:
        while True:
            try:
                data, stat = await client.get(CONTROLLER_EPOCH)
            except MoldauError as e:
                if e.code != ErrorCode.NO_NODE:
                    raise
                try:
                    await client.create(CONTROLLER_EPOCH, encode_controller_epoch(1))
                except MoldauError as e2:
                    if e2.code != ErrorCode.NODE_EXISTS:
                        raise
                    continue
                self.epoch, self._epoch_version = 1, 0
                break
            try:
                epoch = decode_controller_epoch(data) + 1
            except ValueError:
                epoch = 1
            try:
                new = await client.set(CONTROLLER_EPOCH, encode_controller_epoch(epoch),
                                       version=stat.version)
            except MoldauError as e:
                if e.code == ErrorCode.BAD_VERSION:
                    continue
                raise
            self.epoch, self._epoch_version = epoch, new.version
            break
        self.active = True
        self.cache.controller_id = self.broker_id
        self.cache.notify()
        self.brokers = {}
        self.topics = {}
        self.shutting_down = set()
        log.info("broker %d is the controller now (controller epoch %d)", self.broker_id,
                 self.epoch)
        # watch our own node: if it goes (the session ended, or someone deleted it), step
        # down and campaign again
        await client.exists(CONTROLLER, watch=self._watch("controller_changed"))
        self._timers = asyncio.get_running_loop().create_task(self._tick(),
                                                              name="controller-timers")
        self._enqueue("brokers")
        self._enqueue("topics")

    def _resign(self, why: str) -> None:
        if self.active:
            log.warning("broker %d stops being the controller: %s", self.broker_id, why)
        self.active = False
        self._client = None
        if self._timers is not None:
            self._timers.cancel()
            self._timers = None

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        rebalance_every = self.config.leader_imbalance_check_interval_seconds
        next_rebalance = loop.time() + rebalance_every
        next_sweep = loop.time() + SWEEP_INTERVAL
        while True:
            targets = [next_sweep]
            if self.config.auto_leader_rebalance_enable:
                targets.append(next_rebalance)
            await asyncio.sleep(max(0.0, min(targets) - loop.time()))
            now = loop.time()
            if now >= next_sweep:
                next_sweep = now + SWEEP_INTERVAL
                self._enqueue("sweep")
            if self.config.auto_leader_rebalance_enable and now >= next_rebalance:
                next_rebalance = now + rebalance_every
                self._enqueue("rebalance")

    # ------------------------------------------------------------------ events

    @property
    def client(self) -> MetadataClient:
        if self._client is None:
            raise ControllerMoved()
        return self._client

    async def _on_brokers(self) -> None:
        client = self.client
        children = await client.children(BROKER_IDS, watch=self._watch("brokers"))
        now: dict[int, int] = {}
        for child in children:
            if not child.isdigit():
                continue
            stat = await client.exists(broker_path(int(child)))
            if stat is not None:
                now[int(child)] = stat.czxid
        old = self.brokers
        dead = {b for b in old if b not in now}
        restarted = {b for b in now if b in old and old[b] != now[b]}
        added = {b for b in now if b not in old}
        self.brokers = now
        self.shutting_down -= dead | restarted
        if dead or restarted or added:
            log.info("controller: live brokers %s (gone %s, restarted %s, new %s)",
                     sorted(now), sorted(dead), sorted(restarted), sorted(added))
        if not old:
            # just became controller: look at everything
            await self._on_topics()
            await self._reconcile(self._all_partitions())
            return
        affected = dead | restarted | added
        targets = [(t, p) for t, parts in self.topics.items() for p, r in parts.items()
                   if affected & set(r)]
        await self._reconcile(targets, restarted=restarted)

    async def _on_topics(self) -> None:
        client = self.client
        names = set(await client.children(TOPICS, watch=self._watch("topics")))
        for gone in set(self.topics) - names:
            del self.topics[gone]
        new = sorted(names - set(self.topics))
        for name in new:
            await self._load_topic(name)
        if self.brokers:
            await self._reconcile([(t, p) for t in new for p in self.topics.get(t, {})])

    async def _load_topic(self, name: str) -> bool:
        try:
            data, _ = await self.client.get(topic_path(name), watch=self._watch("topic", name))
        except MoldauError as e:
            if e.code != ErrorCode.NO_NODE:
                raise
            self.topics.pop(name, None)
            return False
        try:
            self.topics[name] = TopicAssignment.decode(data).partitions
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            log.error("controller: ignoring topic %s: unreadable assignment (%s)", name, e)
            return False
        return True

    async def _on_topic(self, name: str) -> None:
        if await self._load_topic(name) and self.brokers:
            await self._reconcile([(name, p) for p in self.topics[name]])

    async def _on_controlled_shutdown(self, broker_id: int,
                                      fut: asyncio.Future[tuple[int, list[list[Any]]]]) -> None:
        if broker_id not in self.brokers:
            await self._on_brokers()
        if broker_id not in self.brokers:
            _answer(fut, int(ErrorCode.BROKER_NOT_AVAILABLE), [])
            return
        self.shutting_down.add(broker_id)
        targets = [(t, p) for t, parts in self.topics.items() for p, r in parts.items()
                   if broker_id in r]
        results = await self._reconcile(targets)
        remaining = [[t, p] for (t, p), s in results.items()
                     if s is not None and s.leader == broker_id]
        log.info("controller: broker %d shuts down; %d partition(s) stay with it", broker_id,
                 len(remaining))
        _answer(fut, int(ErrorCode.NONE), remaining)

    async def controlled_shutdown(self, broker_id: int) -> tuple[int, list[list[Any]]]:
        """Serve a ControlledShutdown request: ``(error_code, partitions still led)``."""
        if not self.active:
            return int(ErrorCode.NOT_CONTROLLER), []
        fut: asyncio.Future[tuple[int, list[list[Any]]]] = (
            asyncio.get_running_loop().create_future())
        self._enqueue("shutdown", broker_id, fut)
        return await fut

    # ------------------------------------------------------------------ partition states

    def _all_partitions(self) -> list[tuple[str, int]]:
        return [(t, p) for t, parts in self.topics.items() for p in parts]

    async def _reconcile(self, targets: list[tuple[str, int]], *,
                         restarted: Iterable[int] = (), preferred: bool = False
                         ) -> dict[tuple[str, int], PartitionState | None]:
        """Bring each target partition's state in line with ``decide``; return the states
        they have afterwards (None where unknown)."""
        restarted = frozenset(restarted)
        out: dict[tuple[str, int], PartitionState | None] = {}
        sem = asyncio.Semaphore(_PARALLEL)

        async def one(t: str, p: int) -> None:
            async with sem:
                out[(t, p)] = await self._elect(t, p, restarted, preferred)

        for start in range(0, len(targets), 1000):
            await asyncio.gather(*(one(t, p) for t, p in targets[start:start + 1000]))
        return out

    def _unclean(self, topic: str) -> bool:
        t = self.cache.topics.get(topic)
        value = t.config.get("unclean.leader.election.enable") if t is not None else None
        if value is None:
            return self.config.unclean_leader_election_enable
        return value.strip().lower() == "true"

    async def _elect(self, topic: str, p: int, restarted: frozenset[int],
                     preferred: bool) -> PartitionState | None:
        replicas = self.topics.get(topic, {}).get(p)
        if replicas is None:
            return None
        client = self.client
        path = partition_state_path(topic, p)
        for _attempt in range(10):
            try:
                data, stat = await client.get(path)
            except MoldauError as e:
                if e.code != ErrorCode.NO_NODE:
                    raise
                return await self._create_state(topic, p, replicas)
            try:
                state = PartitionState.decode(data)
            except (ValueError, KeyError, TypeError) as e:
                log.error("controller: unreadable state of %s-%d (%s); rewriting it", topic,
                          p, e)
                state = PartitionState(-1, 0, replicas)
            d = decide(state, replicas, self.brokers, restarted=restarted,
                       leaving=self.shutting_down, unclean=self._unclean(topic),
                       preferred=preferred)
            if d is None:
                return state
            new = PartitionState(d.leader, d.leader_epoch, d.isr, self.epoch)
            try:
                await self._write([{"op": "set", "path": path, "data": new.encode(),
                                    "version": stat.version}])
            except MoldauError as e:
                if e.code == ErrorCode.BAD_VERSION:
                    continue  # the leader changed the ISR meanwhile: decide again
                if e.code == ErrorCode.NO_NODE:
                    return None  # the topic is being deleted
                raise
            self._log_change(topic, p, state, new)
            return new
        log.warning("controller: %s-%d changed too often to update; retrying later", topic, p)
        self._enqueue("topic", topic)
        return None

    async def _create_state(self, topic: str, p: int,
                            replicas: tuple[int, ...]) -> PartitionState | None:
        live = [r for r in replicas if r in self.brokers and r not in self.shutting_down]
        state = PartitionState(live[0] if live else -1, 0, tuple(live) or replicas, self.epoch)
        ops: list[dict[str, Any]] = []
        client = self.client
        if await client.exists(topic_path(topic)) is None:
            return None
        if await client.exists(partitions_path(topic)) is None:
            ops.append({"op": "create", "path": partitions_path(topic), "data": b""})
        if await client.exists(partition_path(topic, p)) is None:
            ops.append({"op": "create", "path": partition_path(topic, p), "data": b""})
        ops.append({"op": "create", "path": partition_state_path(topic, p),
                    "data": state.encode()})
        try:
            await self._write(ops)
        except MoldauError as e:
            if e.code in (ErrorCode.NODE_EXISTS, ErrorCode.NO_NODE):
                return None
            raise
        log.info("controller: created the missing state of %s-%d: leader %d", topic, p,
                 state.leader)
        return state

    async def _write(self, ops: list[dict[str, Any]]) -> None:
        """Apply ``ops`` only if no newer controller has bumped the epoch since."""
        fence = {"op": "check", "path": CONTROLLER_EPOCH, "version": self._epoch_version}
        try:
            await self.client.multi([fence, *ops])
        except MoldauError as e:
            if e.code == ErrorCode.BAD_VERSION and e.message == CONTROLLER_EPOCH:
                raise ControllerMoved() from None
            raise

    @staticmethod
    def _log_change(topic: str, p: int, old: PartitionState, new: PartitionState) -> None:
        if new.leader != old.leader or new.leader_epoch != old.leader_epoch:
            if new.leader < 0:
                log.warning("controller: %s-%d is offline: no in-sync replica is live "
                            "(isr %s)", topic, p, list(new.isr))
            elif new.leader not in old.isr:
                log.warning("controller: %s-%d: unclean election of %d (epoch %d); records "
                            "may be lost", topic, p, new.leader, new.leader_epoch)
            else:
                log.info("controller: %s-%d: leader %d -> %d (epoch %d, isr %s)", topic, p,
                         old.leader, new.leader, new.leader_epoch, list(new.isr))
        else:
            log.info("controller: %s-%d: isr %s -> %s", topic, p, list(old.isr),
                     list(new.isr))


def _answer(fut: asyncio.Future[tuple[int, list[list[Any]]]], code: int,
            remaining: list[list[Any]]) -> None:
    if not fut.done():
        fut.set_result((code, remaining))
