"""Request and response schemas of every API, and their body codec.

Each message is a frozen, slotted dataclass; its body on the wire is a msgpack map from field
name to value, so a newer peer may add fields an older one ignores. Nested items are plain
lists in the order their docstring gives (hot paths: produce, fetch) or maps (control plane).

Record data (``records``) is always a run of whole record batches (see ``clients.records``),
carried as msgpack bin and never decoded by the broker.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, ClassVar, TypeVar

from moldau.clients.protocol.frame import ProtocolError


class Api(IntEnum):
    # broker APIs (Kafka's api keys)
    PRODUCE = 0
    FETCH = 1
    LIST_OFFSETS = 2
    METADATA = 3
    OFFSET_COMMIT = 8
    OFFSET_FETCH = 9
    FIND_COORDINATOR = 10
    JOIN_GROUP = 11
    HEARTBEAT = 12
    LEAVE_GROUP = 13
    SYNC_GROUP = 14
    DESCRIBE_GROUPS = 15
    LIST_GROUPS = 16
    API_VERSIONS = 18
    CREATE_TOPICS = 19
    DELETE_TOPICS = 20
    INIT_PRODUCER_ID = 22
    DESCRIBE_CONFIGS = 32
    ALTER_CONFIGS = 33
    CREATE_PARTITIONS = 37
    # metadata service APIs
    MD_CONNECT = 100
    MD_PING = 101
    MD_CREATE = 102
    MD_DELETE = 103
    MD_SET_DATA = 104
    MD_GET_DATA = 105
    MD_GET_CHILDREN = 106
    MD_EXISTS = 107
    MD_CLOSE_SESSION = 108
    MD_MULTI = 109
    MD_SYNC = 110
    MD_WATCH_EVENT = 111  # pushed by the server, never requested
    # stream cluster runtime: JobManager <-> TaskManager <-> clients
    REGISTER_TASK_MANAGER = 300
    TM_HEARTBEAT = 301
    UPDATE_TASK_STATE = 302
    SUBMIT_TASKS = 303
    CANCEL_TASKS = 304
    READ_TM_LOG = 305
    UNREGISTER_TASK_MANAGER = 306
    SUBMIT_JOB = 310
    CANCEL_JOB = 311
    JOB_QUERY = 312
    # replication between brokers (moldau's numbers; Kafka's OffsetForLeaderEpoch is 23 and
    # ControlledShutdown 7)
    OFFSET_FOR_LEADER_EPOCH = 170
    CONTROLLED_SHUTDOWN = 171
    # the metadata quorum (Raft) between metadata nodes, on their peer port; one-way except
    # MD_FORWARD
    RAFT_VOTE = 150
    RAFT_VOTE_RESULT = 151
    RAFT_APPEND_ENTRIES = 152
    RAFT_APPEND_RESULT = 153
    RAFT_INSTALL_SNAPSHOT = 154
    RAFT_READ_INDEX = 155
    RAFT_READ_INDEX_RESULT = 156
    MD_FORWARD = 157


class Message:
    """Base of every request and response dataclass."""

    API: ClassVar[Api]

    def to_body(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]


M = TypeVar("M", bound=Message)


def from_body(cls: type[M], body: Any) -> M:
    """Build ``cls`` from a decoded body map; unknown keys are ignored, missing required
    keys and non-map bodies raise ProtocolError."""
    if not isinstance(body, dict):
        raise ProtocolError(f"{cls.__name__}: body is not a map")
    kwargs = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in body:
            kwargs[f.name] = body[f.name]
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ProtocolError(f"{cls.__name__}: missing field {f.name!r}")
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ProtocolError(f"{cls.__name__}: {e}") from None


# ---------------------------------------------------------------- versions


@dataclass(frozen=True, slots=True)
class ApiVersionsRequest(Message):
    API: ClassVar[Api] = Api.API_VERSIONS


@dataclass(frozen=True, slots=True)
class ApiVersionsResponse(Message):
    """``api_keys``: list of ``[api, min_version, max_version]``."""

    API: ClassVar[Api] = Api.API_VERSIONS
    error_code: int
    api_keys: list[list[int]]


# ---------------------------------------------------------------- produce / fetch


@dataclass(frozen=True, slots=True)
class ProduceRequest(Message):
    """``topics``: ``[[topic, [[partition, records], ...]], ...]``.

    acks: 0 (no response is sent), 1 (leader appended), -1 (all in-sync replicas).
    """

    API: ClassVar[Api] = Api.PRODUCE
    acks: int
    timeout_ms: int
    topics: list[list[Any]]
    transactional_id: str | None = None


@dataclass(frozen=True, slots=True)
class ProduceResponse(Message):
    """``topics``: ``[[topic, [[partition, error_code, base_offset, log_append_time,
    log_start_offset, error_message], ...]], ...]``."""

    API: ClassVar[Api] = Api.PRODUCE
    topics: list[list[Any]]


@dataclass(frozen=True, slots=True)
class FetchRequest(Message):
    """``topics``: ``[[topic, [[partition, fetch_offset, partition_max_bytes,
    current_leader_epoch], ...]], ...]``. ``replica_id`` is -1 for consumers and the
    follower's broker id for replication."""

    API: ClassVar[Api] = Api.FETCH
    max_wait_ms: int
    min_bytes: int
    max_bytes: int
    topics: list[list[Any]]
    replica_id: int = -1
    isolation_level: int = 0


