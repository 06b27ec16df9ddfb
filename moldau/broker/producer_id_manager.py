"""ProducerIdManager: hands out producer ids for idempotent producers (InitProducerId).

Ids are unique across the cluster: each broker claims a block of ``BLOCK_SIZE`` consecutive
ids by a conditional write of ``/latest_producer_id_block`` (Kafka's ZooKeeper scheme), then
hands them out one by one. A block is never reused: a broker that restarts claims a new one,
and the ids it had left are skipped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from moldau.clients.metadata.client import MetadataClient
from moldau.clients.metadata.layout import LATEST_PRODUCER_ID_BLOCK, ProducerIdBlock
from moldau.clients.protocol import ErrorCode, MoldauError

log = logging.getLogger(__name__)

BLOCK_SIZE = 1000


class ProducerIdManager:
    def __init__(self, broker_id: int, client: Callable[[], MetadataClient]) -> None:
        self.broker_id = broker_id
        self._client = client
        self._next = 0
        self._end = -1  # inclusive end of the current block
        self._lock = asyncio.Lock()

    async def next_id(self) -> int:
        async with self._lock:
            if self._next > self._end:
                await self._claim_block()
            pid = self._next
            self._next += 1
            return pid

    async def _claim_block(self) -> None:
        client = self._client()
        for _ in range(20):
            try:
                data, stat = await client.get(LATEST_PRODUCER_ID_BLOCK)
            except MoldauError as e:
                if e.code != ErrorCode.NO_NODE:
                    raise
                block = ProducerIdBlock(self.broker_id, 0, BLOCK_SIZE - 1)
                try:
                    await client.create(LATEST_PRODUCER_ID_BLOCK, block.encode())
                except MoldauError as e2:
                    if e2.code != ErrorCode.NODE_EXISTS:
                        raise
                    continue
                self._take(block)
                return
            try:
                last = ProducerIdBlock.decode(data)
                start = last.block_end + 1
            except (ValueError, KeyError, TypeError) as e:
                raise MoldauError(ErrorCode.UNKNOWN_SERVER_ERROR,
                                  f"unreadable {LATEST_PRODUCER_ID_BLOCK}: {e}") from None
            block = ProducerIdBlock(self.broker_id, start, start + BLOCK_SIZE - 1)
            try:
                await client.set(LATEST_PRODUCER_ID_BLOCK, block.encode(), version=stat.version)
            except MoldauError as e:
                if e.code == ErrorCode.BAD_VERSION:
                    continue  # another broker claimed one meanwhile
                raise
            self._take(block)
            return
        raise MoldauError(ErrorCode.REQUEST_TIMED_OUT, "could not claim a producer id block")

    def _take(self, block: ProducerIdBlock) -> None:
        self._next, self._end = block.block_start, block.block_end
        log.info("claimed producer ids %d..%d", block.block_start, block.block_end)
