"""The admin client: create, list, describe, alter and delete topics; describe the cluster.

Topic changes go to the controller when the metadata names one (any broker otherwise, and
again elsewhere on NOT_CONTROLLER). Errors come back as ``MoldauError`` carrying the
broker's code and message; the ``*_results`` variants return one outcome per topic instead
of raising for the first failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from moldau.clients.cluster import ClusterClient, parse_metadata
from moldau.clients.protocol import ErrorCode, Message, MoldauError
from moldau.clients.protocol.messages import (
    AlterConfigsRequest,
    AlterConfigsResponse,
    CreatePartitionsRequest,
    CreatePartitionsResponse,
    CreateTopicsRequest,
    CreateTopicsResponse,
    DeleteTopicsRequest,
    DeleteTopicsResponse,
    DescribeConfigsRequest,
    DescribeConfigsResponse,
    MetadataRequest,
    MetadataResponse,
)
from moldau.clients.types import BrokerMetadata, NewTopic, TopicDescription

_CONTROLLER_ERRORS = (ErrorCode.NOT_CONTROLLER,)


def _result_error(r: Mapping[str, Any]) -> MoldauError | None:
    code = int(r.get("error_code", 0) or 0)
    if not code:
        return None
    return MoldauError(code, str(r.get("error_message") or ""))


def _first_error(results: Mapping[str, MoldauError | None]) -> None:
    for name, err in results.items():
        if err is not None:
            raise MoldauError(err.code, f"{name}: {err.message}" if err.message else name)


class Admin:
    """Asynchronous admin client. ``await start()`` (or ``async with``) first."""

    def __init__(
        self,
        bootstrap_servers: str | Sequence[str],
        *,
        client_id: str = "moldau-admin",
        request_timeout_ms: int = 30000,
        retry_backoff_ms: int = 100,
        metadata_max_age_ms: int = 300000,
        ssl: Any = None,
    ) -> None:
        self._request_timeout = request_timeout_ms / 1000
        self._retry_backoff = retry_backoff_ms / 1000
        self._cluster = ClusterClient(
            bootstrap_servers, client_id=client_id, request_timeout_ms=request_timeout_ms,
            metadata_max_age_ms=metadata_max_age_ms, retry_backoff_ms=retry_backoff_ms,
            ssl=ssl)
        self._started = False

    @property
    def cluster(self) -> ClusterClient:
        return self._cluster

    async def start(self) -> None:
        await self._cluster.start()
        self._started = True

    async def stop(self) -> None:
        if self._started:
            self._started = False
            await self._cluster.stop()

    close = stop

    async def __aenter__(self) -> Admin:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ plumbing

    async def _metadata(self, topics: list[str] | None) -> MetadataResponse:
        resp = await self._cluster.request_any(MetadataRequest(topics=topics))
        assert isinstance(resp, MetadataResponse)
        self._cluster.controller_id = resp.controller_id
        return resp

    async def _to_controller(self, msg: Message, timeout: float) -> Any:
        """Send to the controller (any broker if none is known); retry elsewhere while the
        broker says it is not the controller or cannot be reached."""
        if not self._started:
            raise RuntimeError("admin client not started: await start() first")
        deadline = time.monotonic() + timeout
        while True:
            node = self._cluster.controller_id
            try:
                if node >= 0 and node in self._cluster.brokers:
                    return await self._cluster.request_to(node, msg, timeout=timeout + 5)
                return await self._cluster.request_any(msg, timeout=timeout + 5)
            except MoldauError as e:
                if not e.retriable or time.monotonic() >= deadline:
                    raise
            await asyncio.sleep(self._retry_backoff)
            with contextlib.suppress(MoldauError):
                await self._cluster.refresh(())

    def _check_controller(self, results: Iterable[Mapping[str, Any]]) -> bool:
        """True when the answer says the broker was not the controller (worth a retry)."""
        return any(int(r.get("error_code", 0) or 0) in _CONTROLLER_ERRORS for r in results)

    # ------------------------------------------------------------------ topics

    async def create_topics_results(
        self, topics: Sequence[NewTopic], validate_only: bool = False, timeout_ms: int = 30000
    ) -> dict[str, MoldauError | None]:
        """Create ``topics``; return each topic's error (None for success). Unless
        ``validate_only``, waits (within ``timeout_ms``) until the new topics show up with
        leaders in the metadata, so producing to them right away works."""
        specs = []
        for t in topics:
            spec: dict[str, Any] = {
                "name": t.name,
                "num_partitions": t.num_partitions,
                "replication_factor": t.replication_factor,
                "assignments": ({int(p): list(r) for p, r in t.replica_assignment.items()}
                                if t.replica_assignment is not None else None),
                "configs": {str(k): str(v) for k, v in t.configs.items()},
            }
            specs.append(spec)
        req = CreateTopicsRequest(topics=specs, timeout_ms=timeout_ms,
                                  validate_only=validate_only)
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            resp = await self._to_controller(req, timeout_ms / 1000)
            assert isinstance(resp, CreateTopicsResponse)
            if not self._check_controller(resp.topics) or time.monotonic() >= deadline:
                break
            await asyncio.sleep(self._retry_backoff)
            with contextlib.suppress(MoldauError):
                await self._cluster.refresh(())
        results: dict[str, MoldauError | None] = {t.name: None for t in topics}
        for r in resp.topics:
            results[r["name"]] = _result_error(r)
        if not validate_only:
            created = [n for n, e in results.items() if e is None]
            if created:
                await self._wait_for_topics(created, deadline)
        return results

    async def create_topics(self, topics: Sequence[NewTopic], validate_only: bool = False,
                            timeout_ms: int = 30000) -> None:
        """Create ``topics``; raise MoldauError (the broker's code and message) for the
        first one that failed."""
        _first_error(await self.create_topics_results(topics, validate_only, timeout_ms))

    async def _wait_for_topics(self, names: list[str], deadline: float) -> None:
        while True:
            try:
                resp = await self._metadata(names)
                _, found, _ = parse_metadata(resp)
                if all(n in found and found[n].partitions
                       and len(found[n].available) == len(found[n].partitions) for n in names):
                    return
            except MoldauError:
                pass
            if time.monotonic() >= deadline:
                return
            await asyncio.sleep(0.02)

    async def delete_topics_results(self, names: Iterable[str], timeout_ms: int = 30000
                                    ) -> dict[str, MoldauError | None]:
        names = list(names)
        req = DeleteTopicsRequest(topics=names, timeout_ms=timeout_ms)
        resp = await self._to_controller(req, timeout_ms / 1000)
        assert isinstance(resp, DeleteTopicsResponse)
        results: dict[str, MoldauError | None] = {n: None for n in names}
        for r in resp.topics:
            results[r["name"]] = _result_error(r)
        return results

    async def delete_topics(self, names: Iterable[str], timeout_ms: int = 30000) -> None:
        _first_error(await self.delete_topics_results(names, timeout_ms))

    async def list_topics(self, include_internal: bool = False) -> list[str]:
        """Names of every topic, sorted (internal ones like ``__consumer_offsets`` only on
        request)."""
        resp = await self._metadata(None)
        return sorted(t["name"] for t in resp.topics
                      if not t.get("error_code") and (include_internal
                                                      or not t.get("internal", False)))

    async def describe_topics(self, names: Iterable[str] | None = None
                              ) -> list[TopicDescription]:
        """Partitions, leaders, replicas and ISRs of ``names`` (every topic if None), in the
        order asked (sorted for None); UNKNOWN_TOPIC_OR_PARTITION for a missing one."""
        wanted = None if names is None else list(names)
        resp = await self._metadata(wanted)
        _, found, errors = parse_metadata(resp)
        if wanted is None:
            return [found[n].describe() for n in sorted(found)]
        out = []
        for n in wanted:
            if n not in found:
                raise MoldauError(errors.get(n, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION),
                                  f"topic {n!r}")
            out.append(found[n].describe())
        return out

    async def describe_configs(self, topic: str, resource_type: str = "topic"
                               ) -> dict[str, str]:
        """The configuration of a topic (or, with ``resource_type="broker"``, a broker)."""
        req = DescribeConfigsRequest(resources=[{"type": resource_type, "name": topic}])
        resp = await self._to_controller_or_any(req)
        assert isinstance(resp, DescribeConfigsResponse)
        for r in resp.results:
            err = _result_error(r)
            if err is not None:
                raise MoldauError(err.code, f"{topic}: {err.message}" if err.message else topic)
            return {str(k): str(v) for k, v in (r.get("configs") or {}).items()}
        raise MoldauError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"topic {topic!r}")

    async def alter_configs(self, topic: str, set: Mapping[str, Any] | None = None,
                            delete: Iterable[str] = ()) -> None:
        """Set and remove topic configuration keys (incrementally: others stay)."""
        req = AlterConfigsRequest(resources=[{
            "type": "topic", "name": topic,
            "set": {str(k): str(v) for k, v in (set or {}).items()},
            "delete": [str(k) for k in delete]}])
        resp = await self._to_controller(req, self._request_timeout)
        assert isinstance(resp, AlterConfigsResponse)
        for r in resp.results:
            err = _result_error(r)
            if err is not None:
                raise MoldauError(err.code, f"{topic}: {err.message}" if err.message else topic)

    async def create_partitions(self, topic: str, total_count: int,
                                validate_only: bool = False, timeout_ms: int = 30000) -> None:
        """Grow ``topic`` to ``total_count`` partitions."""
        req = CreatePartitionsRequest(topics=[{"name": topic, "count": total_count}],
                                      timeout_ms=timeout_ms, validate_only=validate_only)
        resp = await self._to_controller(req, timeout_ms / 1000)
        assert isinstance(resp, CreatePartitionsResponse)
        for r in resp.topics:
            err = _result_error(r)
            if err is not None:
                raise MoldauError(err.code, f"{topic}: {err.message}" if err.message else topic)
        if not validate_only:
            await self._wait_for_partitions(topic, total_count,
                                            time.monotonic() + timeout_ms / 1000)

    async def _wait_for_partitions(self, topic: str, count: int, deadline: float) -> None:
        while time.monotonic() < deadline:
            with contextlib.suppress(MoldauError):
                _, found, _ = parse_metadata(await self._metadata([topic]))
                t = found.get(topic)
                if t is not None and len(t.partitions) >= count:
                    return
            await asyncio.sleep(0.02)

    async def describe_cluster(self) -> tuple[list[BrokerMetadata], int, str]:
        """``(brokers sorted by id, controller id or -1, cluster id)``."""
        resp = await self._metadata([])
        brokers, _, _ = parse_metadata(resp)
        return [brokers[b] for b in sorted(brokers)], resp.controller_id, resp.cluster_id

    async def _to_controller_or_any(self, msg: Message) -> Any:
        if not self._started:
            raise RuntimeError("admin client not started: await start() first")
        return await self._cluster.request_any(msg)