@dataclass(frozen=True, slots=True)
class FetchResponse(Message):
    """``topics``: ``[[topic, [[partition, error_code, high_watermark, last_stable_offset,
    log_start_offset, records], ...]], ...]``; ``records`` may end in a partial batch."""

    API: ClassVar[Api] = Api.FETCH
    topics: list[list[Any]]
    throttle_time_ms: int = 0


EARLIEST_TIMESTAMP = -2
LATEST_TIMESTAMP = -1


@dataclass(frozen=True, slots=True)
class ListOffsetsRequest(Message):
    """``topics``: ``[[topic, [[partition, timestamp], ...]], ...]``; timestamp -2 means
    earliest, -1 latest, else the first offset whose timestamp is >= it."""

    API: ClassVar[Api] = Api.LIST_OFFSETS
    topics: list[list[Any]]
    replica_id: int = -1


@dataclass(frozen=True, slots=True)
class ListOffsetsResponse(Message):
    """``topics``: ``[[topic, [[partition, error_code, timestamp, offset], ...]], ...]``;
    offset -1 when no record has a timestamp >= the one asked."""

    API: ClassVar[Api] = Api.LIST_OFFSETS
    topics: list[list[Any]]


# ---------------------------------------------------------------- cluster metadata


@dataclass(frozen=True, slots=True)
class MetadataRequest(Message):
    """``topics`` None means every topic."""

    API: ClassVar[Api] = Api.METADATA
    topics: list[str] | None = None
    allow_auto_topic_creation: bool = False


@dataclass(frozen=True, slots=True)
class MetadataResponse(Message):
    """``brokers``: ``[[node_id, host, port, rack], ...]``; ``topics``: list of maps
    ``{"name", "error_code", "internal", "partitions": [{"partition", "error_code",
    "leader", "leader_epoch", "replicas", "isr", "offline_replicas"}]}``."""

    API: ClassVar[Api] = Api.METADATA
    brokers: list[list[Any]]
    controller_id: int
    topics: list[dict[str, Any]]
    cluster_id: str = ""


@dataclass(frozen=True, slots=True)
class CreateTopicsRequest(Message):
    """``topics``: maps ``{"name", "num_partitions", "replication_factor",
    "assignments": {partition: [broker ids]} | None, "configs": {key: value}}``."""

    API: ClassVar[Api] = Api.CREATE_TOPICS
    topics: list[dict[str, Any]]
    timeout_ms: int = 30000
    validate_only: bool = False


@dataclass(frozen=True, slots=True)
class CreateTopicsResponse(Message):
    """``topics``: maps ``{"name", "error_code", "error_message"}``."""

    API: ClassVar[Api] = Api.CREATE_TOPICS
    topics: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class DeleteTopicsRequest(Message):
    API: ClassVar[Api] = Api.DELETE_TOPICS
    topics: list[str]
    timeout_ms: int = 30000


@dataclass(frozen=True, slots=True)
class DeleteTopicsResponse(Message):
    """``topics``: maps ``{"name", "error_code", "error_message"}``."""

    API: ClassVar[Api] = Api.DELETE_TOPICS
    topics: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class CreatePartitionsRequest(Message):
    """``topics``: maps ``{"name", "count"}`` (the new total number of partitions)."""

    API: ClassVar[Api] = Api.CREATE_PARTITIONS
    topics: list[dict[str, Any]]
    timeout_ms: int = 30000
    validate_only: bool = False


