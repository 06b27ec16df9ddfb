"""Topic administration served by any broker: create and delete topics, add partitions,
describe and alter configs. It validates at the edge, writes the metadata tree, and answers
once this broker's own view (the ``MetadataCache``) shows the change, so that a client that
produces right after a successful CreateTopics finds the topic.

Every result is a map ``{"name", "error_code", "error_message"}``; errors are per topic and
never fail the whole request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from moldau.broker.config import BrokerConfig
from moldau.broker.metadata_cache import MetadataCache
from moldau.broker.metadata_listener import MetadataListener
from moldau.broker.replica_manager import ReplicaManager
from moldau.clients.metadata.layout import (
    BROKER_IDS,
    AssignmentError,
    InvalidTopicName,
    PartitionState,
    TopicAssignment,
    assign_replicas,
    decode_topic_config,
    encode_topic_config,
    partition_path,
    partition_state_path,
    topic_config_path,
    topic_creation_ops,
    topic_path,
    validate_topic_name,
)
from moldau.clients.protocol import ErrorCode, MoldauError

log = logging.getLogger(__name__)

# how long an auto-created topic may take to appear before the request gives up on it
AUTO_CREATE_WAIT = 5.0


class AdminError(Exception):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _result(name: Any, code: ErrorCode = ErrorCode.NONE, message: str | None = None
            ) -> dict[str, Any]:
    return {"name": name, "error_code": int(code), "error_message": message}


def _from_metadata_error(name: Any, e: MoldauError) -> dict[str, Any]:
    """A metadata-service failure as a client of the broker sees it: its codes (200+) mean
    nothing to a Kafka-style client, and all of them mean "not done, try again"."""
    if e.code >= 200:
        return _result(name, ErrorCode.REQUEST_TIMED_OUT,
                       f"metadata service unavailable: {e}")
    return _result(name, e.code, str(e))


def _as_int(value: Any, what: str, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise AdminError(ErrorCode.INVALID_REQUEST, f"{what} must be an integer")
    return value


def _config_strings(configs: Any) -> dict[str, str | None]:
    if configs is None:
        return {}
    if not isinstance(configs, Mapping):
        raise AdminError(ErrorCode.INVALID_REQUEST, "configs must be a map")
    out: dict[str, str | None] = {}
    for k, v in configs.items():
        if not isinstance(k, str):
            raise AdminError(ErrorCode.INVALID_CONFIG, f"bad config key {k!r}")
        out[k] = None if v is None else str(v).lower() if isinstance(v, bool) else str(v)
    return out


class AdminManager:
    def __init__(self, config: BrokerConfig, cache: MetadataCache, replicas: ReplicaManager,
                 listener: MetadataListener) -> None:
        self.config = config
        self.cache = cache
        self.replicas = replicas
        self.listener = listener
        self._auto_creating: dict[str, asyncio.Future[bool]] = {}

    async def _live_brokers(self) -> list[int]:
        """Read fresh: a broker that registered a moment ago counts."""
        try:
            ids = await self.listener.client.children(BROKER_IDS)
            return sorted(int(i) for i in ids if i.isdigit())
        except MoldauError:
            return self.cache.live_broker_ids()

    def _validate_configs(self, configs: Mapping[str, str | None]) -> dict[str, str]:
        try:
            self.replicas.default_config.with_overrides(configs)
        except ValueError as e:
            raise AdminError(ErrorCode.INVALID_CONFIG, str(e)) from None
        return {k: v for k, v in configs.items() if v is not None}

    def _check_collision(self, name: str) -> None:
        # Kafka refuses names that differ only in '.' vs '_' (their metric names collide)
        norm = name.replace(".", "_")
        for other in self.cache.topics:
            if other != name and other.replace(".", "_") == norm:
                raise AdminError(ErrorCode.INVALID_TOPIC_EXCEPTION,
                                 f"Topic '{name}' collides with existing topics: {other}")

    # ------------------------------------------------------------------ create topics

    async def create_topics(self, specs: list[Any], timeout_ms: int,
                            validate_only: bool) -> list[dict[str, Any]]:
        names: list[Any] = [s.get("name") if isinstance(s, Mapping) else None for s in specs]
        duplicates = {n for n in names if n is not None and names.count(n) > 1}
        results: list[dict[str, Any]] = []
        created: list[Any] = []
        brokers: list[int] | None = None
        for spec, name in zip(specs, names, strict=True):
            if name in duplicates:
                results.append(_result(name, ErrorCode.INVALID_REQUEST,
                                       f"Create topics request from client contains multiple "
                                       f"entries for the following topics: {name}"))
                continue
            if brokers is None:
                brokers = await self._live_brokers()
            try:
                await self._create_one(spec, brokers, validate_only)
            except AdminError as e:
                results.append(_result(name, e.code, e.message))
                continue
            except MoldauError as e:
                results.append(_from_metadata_error(name, e))
                continue
            results.append(_result(name))
            if not validate_only:
                created.append(name)
        if created:
            self.listener.reload_topics()
            ok = await self.cache.wait_until(
                lambda: all(n in self.cache.topics for n in created),
                max(timeout_ms, 0) / 1000)
            if not ok:
                for r in results:
                    if r["name"] in created and r["name"] not in self.cache.topics:
                        r["error_code"] = int(ErrorCode.REQUEST_TIMED_OUT)
                        r["error_message"] = ("Topic creation was written but this broker "
                                              "has not seen it yet")
        return results

    async def _create_one(self, spec: Any, brokers: list[int], validate_only: bool) -> None:
        if not isinstance(spec, Mapping):
            raise AdminError(ErrorCode.INVALID_REQUEST, "topic entry is not a map")
        name: Any = spec.get("name")
        try:
            validate_topic_name(name)
        except InvalidTopicName as e:
            raise AdminError(ErrorCode.INVALID_TOPIC_EXCEPTION, str(e)) from None
        if name in self.cache.topics:
            raise AdminError(ErrorCode.TOPIC_ALREADY_EXISTS, f"Topic '{name}' already exists.")
        self._check_collision(name)
        configs = self._validate_configs(_config_strings(spec.get("configs")))
        assignment = self._assignment(spec, brokers)
        if validate_only:
            return
        ops = topic_creation_ops(name, assignment, configs)
        client = self.listener.client
        for attempt in range(2):
            try:
                await client.multi(ops)
                break
            except MoldauError as e:
                if e.code != ErrorCode.NODE_EXISTS:
                    raise
                if attempt == 0 and await client.exists(topic_path(name)) is None:
                    # a config node left behind by a deletion that stopped half way
                    log.warning("removing the stale config node of deleted topic %s", name)
                    try:
                        await client.delete(topic_config_path(name))
                    except MoldauError as e2:
                        if e2.code != ErrorCode.NO_NODE:
                            raise
                    continue
                raise AdminError(ErrorCode.TOPIC_ALREADY_EXISTS,
                                 f"Topic '{name}' already exists.") from None
        log.info("created topic %s: %d partitions, replication factor %d, config %s", name,
                 len(assignment), len(next(iter(assignment.values()))), configs)

    def _assignment(self, spec: Mapping[str, Any], brokers: list[int]
                    ) -> dict[int, tuple[int, ...]]:
        manual = spec.get("assignments")
        if manual:
            return self._manual_assignment(manual, brokers)
        partitions = _as_int(spec.get("num_partitions"), "num_partitions", -1)
        rf = _as_int(spec.get("replication_factor"), "replication_factor", -1)
        if partitions == -1:
            partitions = self.config.num_partitions
        if rf == -1:
            rf = self.config.default_replication_factor
        if partitions < 1:
            raise AdminError(ErrorCode.INVALID_PARTITIONS,
                             "Number of partitions must be larger than 0.")
        if rf < 1:
            raise AdminError(ErrorCode.INVALID_REPLICATION_FACTOR,
                             "Replication factor must be larger than 0.")
        if rf > len(brokers):
            raise AdminError(ErrorCode.INVALID_REPLICATION_FACTOR,
                             f"Replication factor: {rf} larger than available brokers: "
                             f"{len(brokers)}.")
        try:
            return assign_replicas(brokers, partitions, rf)
        except AssignmentError as e:
            raise AdminError(ErrorCode.INVALID_REPLICATION_FACTOR, str(e)) from None

    def _manual_assignment(self, manual: Any, brokers: list[int]
                           ) -> dict[int, tuple[int, ...]]:
        bad = ErrorCode.INVALID_REPLICA_ASSIGNMENT
        if not isinstance(manual, Mapping):
            raise AdminError(bad, "assignments must map partition to a broker list")
        out: dict[int, tuple[int, ...]] = {}
        for p, replicas in manual.items():
            try:
                p = int(p)
                reps = tuple(int(b) for b in replicas)
            except (TypeError, ValueError):
                raise AdminError(bad, f"bad assignment for partition {p!r}") from None
            if not reps or len(set(reps)) != len(reps):
                raise AdminError(bad, f"partition {p}: replica list {list(reps)} is empty "
                                      "or repeats a broker")
            missing = [b for b in reps if b not in brokers]
            if missing:
                raise AdminError(ErrorCode.BROKER_NOT_AVAILABLE,
                                 f"partition {p}: unknown broker(s) {missing}")
            out[p] = reps
        if sorted(out) != list(range(len(out))):
            raise AdminError(bad, "partitions must be numbered consecutively from 0")
        if len({len(r) for r in out.values()}) != 1:
            raise AdminError(bad, "every partition needs the same number of replicas")
        return out

    async def auto_create(self, name: str) -> bool:
        """Create ``name`` with the broker defaults if ``auto.create.topics.enable``; return
        whether the topic is now known to this broker."""
        if name in self.cache.topics:
            return True
        if not self.config.auto_create_topics_enable:
            return False
        try:
            validate_topic_name(name)
        except InvalidTopicName:
            return False
        pending = self._auto_creating.get(name)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._auto_creating[name] = fut
        ok = False
        try:
            res = await self.create_topics([{"name": name}], int(AUTO_CREATE_WAIT * 1000),
                                           False)
            code = res[0]["error_code"]
            if code not in (ErrorCode.NONE, ErrorCode.TOPIC_ALREADY_EXISTS):
                log.warning("auto-creating topic %s failed: %s", name, res[0]["error_message"])
            ok = await self.cache.wait_until(lambda: name in self.cache.topics,
                                             AUTO_CREATE_WAIT)
        finally:
            del self._auto_creating[name]
            fut.set_result(ok)
        return ok

    # ------------------------------------------------------------------ delete topics

    async def delete_topics(self, names: list[Any], timeout_ms: int) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = []
        deleted: list[str] = []
        for name in names:
            try:
                await self._delete_one(name)
            except AdminError as e:
                results.append(_result(name, e.code, e.message))
                continue
            except MoldauError as e:
                results.append(_from_metadata_error(name, e))
                continue
            results.append(_result(name))
            deleted.append(name)
        if deleted:
            self.listener.reload_topics()
            ok = await self.cache.wait_until(
                lambda: not any(n in self.cache.topics for n in deleted),
                max(timeout_ms, 0) / 1000)
            if not ok:
                for r in results:
                    if r["name"] in deleted and r["name"] in self.cache.topics:
                        r["error_code"] = int(ErrorCode.REQUEST_TIMED_OUT)
                        r["error_message"] = "deletion written but not yet seen here"
        return results

    async def _delete_one(self, name: Any) -> None:
        if not isinstance(name, str):
            raise AdminError(ErrorCode.INVALID_REQUEST, "topic name must be a string")
        if not self.config.delete_topic_enable:
            raise AdminError(ErrorCode.TOPIC_DELETION_DISABLED,
                             "Topic deletion is disabled (delete.topic.enable=false).")
        client = self.listener.client
        if await client.exists(topic_path(name)) is None:
            raise AdminError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                             f"This server does not host this topic: {name}")
        try:
            await client.delete(topic_path(name), recursive=True)
        except MoldauError as e:
            if e.code != ErrorCode.NO_NODE:
                raise
            raise AdminError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                             f"This server does not host this topic: {name}") from None
        try:
            await client.delete(topic_config_path(name))
        except MoldauError as e:
            if e.code != ErrorCode.NO_NODE:
                raise
        log.info("deleted topic %s", name)

    # ------------------------------------------------------------------ create partitions

    async def create_partitions(self, specs: list[Any], timeout_ms: int,
                                validate_only: bool) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = []
        grown: dict[Any, int] = {}
        brokers: list[int] | None = None
        for spec in specs:
            name = spec.get("name") if isinstance(spec, Mapping) else None
            if brokers is None:
                brokers = await self._live_brokers()
            try:
                count = await self._grow_one(spec, brokers, validate_only)
            except AdminError as e:
                results.append(_result(name, e.code, e.message))
                continue
            except MoldauError as e:
                results.append(_from_metadata_error(name, e))
                continue
            results.append(_result(name))
            if not validate_only:
                grown[name] = count

        def seen() -> bool:
            return all(n in self.cache.topics and self.cache.topics[n].num_partitions >= c
                       for n, c in grown.items())

        if grown:
            for n in grown:
                self.listener.reload_topic(n)
            if not await self.cache.wait_until(seen, max(timeout_ms, 0) / 1000):
                for r in results:
                    if r["name"] in grown:
                        r["error_code"] = int(ErrorCode.REQUEST_TIMED_OUT)
                        r["error_message"] = "new partitions written but not yet seen here"
        return results

    async def _grow_one(self, spec: Any, brokers: list[int], validate_only: bool) -> int:
        if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str):
            raise AdminError(ErrorCode.INVALID_REQUEST, "entry needs a topic name")
        name = spec["name"]
        count = _as_int(spec.get("count"), "count", -1)
        client = self.listener.client
        try:
            data, stat = await client.get(topic_path(name))
        except MoldauError as e:
            if e.code == ErrorCode.NO_NODE:
                raise AdminError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                                 f"The topic '{name}' does not exist.") from None
            raise
        current = TopicAssignment.decode(data).partitions
        n = len(current)
        if count < n:
            raise AdminError(ErrorCode.INVALID_PARTITIONS,
                             f"Topic currently has {n} partitions, which is higher than the "
                             f"requested {count}.")
        if count == n:
            raise AdminError(ErrorCode.INVALID_PARTITIONS, f"Topic already has {n} partitions.")
        rf = max(len(r) for r in current.values())
        if rf > len(brokers):
            raise AdminError(ErrorCode.INVALID_REPLICATION_FACTOR,
                             f"Replication factor: {rf} larger than available brokers: "
                             f"{len(brokers)}.")
        new = assign_replicas(brokers, count - n, rf, first_partition=n)
        if validate_only:
            return count
        merged = {**current, **new}
        ops: list[dict[str, Any]] = [{"op": "set", "path": topic_path(name),
                                      "data": TopicAssignment(merged).encode(),
                                      "version": stat.version}]
        for p, replicas in sorted(new.items()):
            ops.append({"op": "create", "path": partition_path(name, p), "data": b""})
            ops.append({"op": "create", "path": partition_state_path(name, p),
                        "data": PartitionState(replicas[0], 0, tuple(replicas)).encode()})
        try:
            await client.multi(ops)
        except MoldauError as e:
            if e.code in (ErrorCode.BAD_VERSION, ErrorCode.NODE_EXISTS):
                raise AdminError(ErrorCode.INVALID_PARTITIONS,
                                 f"Topic '{name}' changed concurrently; retry") from None
            raise
        log.info("topic %s: partitions %d -> %d", name, n, count)
        return count

    # ------------------------------------------------------------------ configs

    def describe_configs(self, resources: list[Any]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for res in resources:
            if not isinstance(res, Mapping):
                out.append({"type": None, "name": None,
                            "error_code": int(ErrorCode.INVALID_REQUEST),
                            "error_message": "resource is not a map", "configs": {}})
                continue
            rtype = _resource_type(res.get("type"))
            name = res.get("name")
            entry: dict[str, Any] = {"type": rtype, "name": name, "error_code": 0,
                                     "error_message": None, "configs": {}}
            if rtype == "topic":
                topic = self.cache.topics.get(name) if isinstance(name, str) else None
                if topic is None:
                    entry["error_code"] = int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
                    entry["error_message"] = f"Topic {name!r} does not exist."
                else:
                    try:
                        cfg = self.replicas.default_config.with_overrides(topic.config)
                    except ValueError:
                        cfg = self.replicas.default_config
                    entry["configs"] = cfg.to_mapping()
            elif rtype == "broker":
                if name not in (None, "", str(self.config.broker_id), self.config.broker_id):
                    entry["error_code"] = int(ErrorCode.INVALID_REQUEST)
                    entry["error_message"] = (f"this is broker {self.config.broker_id}; ask "
                                              f"broker {name} for its config")
                else:
                    entry["configs"] = self.config.as_mapping()
            else:
                entry["error_code"] = int(ErrorCode.INVALID_REQUEST)
                entry["error_message"] = f"unknown resource type {res.get('type')!r}"
            out.append(entry)
        return out

    async def alter_configs(self, resources: list[Any]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for res in resources:
            rtype = _resource_type(res.get("type")) if isinstance(res, Mapping) else None
            name = res.get("name") if isinstance(res, Mapping) else None
            entry: dict[str, Any] = {"type": rtype, "name": name, "error_code": 0,
                                     "error_message": None}
            try:
                if rtype == "broker":
                    raise AdminError(ErrorCode.INVALID_REQUEST,
                                     "broker configs are static here: edit server.properties "
                                     "and restart the broker")
                if rtype != "topic" or not isinstance(name, str):
                    raise AdminError(ErrorCode.INVALID_REQUEST, "expected a topic resource")
                assert isinstance(res, Mapping)
                await self._alter_topic(name, res.get("set"), res.get("delete"))
            except AdminError as e:
                entry["error_code"] = int(e.code)
                entry["error_message"] = e.message
            except MoldauError as e:
                err = _from_metadata_error(name, e)
                entry["error_code"] = err["error_code"]
                entry["error_message"] = err["error_message"]
            out.append(entry)
        return out

    async def _alter_topic(self, name: str, to_set: Any, to_delete: Any) -> None:
        changes = _config_strings(to_set)
        if to_delete is None:
            to_delete = []
        if not isinstance(to_delete, list) or not all(isinstance(k, str) for k in to_delete):
            raise AdminError(ErrorCode.INVALID_REQUEST, "delete must be a list of keys")
        client = self.listener.client
        if await client.exists(topic_path(name)) is None:
            raise AdminError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                             f"Topic {name!r} does not exist.")
        path = topic_config_path(name)
        for _attempt in range(5):
            try:
                data, stat = await client.get(path)
                current: dict[str, str] | None = decode_topic_config(data)
                version = stat.version
            except MoldauError as e:
                if e.code != ErrorCode.NO_NODE:
                    raise
                current, version = None, -1
            new: dict[str, str | None] = dict(current or {})
            new.update(changes)
            for k in to_delete:
                new.pop(k, None)
            final = self._validate_configs(new)
            try:
                if current is None:
                    await client.create(path, encode_topic_config(final), make_parents=True)
                else:
                    await client.set(path, encode_topic_config(final), version=version)
            except MoldauError as e:
                if e.code in (ErrorCode.BAD_VERSION, ErrorCode.NODE_EXISTS, ErrorCode.NO_NODE):
                    continue
                raise
            log.info("topic %s: config overrides set to %s", name, final)
            self.listener.request_reload(("config", name))
            def applied(want: dict[str, str] = final) -> bool:
                t = self.cache.topics.get(name)
                return t is None or t.config == want

            await self.cache.wait_until(applied, 5.0)
            return
        raise AdminError(ErrorCode.UNKNOWN_SERVER_ERROR,
                         "config changed concurrently too often; retry")


def _resource_type(t: Any) -> str | None:
    # Kafka's numeric resource types: 2 topic, 4 broker
    if t in ("topic", 2, "TOPIC"):
        return "topic"
    if t in ("broker", 4, "BROKER"):
        return "broker"
    return None
