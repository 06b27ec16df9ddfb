"""Configuration of a metadata node: command-line flags over a ZooKeeper-style file.

The file holds ``key=value`` lines (``#`` starts a comment). ZooKeeper's names are read
(``clientPort``, ``clientPortAddress``, ``dataDir``, ``tickTime``, ``minSessionTimeout``,
``maxSessionTimeout``, ``snapCount``) as well as the flags' own names (``port``,
``data_dir``, ...). As in ZooKeeper, a file that sets ``tickTime`` but no session timeout
bounds gets 2 and 20 ticks. Flags win over the file.

A quorum: ``--id N --peers 1=H1:2888,2=H2:2888,3=H3:2888`` (every member, this one included,
at the address its peer port listens on), or ZooKeeper's ``server.N=host:2888[:3888]`` lines
with the id in ``<dataDir>/myid``. Without peers (or with a single ``server.N`` line) the node
runs alone, as before. Keys no one uses (``initLimit``, ...) are ignored.
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
    # the quorum: this node's id and every member's peer address ("" runs a single node)
    id: int = Field(0, ge=0)
    peers: str = ""
    election_timeout_ms: int = Field(1000, gt=0)
    heartbeat_ms: int = Field(100, gt=0)
    # how long a write or sync waits for the quorum before it fails
    request_timeout_ms: int = Field(10000, gt=0)

    @model_validator(mode="after")
    def _bounds(self) -> MetadataConfig:
        if self.min_session_timeout_ms > self.max_session_timeout_ms:
            raise ValueError("min session timeout is above the max session timeout")
        peers = self.peer_map()
        if peers and self.id not in peers:
            raise ValueError(f"--id {self.id} is not among the peers {sorted(peers)}")
        if peers and self.heartbeat_ms * 2 > self.election_timeout_ms:
            raise ValueError("the heartbeat must be at most half the election timeout")
        return self

    def peer_map(self) -> dict[int, tuple[str, int]]:
        """``{id: (host, port)}`` of the quorum's members; empty for a single node."""
        return parse_peers(self.peers)

    @property
    def quorum(self) -> bool:
        return bool(self.peers)


def parse_peers(spec: str) -> dict[int, tuple[str, int]]:
    """``"1=h1:2888,2=h2:2888"`` -> ``{1: ("h1", 2888), 2: ("h2", 2888)}``."""
    out: dict[int, tuple[str, int]] = {}
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        sid, sep, addr = part.partition("=")
        host, colon, port = addr.strip().rpartition(":")
        if not sep or not colon or not sid.strip().isdigit() or not port.isdigit():
            raise ValueError(f"bad peer {part!r}: expected ID=HOST:PORT")
        if int(sid) in out:
            raise ValueError(f"peer id {sid} given twice")
        out[int(sid)] = (host.strip("[]") or "127.0.0.1", int(port))
    return out


def read_config_file(path: Path) -> dict[str, Any]:
    """The settings a ZooKeeper-style file gives, under MetadataConfig's field names."""
    out: dict[str, Any] = {}
    fields = set(MetadataConfig.model_fields)
    servers: list[str] = []
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"{path}:{n}: expected key=value, got {raw!r}")
        key, value = key.strip(), value.strip()
        if key.lower().startswith("server.") and key[7:].isdigit():
            # server.N=host:peerPort[:electionPort][;clientPort]: one port serves the quorum
            hostports = value.split(";", 1)[0].split(":")
            if len(hostports) < 2:
                raise ValueError(f"{path}:{n}: expected server.N=host:port, got {raw!r}")
            servers.append(f"{key[7:]}={hostports[0]}:{hostports[1]}")
            continue
        name = _ZK_KEYS.get(key.lower(), key.replace("-", "_"))
        if name in fields:
            out[name] = value
        else:
            log.debug("%s:%d: ignoring %s", path, n, key)
    if "tick_ms" in out:
        tick = int(out["tick_ms"])
        out.setdefault("min_session_timeout_ms", 2 * tick)
        out.setdefault("max_session_timeout_ms", 20 * tick)
    if len(servers) > 1:  # a lone server.N line is ZooKeeper's standalone mode
        out.setdefault("peers", ",".join(servers))
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
    p.add_argument("--id", type=int, help="this node's id in --peers (default: <data-dir>/myid)")
    p.add_argument("--peers", help="the quorum: ID=HOST:PORT,... of every member's peer port "
                   "(absent: run a single node)")
    p.add_argument("--election-timeout-ms", type=int,
                   help="quorum: a follower that hears no leader for this long (randomized up "
                   "to twice it) starts an election (default 1000)")
    p.add_argument("--heartbeat-ms", type=int, help="quorum: leader heartbeat (default 100)")
    p.add_argument("--request-timeout-ms", type=int,
                   help="quorum: how long a write waits for a majority (default 10000)")
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
        if values.get("peers") and "id" not in values:
            myid = Path(values["data_dir"]) / "myid"
            if not myid.exists():
                p.error("a quorum member needs --id (or its id in <data-dir>/myid)")
            values["id"] = int(myid.read_text().strip())
        return MetadataConfig(**values)
    except (OSError, ValueError) as e:
        p.error(str(e))