@dataclass(frozen=True, slots=True)
class CreatePartitionsResponse(Message):
    """``topics``: maps ``{"name", "error_code", "error_message"}``."""

    API: ClassVar[Api] = Api.CREATE_PARTITIONS
    topics: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class DescribeConfigsRequest(Message):
    """``resources``: maps ``{"type": "topic" | "broker", "name"}``."""

    API: ClassVar[Api] = Api.DESCRIBE_CONFIGS
    resources: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class DescribeConfigsResponse(Message):
    """``results``: maps ``{"type", "name", "error_code", "error_message",
    "configs": {key: value}}``."""

    API: ClassVar[Api] = Api.DESCRIBE_CONFIGS
    results: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class AlterConfigsRequest(Message):
    """``resources``: maps ``{"type": "topic", "name", "set": {key: value},
    "delete": [key]}`` (incremental, like Kafka's IncrementalAlterConfigs)."""

    API: ClassVar[Api] = Api.ALTER_CONFIGS
    resources: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class AlterConfigsResponse(Message):
    """``results``: maps ``{"type", "name", "error_code", "error_message"}``."""

    API: ClassVar[Api] = Api.ALTER_CONFIGS
    results: list[dict[str, Any]]


# ---------------------------------------------------------------- metadata service
#
# A connection is bound to one session by MdConnect; later requests on it act for that
# session. ``stat`` maps: {"czxid", "mzxid", "pzxid", "ctime", "mtime", "version",
# "cversion", "ephemeral_owner", "data_length", "num_children"}.


@dataclass(frozen=True, slots=True)
class MdConnectRequest(Message):
    """``session_id`` 0 starts a new session; non-zero resumes one (after a reconnect)."""

    API: ClassVar[Api] = Api.MD_CONNECT
    timeout_ms: int
    session_id: int = 0


@dataclass(frozen=True, slots=True)
class MdConnectResponse(Message):
    API: ClassVar[Api] = Api.MD_CONNECT
    error_code: int
    session_id: int
    timeout_ms: int
    leader: str = ""


@dataclass(frozen=True, slots=True)
class MdPingRequest(Message):
    API: ClassVar[Api] = Api.MD_PING


@dataclass(frozen=True, slots=True)
class MdPingResponse(Message):
    API: ClassVar[Api] = Api.MD_PING
    error_code: int


@dataclass(frozen=True, slots=True)
class MdCreateRequest(Message):
    API: ClassVar[Api] = Api.MD_CREATE
    path: str
    data: bytes = b""
    ephemeral: bool = False
    sequential: bool = False


@dataclass(frozen=True, slots=True)
class MdCreateResponse(Message):
    """``path``: the created path (with the sequence suffix for sequential nodes)."""

    API: ClassVar[Api] = Api.MD_CREATE
    error_code: int
    path: str = ""


@dataclass(frozen=True, slots=True)
class MdDeleteRequest(Message):
    API: ClassVar[Api] = Api.MD_DELETE
    path: str
    version: int = -1


@dataclass(frozen=True, slots=True)
class MdDeleteResponse(Message):
    API: ClassVar[Api] = Api.MD_DELETE
    error_code: int


@dataclass(frozen=True, slots=True)
class MdSetDataRequest(Message):
    API: ClassVar[Api] = Api.MD_SET_DATA
    path: str
    data: bytes
    version: int = -1


@dataclass(frozen=True, slots=True)
class MdSetDataResponse(Message):
    API: ClassVar[Api] = Api.MD_SET_DATA
    error_code: int
    stat: dict[str, int] | None = None


@dataclass(frozen=True, slots=True)
class MdGetDataRequest(Message):
    API: ClassVar[Api] = Api.MD_GET_DATA
    path: str
    watch: bool = False


@dataclass(frozen=True, slots=True)
class MdGetDataResponse(Message):
    API: ClassVar[Api] = Api.MD_GET_DATA
    error_code: int
    data: bytes = b""
    stat: dict[str, int] | None = None


@dataclass(frozen=True, slots=True)
class MdGetChildrenRequest(Message):
    API: ClassVar[Api] = Api.MD_GET_CHILDREN
    path: str
    watch: bool = False


@dataclass(frozen=True, slots=True)
class MdGetChildrenResponse(Message):
    API: ClassVar[Api] = Api.MD_GET_CHILDREN
    error_code: int
    children: list[str] = field(default_factory=list)
    stat: dict[str, int] | None = None


