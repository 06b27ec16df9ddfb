"""The result partitions of one slot process, by ``(job id, execution id, edge index)``.

A consumer may ask for a partition before its producer was deployed (subtasks of a job
are deployed to many slots at once): ``lookup`` waits for the registration, up to a
timeout.
"""

from __future__ import annotations

import asyncio

from moldau.taskmanager.network.result_partition import ResultPartition

PartitionKey = tuple[str, str, int]


class PartitionNotFound(LookupError):
    pass


class PartitionManager:
    def __init__(self) -> None:
        self.partitions: dict[PartitionKey, ResultPartition] = {}
        self._waiters: dict[PartitionKey, list[asyncio.Future[ResultPartition]]] = {}
        self._gone: set[PartitionKey] = set()

    def register(self, partition: ResultPartition) -> None:
        key = (partition.job_id, partition.execution_id, partition.edge_index)
        self.partitions[key] = partition
        for w in self._waiters.pop(key, []):
            if not w.done():
                w.set_result(partition)

    def unregister(self, partition: ResultPartition) -> None:
        key = (partition.job_id, partition.execution_id, partition.edge_index)
        if self.partitions.pop(key, None) is not None:
            self._gone.add(key)

    async def lookup(self, key: PartitionKey, timeout: float) -> ResultPartition:
        p = self.partitions.get(key)
        if p is not None:
            return p
        if key in self._gone:
            raise PartitionNotFound(f"the partition {key[1][:8]}/{key[2]} is no longer "
                                    "available (its subtask ended)")
        fut: asyncio.Future[ResultPartition] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(key, []).append(fut)
        try:
            async with asyncio.timeout(timeout):
                return await fut
        except TimeoutError:
            raise PartitionNotFound(f"the partition {key[1][:8]}/{key[2]} of job "
                                    f"{key[0]} was not deployed here within {timeout:.0f} s"
                                    ) from None
        finally:
            ws = self._waiters.get(key)
            if ws is not None and fut in ws:
                ws.remove(fut)
                if not ws:
                    del self._waiters[key]
