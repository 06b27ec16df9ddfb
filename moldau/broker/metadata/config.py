"""Configuration of a metadata node: command-line flags over a ZooKeeper-style file.

The file holds ``key=value`` lines (``#`` starts a comment). ZooKeeper's names are read
(``clientPort``, ``clientPortAddress``, ``dataDir``, ``tickTime``, ``minSessionTimeout``,
``maxSessionTimeout``, ``snapCount``) as well as the flags' own names (``port``,
``data_dir``, ...). As in ZooKeeper, a file that sets ``tickTime`` but no session timeout
bounds gets 2 and 20 ticks. Keys a single node has no use for (``initLimit``, ``server.N``,
...) are ignored. Flags win over the file.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

log = logging.getLogger(__name__)

_ZK_KEYS = {
    "clientport": "port",
    "clientportaddress": "host",
    "datadir": "data_dir",
    "ticktime": "tick_ms",
    "minsessiontimeout": "min_session_timeout_ms",
    "maxsessiontimeout": "max_session_timeout_ms",
    "snapcount": "snapshot_every",
    "loglevel": "log_level",
}


class MetadataConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(2181, ge=0, le=65535)
    data_dir: Path
    tick_ms: int = Field(200, gt=0)
    min_session_timeout_ms: int = Field(1000, gt=0)
    max_session_timeout_ms: int = Field(60000, gt=0)
    snapshot_every: int = Field(10000, gt=0)
    log_level: str = "INFO"
    max_frame_size: int = Field(32 * 1024 * 1024, gt=1024)

    @model_validator(mode="after")
    def _bounds(self) -> MetadataConfig:
        if self.min_session_timeout_ms > self.max_session_timeout_ms:
            raise ValueError("min session timeout is above the max session timeout")
        return self


def read_config_file(path: Path) -> dict[str, Any]:
    """The settings a ZooKeeper-style file gives, under MetadataConfig's field names."""
    out: dict[str, Any] = {}
    fields = set(MetadataConfig.model_fields)
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"{path}:{n}: expected key=value, got {raw!r}")
        key, value = key.strip(), value.strip()
        name = _ZK_KEYS.get(key.lower(), key.replace("-", "_"))
        if name in fields:
            out[name] = value
        else:
            log.debug("%s:%d: ignoring %s", path, n, key)
    if "tick_ms" in out:
        tick = int(out["tick_ms"])
        out.setdefault("min_session_timeout_ms", 2 * tick)
        out.setdefault("max_session_timeout_ms", 20 * tick)
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="moldau-metadata",
                                description="The moldau metadata service (ZooKeeper-style).")
    p.add_argument("--config", type=Path, help="a ZooKeeper-style key=value file")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to listen on, 0 for any (default 2181)")
    p.add_argument("--data-dir", type=Path, help="where the txn log and snapshots live")
    p.add_argument("--tick-ms", type=int, help="session expiry check interval (default 200)")
    p.add_argument("--min-session-timeout-ms", type=int, help="default 1000")
    p.add_argument("--max-session-timeout-ms", type=int, help="default 60000")
    p.add_argument("--snapshot-every", type=int,
                   help="snapshot after this many transactions (default 10000)")
    p.add_argument("--log-level", help="default INFO")
    return p


def load_config(argv: Sequence[str] | None = None) -> MetadataConfig:
    """Flags over the ``--config`` file over the defaults; SystemExit on a bad setting."""
    p = parser()
    args = p.parse_args(argv)
    values: dict[str, Any] = {}
    try:
        if args.config is not None:
            values.update(read_config_file(args.config))
        values.update({k: v for k, v in vars(args).items()
                       if v is not None and k != "config"})
        if "data_dir" not in values:
            p.error("--data-dir (or dataDir in --config) is required")
        return MetadataConfig(**values)
    except (OSError, ValueError) as e:
        p.error(str(e))