@dataclass(frozen=True, slots=True)
class MdExistsRequest(Message):
    """With ``watch``, a watch is left whether or not the node exists (ZooKeeper's rule)."""

    API: ClassVar[Api] = Api.MD_EXISTS
    path: str
    watch: bool = False


@dataclass(frozen=True, slots=True)
class MdExistsResponse(Message):
    """``stat`` None when the node does not exist (error_code is then NONE)."""

    API: ClassVar[Api] = Api.MD_EXISTS
    error_code: int
    stat: dict[str, int] | None = None


@dataclass(frozen=True, slots=True)
class MdMultiRequest(Message):
    """All-or-nothing: ``ops`` is a list of maps ``{"op": "create" | "delete" | "set" |
    "check", "path", "data", "version", "ephemeral", "sequential"}``."""

    API: ClassVar[Api] = Api.MD_MULTI
    ops: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class MdMultiResponse(Message):
    """``results``: one map per op ``{"error_code", "path", "stat"}``; on failure the first
    failing op carries its error and the others ``NONE`` (nothing was applied)."""

    API: ClassVar[Api] = Api.MD_MULTI
    error_code: int
    results: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class MdCloseSessionRequest(Message):
    API: ClassVar[Api] = Api.MD_CLOSE_SESSION


@dataclass(frozen=True, slots=True)
class MdCloseSessionResponse(Message):
    API: ClassVar[Api] = Api.MD_CLOSE_SESSION
    error_code: int


@dataclass(frozen=True, slots=True)
class MdSyncRequest(Message):
    """Wait until this node has applied everything its leader committed (linearizable read)."""

    API: ClassVar[Api] = Api.MD_SYNC
    path: str = "/"


@dataclass(frozen=True, slots=True)
class MdSyncResponse(Message):
    API: ClassVar[Api] = Api.MD_SYNC
    error_code: int


class WatchEventType(IntEnum):
    NODE_CREATED = 1
    NODE_DELETED = 2
    NODE_DATA_CHANGED = 3
    NODE_CHILDREN_CHANGED = 4


@dataclass(frozen=True, slots=True)
class MdWatchEvent(Message):
    """Pushed with correlation id PUSH_CORRELATION_ID; a watch fires once."""

    API: ClassVar[Api] = Api.MD_WATCH_EVENT
    type: int
    path: str


# ---------------------------------------------------------------- registry

# api -> (request class, response class, min version, max version)
SCHEMAS: dict[Api, tuple[type[Message], type[Message], int, int]] = {
    Api.API_VERSIONS: (ApiVersionsRequest, ApiVersionsResponse, 0, 0),
    Api.PRODUCE: (ProduceRequest, ProduceResponse, 0, 0),
    Api.FETCH: (FetchRequest, FetchResponse, 0, 0),
    Api.LIST_OFFSETS: (ListOffsetsRequest, ListOffsetsResponse, 0, 0),
    Api.METADATA: (MetadataRequest, MetadataResponse, 0, 0),
    Api.CREATE_TOPICS: (CreateTopicsRequest, CreateTopicsResponse, 0, 0),
    Api.DELETE_TOPICS: (DeleteTopicsRequest, DeleteTopicsResponse, 0, 0),
    Api.CREATE_PARTITIONS: (CreatePartitionsRequest, CreatePartitionsResponse, 0, 0),
    Api.DESCRIBE_CONFIGS: (DescribeConfigsRequest, DescribeConfigsResponse, 0, 0),
    Api.ALTER_CONFIGS: (AlterConfigsRequest, AlterConfigsResponse, 0, 0),
    Api.MD_CONNECT: (MdConnectRequest, MdConnectResponse, 0, 0),
    Api.MD_PING: (MdPingRequest, MdPingResponse, 0, 0),
    Api.MD_CREATE: (MdCreateRequest, MdCreateResponse, 0, 0),
    Api.MD_DELETE: (MdDeleteRequest, MdDeleteResponse, 0, 0),
    Api.MD_SET_DATA: (MdSetDataRequest, MdSetDataResponse, 0, 0),
    Api.MD_GET_DATA: (MdGetDataRequest, MdGetDataResponse, 0, 0),
    Api.MD_GET_CHILDREN: (MdGetChildrenRequest, MdGetChildrenResponse, 0, 0),
    Api.MD_EXISTS: (MdExistsRequest, MdExistsResponse, 0, 0),
    Api.MD_MULTI: (MdMultiRequest, MdMultiResponse, 0, 0),
    Api.MD_CLOSE_SESSION: (MdCloseSessionRequest, MdCloseSessionResponse, 0, 0),
    Api.MD_SYNC: (MdSyncRequest, MdSyncResponse, 0, 0),
}

