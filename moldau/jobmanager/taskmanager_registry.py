"""The :class:`TaskManagerRegistry`: the TaskManagers that registered, where to reach them,
and the JobManager's side of talking to them (``SUBMIT_TASKS``, ``CANCEL_TASKS``,
``READ_TM_LOG`` over one connection per TaskManager, opened on first use and again after
it dropped).

Invariant: a TaskManager is known by id with exactly one live *instance* (a process
start); a registration with a new instance replaces the old one, whose tasks are gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from moldau.clients.protocol import ErrorCode, MoldauError
from moldau.clients.protocol.messages import (
    CancelTasksRequest,
    ReadTmLogRequest,
    ReadTmLogResponse,
    SubmitTasksRequest,
    SubmitTasksResponse,
)
from moldau.clients.rpc import Connection

log = logging.getLogger(__name__)


@dataclass
class TaskManagerInfo:
    tm_id: str
    instance: str
    host: str
    port: int
    slots: list[dict[str, Any]]
    hardware: dict[str, Any]
    registered_at: float = field(default_factory=time.time)
    last_heartbeat: float = field(default_factory=time.time)
    conn: Connection | None = None
    conn_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def to_json(self, free_slots: int) -> dict[str, Any]:
        hw = {"cpuCores": 0, "physicalMemory": 0, "freeMemory": 0, "managedMemory": 0}
        hw.update(self.hardware)
        n = len(self.slots)
        return {
            "id": self.tm_id, "path": f"moldau://{self.host}:{self.port}",
            "dataPort": self.port, "jmxPort": -1,
            # Flink reports the time of the last heartbeat (epoch ms) under this name
            "timeSinceLastHeartbeat": int(self.last_heartbeat * 1000),
            "slotsNumber": n, "freeSlots": free_slots,
            "totalResource": {"cpuCores": float(hw["cpuCores"]), "taskHeapMemory": 0,
                              "taskOffHeapMemory": 0, "managedMemory": 0,
                              "networkMemory": 0, "extendedResources": {}},
            "freeResource": {"cpuCores": float(hw["cpuCores"]) * free_slots / max(1, n),
                             "taskHeapMemory": 0, "taskOffHeapMemory": 0,
                             "managedMemory": 0, "networkMemory": 0,
                             "extendedResources": {}},
            "hardware": hw,
            "memoryConfiguration": {},
            "slots": [{"index": s.get("index"), "dataHost": s.get("data_host"),
                       "dataPort": s.get("data_port"), "pid": s.get("pid")}
                      for s in self.slots],
        }


class TaskManagerRegistry:
    def __init__(self) -> None:
        self.tms: dict[str, TaskManagerInfo] = {}

    def get(self, tm_id: str) -> TaskManagerInfo | None:
        return self.tms.get(tm_id)

    def register(self, info: TaskManagerInfo) -> TaskManagerInfo | None:
        """Add or replace; returns the replaced info when the instance changed."""
        old = self.tms.get(info.tm_id)
        if old is not None and old.instance == info.instance:
            old.host, old.port, old.slots, old.hardware = (info.host, info.port, info.slots,
                                                           info.hardware)
            old.last_heartbeat = time.time()
            return None
        self.tms[info.tm_id] = info
        if old is not None:
            self._close(old)
        return old

    def remove(self, tm_id: str) -> TaskManagerInfo | None:
        info = self.tms.pop(tm_id, None)
        if info is not None:
            self._close(info)
        return info

    def _close(self, info: TaskManagerInfo) -> None:
        if info.conn is not None:
            conn, info.conn = info.conn, None
            with contextlib.suppress(RuntimeError):
                asyncio.get_running_loop().create_task(conn.close())

    async def close(self) -> None:
        for info in self.tms.values():
            if info.conn is not None:
                await info.conn.close()
                info.conn = None

    # calls to a TaskManager ---------------------------------------------------------------

    async def _conn(self, info: TaskManagerInfo) -> Connection:
        async with info.conn_lock:
            if info.conn is None or not info.conn.is_open:
                c = Connection(info.host, info.port, client_id="jobmanager")
                await c.connect(timeout=5.0)
                info.conn = c
            return info.conn

    async def submit_tasks(self, tm_id: str, req: SubmitTasksRequest) -> None:
        info = self.tms.get(tm_id)
        if info is None:
            raise MoldauError(ErrorCode.BROKER_NOT_AVAILABLE, f"TaskManager {tm_id} is gone")
        conn = await self._conn(info)
        resp: SubmitTasksResponse = await conn.request(req, timeout=30.0)
        if resp.error_code:
            raise MoldauError(resp.error_code, resp.error_message or "deployment refused")

    async def cancel_tasks(self, tm_id: str, job_id: str) -> bool:
        info = self.tms.get(tm_id)
        if info is None:
            return False
        try:
            conn = await self._conn(info)
            await conn.request(CancelTasksRequest(job_id=job_id), timeout=10.0)
            return True
        except (OSError, MoldauError, TimeoutError) as e:
            log.warning("cannot cancel job %s on TaskManager %s: %s", job_id, tm_id, e)
            return False

    async def read_log(self, tm_id: str, which: str, max_bytes: int) -> str | None:
        info = self.tms.get(tm_id)
        if info is None:
            return None
        conn = await self._conn(info)
        resp: ReadTmLogResponse = await conn.request(
            ReadTmLogRequest(which=which, max_bytes=max_bytes), timeout=10.0)
        if resp.error_code:
            return None
        return resp.text
