"""JobManager configuration: Flink's ``flink-conf.yaml`` keys (``key: value`` lines), then
the command-line flags (later wins), parsed into a pydantic model.

Keys used here: ``jobmanager.rpc.address`` / ``jobmanager.rpc.port``, ``rest.address``
(or ``rest.bind-address``) / ``rest.port``, ``heartbeat.timeout`` (ms, default 10000),
``slot.request.timeout`` (ms, default 300000), ``jobstore.max-capacity`` (finished jobs
kept, default 1000), ``task.cancellation.timeout`` (ms, default 60000: a job stuck in
CANCELING/FAILING ends anyway). Every other key is kept as given: it shows in ``/config``,
and keys of the data plane and execution (``execution.*``, ``pipeline.*``,
``taskmanager.network.*``, ``taskmanager.memory.segment-size``, ``moldau.*``) are
cluster defaults handed to every job that does not set them itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

DEFAULT_RPC_PORT = 6123
DEFAULT_REST_PORT = 8081
TASK_DEFAULT_PREFIXES = ("execution.", "pipeline.", "taskmanager.network.",
                         "taskmanager.memory.segment-size", "moldau.")


class ConfigError(ValueError):
    """A configuration that cannot be used; one line naming the key."""


def parse_flink_conf(text: str) -> dict[str, str]:
    """``key: value`` per line (flink-conf.yaml's flat form); ``#`` starts a comment;
    surrounding quotes are dropped."""
    out: dict[str, str] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise ConfigError(f"line {n}: expected 'key: value', got {raw.strip()!r}")
        value = value.strip()
        if " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key.strip()] = value
    return out


class JobManagerConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    rpc_host: str = "127.0.0.1"
    rpc_port: int = Field(DEFAULT_RPC_PORT, ge=0, le=65535)
    rest_host: str = "127.0.0.1"
    rest_port: int = Field(DEFAULT_REST_PORT, ge=0, le=65535)
    data_dir: Path
    heartbeat_timeout_ms: int = Field(10000, ge=100)
    slot_request_timeout_ms: int = Field(300000, ge=0)
    archive_capacity: int = Field(1000, ge=1)
    cancel_timeout_ms: int = Field(60000, ge=100)
    web_dir: Path | None = None
    raw: dict[str, str] = Field(default_factory=dict)

    def task_defaults(self) -> dict[str, Any]:
        """Cluster-wide defaults of the job configuration."""
        out: dict[str, Any] = {}
        for k, v in self.raw.items():
            if k.startswith(TASK_DEFAULT_PREFIXES):
                out[k] = int(v) if v.lstrip("-").isdigit() else v
        return out


_KEYS = {
    "jobmanager.rpc.address": "rpc_host",
    "jobmanager.rpc.port": "rpc_port",
    "rest.address": "rest_host",
    "rest.bind-address": "rest_host",
    "rest.port": "rest_port",
    "heartbeat.timeout": "heartbeat_timeout_ms",
    "slot.request.timeout": "slot_request_timeout_ms",
    "jobstore.max-capacity": "archive_capacity",
    "task.cancellation.timeout": "cancel_timeout_ms",
    "web.dir": "web_dir",
}


def build_config(values: dict[str, str], data_dir: str | None) -> JobManagerConfig:
    """The model from Flink keys (``values``) and the data directory."""
    fields: dict[str, Any] = {}
    for k, v in values.items():
        f = _KEYS.get(k)
        if f is not None:
            fields[f] = v
    if data_dir is None:
        raise ConfigError("--data-dir is required")
    try:
        return JobManagerConfig(data_dir=Path(data_dir), raw=dict(values), **fields)
    except ValidationError as e:
        err = e.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else "?"
        key = next((k for k, f in _KEYS.items() if f == field), field)
        raise ConfigError(f"{key}: {err['msg']} (got {values.get(key)!r})") from None