BROKER_APIS = frozenset(a for a in SCHEMAS if a < 100)
METADATA_APIS = frozenset(a for a in SCHEMAS if a >= 100)


def response_class(api: int) -> type[Message]:
    return SCHEMAS[Api(api)][1]


def decode_request_body(api: int, version: int, body: Any) -> Message:
    """Turn a request's body into its message; ProtocolError for an unknown api or version
    (the caller answers UNSUPPORTED_VERSION) or a malformed body (INVALID_REQUEST)."""
    try:
        req_cls, _, lo, hi = SCHEMAS[Api(api)]
    except (ValueError, KeyError):
        raise UnsupportedApi(f"unknown api {api}") from None
    if not lo <= version <= hi:
        raise UnsupportedApi(f"api {Api(api).name} version {version} not in [{lo}, {hi}]")
    return from_body(req_cls, body)


class UnsupportedApi(ProtocolError):
    pass


# ---------------------------------------------------------------- stream cluster runtime
# Appended after BROKER_APIS / METADATA_APIS on purpose: those sets stay as they were.


@dataclass(frozen=True, slots=True)
class RegisterTaskManagerRequest(Message):
    """TaskManager -> JobManager, at start and whenever the JobManager forgot it.
    ``instance`` changes every time the TaskManager process starts; ``slots``: maps
    ``{"index", "data_host", "data_port", "ready", "job_id"}``; ``hardware``: ``{"cpuCores",
    "physicalMemory", ...}``; ``port`` serves the JobManager's requests (SUBMIT_TASKS ...)."""

    API: ClassVar[Api] = Api.REGISTER_TASK_MANAGER
    tm_id: str
    instance: str
    host: str
    port: int
    slots: list[dict[str, Any]]
    hardware: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RegisterTaskManagerResponse(Message):
    """``jm_instance`` changes every time the JobManager starts."""

    API: ClassVar[Api] = Api.REGISTER_TASK_MANAGER
    error_code: int
    error_message: str | None = None
    jm_instance: str = ""
    heartbeat_interval_ms: int = 1000
    heartbeat_timeout_ms: int = 10000


