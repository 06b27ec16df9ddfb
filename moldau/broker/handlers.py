"""The broker's request handler: one method per API, dispatched on the request's api key.

Handlers check the shape of a request before acting on any part of it (a malformed request
is refused whole with INVALID_REQUEST and changes nothing), then answer errors per topic or
partition inside the response. The rpc server turns an unexpected exception into
UNKNOWN_SERVER_ERROR for that request alone.

Produce appends synchronously before its first ``await`` (the rpc server starts each
connection's requests in arrival order, so pipelined produces append in order), then waits
for the flush and, for acks=all, for the in-sync replicas (at most the request's
``timeout_ms``). Fetch is a long poll: it parks on the partitions it reads until an append
or a high watermark move wakes it or ``max_wait_ms`` passes; a follower's fetch
(``replica_id`` >= 0) reads up to the log end and tells the leader how far it got.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from moldau.broker.admin_manager import AdminManager
from moldau.broker.config import BrokerConfig
from moldau.broker.metadata_cache import MetadataCache
from moldau.broker.partition import Partition
from moldau.broker.producer_id_manager import ProducerIdManager
from moldau.broker.replica_manager import Appended, ReplicaManager
from moldau.clients.metadata.layout import INTERNAL_TOPICS, InvalidTopicName, validate_topic_name
from moldau.clients.protocol import Api, ErrorCode, Message, MoldauError, ProtocolError
from moldau.clients.protocol.frame import RequestHeader
from moldau.clients.protocol.messages import (
    AlterConfigsRequest,
    AlterConfigsResponse,
    ControlledShutdownRequest,
    ControlledShutdownResponse,
    CreatePartitionsRequest,
    CreatePartitionsResponse,
    CreateTopicsRequest,
    CreateTopicsResponse,
    DeleteTopicsRequest,
    DeleteTopicsResponse,
    DescribeConfigsRequest,
    DescribeConfigsResponse,
    FetchRequest,
    FetchResponse,
    InitProducerIdRequest,
    InitProducerIdResponse,
    ListOffsetsRequest,
    ListOffsetsResponse,
    MetadataRequest,
    MetadataResponse,
    OffsetForLeaderEpochRequest,
    OffsetForLeaderEpochResponse,
    ProduceRequest,
    ProduceResponse,
)
from moldau.clients.rpc import ServerConnection, api_versions_response

if TYPE_CHECKING:
    from moldau.broker.controller import Controller

BROKER_APIS: frozenset[Api] = frozenset({
    Api.API_VERSIONS, Api.PRODUCE, Api.FETCH, Api.LIST_OFFSETS, Api.METADATA,
    Api.CREATE_TOPICS, Api.DELETE_TOPICS, Api.CREATE_PARTITIONS, Api.DESCRIBE_CONFIGS,
    Api.ALTER_CONFIGS, Api.INIT_PRODUCER_ID, Api.OFFSET_FOR_LEADER_EPOCH,
    Api.CONTROLLED_SHUTDOWN,
})

_UNKNOWN = int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
_ACKS = int(ErrorCode.INVALID_REQUIRED_ACKS)


def _bad(what: str) -> ProtocolError:
    return ProtocolError(f"malformed request: {what}")


def _int(value: Any, what: str) -> int:
    if type(value) is not int:
        raise _bad(f"{what} must be an integer")
    return value


def _topic_list(topics: Any, width: int, what: str) -> list[tuple[str, list[list[Any]]]]:
    """Check ``[[topic, [[partition, ...], ...]], ...]`` whose partition entries have at
    least ``width`` items, the first an int partition number."""
    if type(topics) is not list:
        raise _bad(f"{what}: topics must be a list")
    out: list[tuple[str, list[list[Any]]]] = []
    for t in topics:
        if type(t) is not list or len(t) < 2 or type(t[0]) is not str or type(t[1]) is not list:
            raise _bad(f"{what}: topic entries are [name, [partitions]]")
        for p in t[1]:
            if type(p) is not list or len(p) < width or type(p[0]) is not int:
                raise _bad(f"{what}: bad partition entry in topic {t[0]!r}")
        out.append((t[0], t[1]))
    return out


class BrokerHandler:
    """Implements ``RequestHandler`` for the broker's APIs."""

    def __init__(self, config: BrokerConfig, cache: MetadataCache, replicas: ReplicaManager,
                 admin: AdminManager, producer_ids: ProducerIdManager | None = None,
                 controller: Controller | None = None) -> None:
        self.config = config
        self.cache = cache
        self.replicas = replicas
        self.admin = admin
        self.producer_ids = producer_ids
        self.controller = controller
        self._versions = api_versions_response(BROKER_APIS)
        self._routes: dict[int, Callable[[Any], Coroutine[Any, Any, Message | None]]] = {
            Api.API_VERSIONS: self.api_versions,
            Api.PRODUCE: self.produce,
            Api.FETCH: self.fetch,
            Api.LIST_OFFSETS: self.list_offsets,
            Api.METADATA: self.metadata,
            Api.CREATE_TOPICS: self.create_topics,
            Api.DELETE_TOPICS: self.delete_topics,
            Api.CREATE_PARTITIONS: self.create_partitions,
            Api.DESCRIBE_CONFIGS: self.describe_configs,
            Api.ALTER_CONFIGS: self.alter_configs,
            Api.INIT_PRODUCER_ID: self.init_producer_id,
            Api.OFFSET_FOR_LEADER_EPOCH: self.offset_for_leader_epoch,
            Api.CONTROLLED_SHUTDOWN: self.controlled_shutdown,
        }

    def handle(self, conn: ServerConnection, header: RequestHeader,
               request: Message) -> Coroutine[Any, Any, Message | None]:
        # a plain function returning the API's coroutine: one coroutine per request, not two
        return self._routes.get(request.API, self._unsupported)(request)

    async def _unsupported(self, request: Message) -> Message:
        raise MoldauError(ErrorCode.UNSUPPORTED_VERSION,
                          f"api {int(request.API)} is not served by a broker")

    async def api_versions(self, _req: Any) -> Message:
        return self._versions

    # ------------------------------------------------------------------ produce

    async def produce(self, req: ProduceRequest) -> ProduceResponse | None:
        topics = _topic_list(req.topics, 2, "produce")
        acks = req.acks
        if acks not in (0, 1, -1) or type(acks) is not int:
            return ProduceResponse([[t, [[p[0], _ACKS, -1, -1, -1, f"acks={acks!r} is not "
                                          "0, 1 or -1 (all)"] for p in parts]]
                                    for t, parts in topics])
        for _t, parts in topics:
            for p in parts:
                if type(p[1]) is not bytes:
                    raise _bad("produce: records must be bytes")
        timeout_ms = req.timeout_ms if type(req.timeout_ms) is int else 30000
        append = self.replicas.append
        out: list[list[Any]] = []
        appended: list[Appended] = []
        missing: list[tuple[str, list[list[Any]], list[Any]]] = []
        # no await before every batch is appended: see the module docstring
        for topic, parts in topics:
            entries: list[Any] = []
            for p in parts:
                done, entry = append(topic, p[0], p[1], acks)
                entries.append(entry)
                if done is not None:
                    appended.append(done)
                elif entry[1] == _UNKNOWN and topic not in self.cache.topics:
                    missing.append((topic, parts, entries))
            out.append([topic, entries])
        if missing and self.config.auto_create_topics_enable:
            await self._produce_after_auto_create(missing, appended, acks)
        if acks == 0:
            return None
        if appended:
            await self.replicas.complete_appends(acks, appended, timeout_ms)
        return ProduceResponse(out)

    async def _produce_after_auto_create(
        self, missing: list[tuple[str, list[list[Any]], list[Any]]],
        appended: list[Appended], acks: int,
    ) -> None:
        done: set[str] = set()
        for topic, parts, entries in missing:
            if topic in done:
                continue
            done.add(topic)
            if not await self.admin.auto_create(topic):
                continue
            for i, p in enumerate(parts):
                if entries[i][1] != _UNKNOWN:
                    continue
                waiting, entry = self.replicas.append(topic, p[0], p[1], acks)
                entries[i] = entry
                if waiting is not None:
                    appended.append(waiting)

    # ------------------------------------------------------------------ fetch

    async def fetch(self, req: FetchRequest) -> FetchResponse:
        topics = _topic_list(req.topics, 3, "fetch")
        for _t, entries in topics:
            for p in entries:
                if type(p[1]) is not int or type(p[2]) is not int:
                    raise _bad("fetch: offset and max bytes must be integers")
        max_wait = _int(req.max_wait_ms, "max_wait_ms") / 1000
        min_bytes = _int(req.min_bytes, "min_bytes")
        max_bytes = _int(req.max_bytes, "max_bytes")
        replica_id = _int(req.replica_id, "replica_id")
        replicas = self.replicas
        # at shutdown consumers get what there is at once; followers keep long-polling, so
        # that the produces still draining can complete
        consumer = replica_id < 0
        out, total, failed, parts = self._read_all(topics, max_bytes, replica_id)
        if (failed or total >= min_bytes or max_wait <= 0
                or (consumer and replicas.shutting_down)):
            return FetchResponse(out)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max_wait
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0 or (consumer and replicas.shutting_down):
                break
            await replicas.wait_for_data(parts, remaining)
            out, total, failed, parts = self._read_all(topics, max_bytes, replica_id)
            if failed or total >= min_bytes:
                break
        return FetchResponse(out)

    def _read_all(self, topics: list[tuple[str, list[list[Any]]]], max_bytes: int,
                  replica_id: int) -> tuple[list[list[Any]], int, bool, list[Partition]]:
        read = self.replicas.read
        total = 0
        failed = False
        out: list[list[Any]] = []
        parts: list[Partition] = []
        for topic, entries in topics:
            res: list[Any] = []
            for p in entries:
                epoch = p[3] if len(p) > 3 and type(p[3]) is int else -1
                budget = min(p[2], max_bytes - total)
                part, entry = read(topic, p[0], p[1], budget, epoch, replica_id, total == 0)
                if part is None:
                    failed = True
                else:
                    parts.append(part)
                    total += len(entry[5])
                res.append(entry)
            out.append([topic, res])
        return out, total, failed, parts

    # ------------------------------------------------------------------ list offsets

    async def list_offsets(self, req: ListOffsetsRequest) -> ListOffsetsResponse:
        topics = _topic_list(req.topics, 2, "list offsets")
        lookup = self.replicas.list_offset
        out: list[list[Any]] = []
        for topic, parts in topics:
            res = []
            for p in parts:
                if type(p[1]) is not int:
                    raise _bad("list offsets: timestamp must be an integer")
                res.append(lookup(topic, p[0], p[1]))
            out.append([topic, res])
        return ListOffsetsResponse(out)

    # ------------------------------------------------------------------ metadata

    async def metadata(self, req: MetadataRequest) -> MetadataResponse:
        cache = self.cache
        if req.topics is None:
            names = sorted(cache.topics)
        elif type(req.topics) is list and all(type(t) is str for t in req.topics):
            names = list(dict.fromkeys(req.topics))
        else:
            raise _bad("metadata: topics must be a list of names or null")
        if req.allow_auto_topic_creation is True and self.config.auto_create_topics_enable:
            missing = [n for n in names if n not in cache.topics and _valid_name(n)]
            if missing:
                await asyncio.gather(*(self.admin.auto_create(n) for n in missing))
        brokers = [[b.broker_id, b.host, b.port, b.rack] for _, b in sorted(cache.brokers.items())]
        return MetadataResponse(brokers=brokers, controller_id=cache.controller_id,
                                topics=[self._topic_metadata(n) for n in names],
                                cluster_id=cache.cluster_id)

    def _topic_metadata(self, name: str) -> dict[str, Any]:
        topic = self.cache.topics.get(name)
        if topic is None:
            if not _valid_name(name):
                code = ErrorCode.INVALID_TOPIC_EXCEPTION
            else:
                code = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
            return {"name": name, "error_code": int(code), "internal": False, "partitions": []}
        live = self.cache.brokers
        partitions = []
        for p, replicas in topic.assignment.items():
            state = topic.states.get(p)
            leader = state.leader if state is not None else -1
            epoch = state.leader_epoch if state is not None else -1
            isr = list(state.isr) if state is not None else []
            code = ErrorCode.NONE
            if leader not in live:
                leader = -1
                code = ErrorCode.LEADER_NOT_AVAILABLE
            partitions.append({
                "partition": p, "error_code": int(code), "leader": leader,
                "leader_epoch": epoch, "replicas": list(replicas), "isr": isr,
                "offline_replicas": [b for b in replicas if b not in live],
            })
        return {"name": name, "error_code": 0, "internal": name in INTERNAL_TOPICS,
                "partitions": partitions}

    # ------------------------------------------------------------------ admin

    async def create_topics(self, req: CreateTopicsRequest) -> CreateTopicsResponse:
        if type(req.topics) is not list:
            raise _bad("create topics: topics must be a list")
        timeout = _int(req.timeout_ms, "timeout_ms")
        return CreateTopicsResponse(await self.admin.create_topics(
            req.topics, timeout, req.validate_only is True))

    async def delete_topics(self, req: DeleteTopicsRequest) -> DeleteTopicsResponse:
        if type(req.topics) is not list:
            raise _bad("delete topics: topics must be a list")
        timeout = _int(req.timeout_ms, "timeout_ms")
        return DeleteTopicsResponse(await self.admin.delete_topics(req.topics, timeout))

    async def create_partitions(self, req: CreatePartitionsRequest) -> CreatePartitionsResponse:
        if type(req.topics) is not list:
            raise _bad("create partitions: topics must be a list")
        timeout = _int(req.timeout_ms, "timeout_ms")
        return CreatePartitionsResponse(await self.admin.create_partitions(
            req.topics, timeout, req.validate_only is True))

    async def describe_configs(self, req: DescribeConfigsRequest) -> DescribeConfigsResponse:
        if type(req.resources) is not list:
            raise _bad("describe configs: resources must be a list")
        return DescribeConfigsResponse(self.admin.describe_configs(req.resources))

    async def alter_configs(self, req: AlterConfigsRequest) -> AlterConfigsResponse:
        if type(req.resources) is not list:
            raise _bad("alter configs: resources must be a list")
        return AlterConfigsResponse(await self.admin.alter_configs(req.resources))

    # ------------------------------------------------------------------ replication

    async def init_producer_id(self, req: InitProducerIdRequest) -> InitProducerIdResponse:
        if req.transactional_id is not None:
            return InitProducerIdResponse(
                int(ErrorCode.INVALID_REQUEST),
                error_message="transactions are not supported: use an idempotent producer "
                              "without a transactional id")
        if self.producer_ids is None:
            return InitProducerIdResponse(int(ErrorCode.COORDINATOR_NOT_AVAILABLE))
        try:
            pid = await self.producer_ids.next_id()
        except MoldauError as e:
            code = ErrorCode.COORDINATOR_NOT_AVAILABLE if e.code >= 200 else e.code
            return InitProducerIdResponse(int(code), error_message=str(e))
        return InitProducerIdResponse(int(ErrorCode.NONE), pid, 0)

    async def offset_for_leader_epoch(self, req: OffsetForLeaderEpochRequest
                                      ) -> OffsetForLeaderEpochResponse:
        topics = _topic_list(req.topics, 3, "offset for leader epoch")
        lookup = self.replicas.offset_for_leader_epoch
        out: list[list[Any]] = []
        for topic, parts in topics:
            res = []
            for p in parts:
                if type(p[1]) is not int or type(p[2]) is not int:
                    raise _bad("offset for leader epoch: epochs must be integers")
                res.append(lookup(topic, p[0], p[1], p[2]))
            out.append([topic, res])
        return OffsetForLeaderEpochResponse(out)

    async def controlled_shutdown(self, req: ControlledShutdownRequest
                                  ) -> ControlledShutdownResponse:
        broker_id = _int(req.broker_id, "broker_id")
        if self.controller is None:
            return ControlledShutdownResponse(int(ErrorCode.NOT_CONTROLLER))
        code, remaining = await self.controller.controlled_shutdown(broker_id)
        return ControlledShutdownResponse(code, remaining)


def _valid_name(name: str) -> bool:
    try:
        validate_topic_name(name)
    except InvalidTopicName:
        return False
    return True