@dataclass(frozen=True, slots=True)
class TmHeartbeatRequest(Message):
    """``slots`` as in registration; ``tasks``: execution id -> ``[state, records_in,
    records_out, bytes_in, bytes_out]`` (and the error of a task that ended, if any) of
    every task the TaskManager still knows."""

    API: ClassVar[Api] = Api.TM_HEARTBEAT
    tm_id: str
    instance: str
    slots: list[dict[str, Any]]
    tasks: dict[str, list[Any]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TmHeartbeatResponse(Message):
    """UNKNOWN_MEMBER_ID: the JobManager does not know this TaskManager (instance):
    register again."""

    API: ClassVar[Api] = Api.TM_HEARTBEAT
    error_code: int
    error_message: str | None = None


@dataclass(frozen=True, slots=True)
class UpdateTaskStateRequest(Message):
    """A task changed state (RUNNING, FINISHED, CANCELED, FAILED); ``error``: the
    failure with its traceback; ``metrics``: ``[records_in, records_out, bytes_in,
    bytes_out]``."""

    API: ClassVar[Api] = Api.UPDATE_TASK_STATE
    tm_id: str
    job_id: str
    execution_id: str
    state: str
    error: str | None = None
    metrics: list[int] | None = None


@dataclass(frozen=True, slots=True)
class UpdateTaskStateResponse(Message):
    API: ClassVar[Api] = Api.UPDATE_TASK_STATE
    error_code: int


@dataclass(frozen=True, slots=True)
class SubmitTasksRequest(Message):
    """JobManager -> TaskManager: run ``tasks`` of job ``job_id`` in slot ``slot_index``.
    ``tasks``: maps ``{"execution_id", "vertex_id", "subtask", "attempt", "inputs":
    [[edge_index, producer_subtask, producer_execution_id, host, port], ...] (in input
    channel order), "outputs": [[edge_index, [[consumer_subtask, host, port], ...]], ...]}``.
    ``config``: settings the JobManager adds to the job's configuration."""

    API: ClassVar[Api] = Api.SUBMIT_TASKS
    job_id: str
    slot_index: int
    job_graph: bytes
    artifacts: dict[str, bytes]
    tasks: list[dict[str, Any]]
    config: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SubmitTasksResponse(Message):
    API: ClassVar[Api] = Api.SUBMIT_TASKS
    error_code: int
    error_message: str | None = None


@dataclass(frozen=True, slots=True)
class CancelTasksRequest(Message):
    """Cancel every task of ``job_id`` on this TaskManager."""

    API: ClassVar[Api] = Api.CANCEL_TASKS
    job_id: str


@dataclass(frozen=True, slots=True)
class CancelTasksResponse(Message):
    API: ClassVar[Api] = Api.CANCEL_TASKS
    error_code: int


@dataclass(frozen=True, slots=True)
class ReadTmLogRequest(Message):
    """The tail (``max_bytes``) of the TaskManager's "stdout" or "log" file."""

    API: ClassVar[Api] = Api.READ_TM_LOG
    which: str = "stdout"
    max_bytes: int = 1 << 20


@dataclass(frozen=True, slots=True)
class ReadTmLogResponse(Message):
    API: ClassVar[Api] = Api.READ_TM_LOG
    error_code: int
    text: str | None = None


@dataclass(frozen=True, slots=True)
class SubmitJobRequest(Message):
    """Client -> JobManager: bytes of ``JobGraph.to_bytes()`` and the files beside the
    job's script (relative path -> bytes)."""

    API: ClassVar[Api] = Api.SUBMIT_JOB
    job_graph: bytes
    artifacts: dict[str, bytes] = field(default_factory=dict)
    savepoint_path: str | None = None
    allow_non_restored_state: bool = False
    parallelism: int | None = None
    program_args: list[str] | None = None


@dataclass(frozen=True, slots=True)
class SubmitJobResponse(Message):
    """INVALID_REQUEST with ``error_message`` for a graph that can't run."""

    API: ClassVar[Api] = Api.SUBMIT_JOB
    error_code: int
    error_message: str | None = None
    job_id: str | None = None


@dataclass(frozen=True, slots=True)
class CancelJobRequest(Message):
    API: ClassVar[Api] = Api.CANCEL_JOB
    job_id: str


@dataclass(frozen=True, slots=True)
class CancelJobResponse(Message):
    """``found`` False: no such job."""

    API: ClassVar[Api] = Api.CANCEL_JOB
    error_code: int
    found: bool = False


@dataclass(frozen=True, slots=True)
class JobQueryRequest(Message):
    """A read of the JobManager gateway by name: ``overview``, ``config``,
    ``jobs_overview``, ``job_details`` (jid), ``job_exceptions`` (jid), ``vertex_details``
    (jid, vid), ``taskmanagers``, ``taskmanager`` (tmid), ``taskmanager_log`` (tmid,
    which, max_bytes)."""

    API: ClassVar[Api] = Api.JOB_QUERY
    query: str
    args: list[Any] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class JobQueryResponse(Message):
    """``result``: the gateway's answer (None for an unknown id); INVALID_REQUEST with
    ``error_message`` for an unknown query."""

    API: ClassVar[Api] = Api.JOB_QUERY
    error_code: int
    error_message: str | None = None
    result: Any = None


@dataclass(frozen=True, slots=True)
class UnregisterTaskManagerRequest(Message):
    """TaskManager -> JobManager when it shuts down: its slots and tasks are gone now,
    not only after the heartbeat timeout."""

    API: ClassVar[Api] = Api.UNREGISTER_TASK_MANAGER
    tm_id: str
    instance: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class UnregisterTaskManagerResponse(Message):
    API: ClassVar[Api] = Api.UNREGISTER_TASK_MANAGER
    error_code: int


SCHEMAS.update({
    Api.UNREGISTER_TASK_MANAGER: (UnregisterTaskManagerRequest, UnregisterTaskManagerResponse,
                                  0, 0),
    Api.REGISTER_TASK_MANAGER: (RegisterTaskManagerRequest, RegisterTaskManagerResponse, 0, 0),
    Api.TM_HEARTBEAT: (TmHeartbeatRequest, TmHeartbeatResponse, 0, 0),
    Api.UPDATE_TASK_STATE: (UpdateTaskStateRequest, UpdateTaskStateResponse, 0, 0),
    Api.SUBMIT_TASKS: (SubmitTasksRequest, SubmitTasksResponse, 0, 0),
    Api.CANCEL_TASKS: (CancelTasksRequest, CancelTasksResponse, 0, 0),
    Api.READ_TM_LOG: (ReadTmLogRequest, ReadTmLogResponse, 0, 0),
    Api.SUBMIT_JOB: (SubmitJobRequest, SubmitJobResponse, 0, 0),
    Api.CANCEL_JOB: (CancelJobRequest, CancelJobResponse, 0, 0),
    Api.JOB_QUERY: (JobQueryRequest, JobQueryResponse, 0, 0),
})

# what a JobManager serves, and what a TaskManager serves
JOBMANAGER_APIS = frozenset({Api.REGISTER_TASK_MANAGER, Api.TM_HEARTBEAT, Api.UPDATE_TASK_STATE,
                             Api.SUBMIT_JOB, Api.CANCEL_JOB, Api.JOB_QUERY,
                             Api.UNREGISTER_TASK_MANAGER})
TASKMANAGER_APIS = frozenset({Api.SUBMIT_TASKS, Api.CANCEL_TASKS, Api.READ_TM_LOG})


# ---------------------------------------------------------------- replication and idempotence
# Appended after BROKER_APIS / METADATA_APIS on purpose: the broker lists what it serves.


@dataclass(frozen=True, slots=True)
class InitProducerIdRequest(Message):
    """An idempotent producer asks any broker for a producer id (transactions, which would
    use ``transactional_id``, are not supported)."""

    API: ClassVar[Api] = Api.INIT_PRODUCER_ID
    transactional_id: str | None = None
    transaction_timeout_ms: int = 60000
    producer_id: int = -1
    producer_epoch: int = -1


@dataclass(frozen=True, slots=True)
class InitProducerIdResponse(Message):
    API: ClassVar[Api] = Api.INIT_PRODUCER_ID
    error_code: int
    producer_id: int = -1
    producer_epoch: int = -1
    error_message: str | None = None


@dataclass(frozen=True, slots=True)
class OffsetForLeaderEpochRequest(Message):
    """A follower asks the leader where an epoch ends (KIP-101), to truncate to it.

    ``topics``: ``[[topic, [[partition, current_leader_epoch, leader_epoch], ...]], ...]``;
    ``current_leader_epoch`` fences a stale leader or follower as in Fetch (-1: unchecked).
    """

    API: ClassVar[Api] = Api.OFFSET_FOR_LEADER_EPOCH
    topics: list[list[Any]]
    replica_id: int = -1


@dataclass(frozen=True, slots=True)
class OffsetForLeaderEpochResponse(Message):
    """``topics``: ``[[topic, [[partition, error_code, leader_epoch, end_offset], ...]], ...]``:
    the largest epoch of the leader's log that is <= the one asked, and the offset where it
    ends (the next epoch's start, or the log end); ``-1, -1`` when the leader has none."""

    API: ClassVar[Api] = Api.OFFSET_FOR_LEADER_EPOCH
    topics: list[list[Any]]


@dataclass(frozen=True, slots=True)
class ControlledShutdownRequest(Message):
    """A broker about to stop asks the controller to move its leaderships away first.
    ``broker_epoch``: the czxid of its ``/brokers/ids/<id>`` node (-1: unchecked)."""

    API: ClassVar[Api] = Api.CONTROLLED_SHUTDOWN
    broker_id: int
    broker_epoch: int = -1


@dataclass(frozen=True, slots=True)
class ControlledShutdownResponse(Message):
    """``remaining``: ``[[topic, partition], ...]`` still led by the broker (no other in-sync
    replica could take over)."""

    API: ClassVar[Api] = Api.CONTROLLED_SHUTDOWN
    error_code: int
    remaining: list[list[Any]] = field(default_factory=list)
    error_message: str | None = None


SCHEMAS.update({
    Api.INIT_PRODUCER_ID: (InitProducerIdRequest, InitProducerIdResponse, 0, 0),
    Api.OFFSET_FOR_LEADER_EPOCH: (OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse, 0, 0),
    Api.CONTROLLED_SHUTDOWN: (ControlledShutdownRequest, ControlledShutdownResponse, 0, 0),
})


# ---------------------------------------------------------------- metadata quorum (Raft)
#
# Between metadata nodes, on their peer port. Every Raft message is one-way (sent without
# waiting, never answered: its answer is another one-way message back on the answering
# node's own connection), so each lists itself as its response class. ``src``/``dst`` are
# node ids. Appended after METADATA_APIS on purpose: clients never reach these.


@dataclass(frozen=True, slots=True)
class RaftVoteRequest(Message):
    """RequestVote; ``pre_vote`` only asks whether the candidate could win ``term``."""

    API: ClassVar[Api] = Api.RAFT_VOTE
    src: int
    dst: int
    term: int
    last_index: int
    last_term: int
    pre_vote: bool = False


@dataclass(frozen=True, slots=True)
class RaftVoteResult(Message):
    API: ClassVar[Api] = Api.RAFT_VOTE_RESULT
    src: int
    dst: int
    term: int
    granted: bool
    pre_vote: bool = False


@dataclass(frozen=True, slots=True)
class RaftAppendEntriesRequest(Message):
    """``entries``: ``[[index, term, payload], ...]`` (payload: an encoded metadata
    transaction); also the heartbeat. ``read_seq`` numbers ReadIndex rounds."""

    API: ClassVar[Api] = Api.RAFT_APPEND_ENTRIES
    src: int
    dst: int
    term: int
    prev_index: int
    prev_term: int
    entries: list[list[Any]]
    commit: int
    read_seq: int = 0


@dataclass(frozen=True, slots=True)
class RaftAppendResult(Message):
    """``success``: the log matches the leader's up to ``index``; else ``index`` is a hint
    where to retry."""

    API: ClassVar[Api] = Api.RAFT_APPEND_RESULT
    src: int
    dst: int
    term: int
    success: bool
    index: int
    read_seq: int = 0


@dataclass(frozen=True, slots=True)
class RaftInstallSnapshotRequest(Message):
    """``data``: a whole snapshot file of the state as of ``index`` (entry term
    ``last_term``); answered by a RaftAppendResult."""

    API: ClassVar[Api] = Api.RAFT_INSTALL_SNAPSHOT
    src: int
    dst: int
    term: int
    index: int
    last_term: int
    data: bytes


@dataclass(frozen=True, slots=True)
class RaftReadIndexRequest(Message):
    API: ClassVar[Api] = Api.RAFT_READ_INDEX
    src: int
    dst: int
    term: int
    ctx: int


@dataclass(frozen=True, slots=True)
class RaftReadIndexResult(Message):
    """``index`` -1: not the leader."""

    API: ClassVar[Api] = Api.RAFT_READ_INDEX_RESULT
    src: int
    dst: int
    term: int
    ctx: int
    index: int


@dataclass(frozen=True, slots=True)
class MdForwardRequest(Message):
    """A follower hands a client's write (``op``/``args`` of a metadata transaction, for
    ``session``) to the leader; ``op`` "touch" with ``args`` ``{"sessions": [ids]}`` instead
    reports sessions heard from."""

    API: ClassVar[Api] = Api.MD_FORWARD
    session: int
    op: str
    args: dict[str, Any]


@dataclass(frozen=True, slots=True)
class MdForwardResponse(Message):
    """``zxid`` of the committed transaction and its ``result`` map ``{"error", "path",
    "stat", "results"}``. NOT_QUORUM_LEADER: not applied; CONNECTION_LOSS: unknown."""

    API: ClassVar[Api] = Api.MD_FORWARD
    error_code: int
    zxid: int = 0
    result: dict[str, Any] | None = None


SCHEMAS.update({
    Api.RAFT_VOTE: (RaftVoteRequest, RaftVoteRequest, 0, 0),
    Api.RAFT_VOTE_RESULT: (RaftVoteResult, RaftVoteResult, 0, 0),
    Api.RAFT_APPEND_ENTRIES: (RaftAppendEntriesRequest, RaftAppendEntriesRequest, 0, 0),
    Api.RAFT_APPEND_RESULT: (RaftAppendResult, RaftAppendResult, 0, 0),
    Api.RAFT_INSTALL_SNAPSHOT: (RaftInstallSnapshotRequest, RaftInstallSnapshotRequest, 0, 0),
    Api.RAFT_READ_INDEX: (RaftReadIndexRequest, RaftReadIndexRequest, 0, 0),
    Api.RAFT_READ_INDEX_RESULT: (RaftReadIndexResult, RaftReadIndexResult, 0, 0),
    Api.MD_FORWARD: (MdForwardRequest, MdForwardResponse, 0, 0),
})

METADATA_PEER_APIS = frozenset(a for a in SCHEMAS if 150 <= a < 170)
