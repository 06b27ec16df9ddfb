"""The broker daemon: wires the log manager, the metadata listener, the controller, the
replica manager with its fetchers and the request handler together, and owns the start and
shutdown order.

Start: open the logs (recovery), listen, open the metadata session and register
``/brokers/ids/<id>`` with the real port, load topics (creating local logs, following the
leaders of the partitions it does not lead), start the ISR maintenance, campaign for the
controller, then report ready.

Shutdown (on the trigger): stop the replica fetchers; controlled shutdown (ask the
controller to move this broker's leaderships to other in-sync replicas and take it out of
the ISRs, and wait until this broker has seen it); stop accepting; answer parked consumer
fetches; drain in-flight requests for a grace period (followers keep fetching meanwhile, so
acks=all produces complete); stop the controller and the ISR maintenance; flush and close
every log; close the metadata session (the registration disappears at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from typing import Any

from moldau.broker.admin_manager import AdminManager
from moldau.broker.config import BrokerConfig
from moldau.broker.controller import Controller
from moldau.broker.handlers import BROKER_APIS, BrokerHandler
from moldau.broker.log import LogConfig, LogManager
from moldau.broker.metadata_cache import MetadataCache
from moldau.broker.metadata_listener import MetadataListener
from moldau.broker.producer_id_manager import ProducerIdManager
from moldau.broker.replica_fetcher import ReplicaFetcherManager
from moldau.broker.replica_manager import ReplicaManager
from moldau.clients.metadata.layout import BrokerInfo
from moldau.clients.protocol import ErrorCode, MoldauError
from moldau.clients.protocol.messages import ControlledShutdownRequest, ControlledShutdownResponse
from moldau.clients.rpc import Connection, RpcServer

log = logging.getLogger(__name__)

SHUTDOWN_GRACE = 3.0
CONTROLLED_SHUTDOWN_ATTEMPTS = 3
CONTROLLED_SHUTDOWN_WAIT = 5.0  # for this broker to see its leaderships gone
_WILDCARD = ("", "0.0.0.0", "::")


class BrokerServer:
    """One broker. No I/O until ``start()``."""

    def __init__(self, config: BrokerConfig) -> None:
        self.config = config
        # raises ValueError naming the key if a log.* default is bad
        self.default_log_config = LogConfig.from_mapping(config.topic_defaults())
        self.cache = MetadataCache()
        self.log_manager: LogManager | None = None
        self.replicas: ReplicaManager | None = None
        self.fetchers: ReplicaFetcherManager | None = None
        self.listener: MetadataListener | None = None
        self.controller: Controller | None = None
        self.rpc: RpcServer | None = None
        self.address: tuple[str, int] = ("", 0)

    async def start(self) -> tuple[str, int]:
        """Start serving; return the address clients should use."""
        cfg = self.config
        t0 = time.monotonic()
        self.log_manager = LogManager(
            cfg.log_dir_list, self.default_log_config, broker_id=cfg.broker_id,
            checkpoint_interval_ms=cfg.replica_high_watermark_checkpoint_interval_ms)
        await self.log_manager.start()
        replicas = self.replicas = ReplicaManager(
            cfg.broker_id, self.log_manager, self.cache, self.default_log_config,
            replica_lag_time_max_ms=cfg.replica_lag_time_max_ms)
        host, port = cfg.listener
        info_host, info_port = cfg.advertised_listener or (host, port)
        # handler and admin need the listener; the server starts before registration so
        # that the registered port is the real one when asked for port 0
        listener = MetadataListener(cfg.broker_id, cfg.zookeeper_connect,
                                    cfg.zookeeper_session_timeout_ms,
                                    BrokerInfo(cfg.broker_id, "", 0, cfg.broker_rack),
                                    self.cache, replicas,
                                    connect_timeout=cfg.metadata_connect_timeout)
        self.listener = listener
        self.fetchers = ReplicaFetcherManager(cfg.broker_id, cfg, self.cache, replicas)
        replicas.metadata = listener
        replicas.fetchers = self.fetchers
        self.controller = Controller(cfg.broker_id, cfg, self.cache, listener)
        listener.controller = self.controller
        producer_ids = ProducerIdManager(cfg.broker_id, lambda: listener.client)
        admin = AdminManager(cfg, self.cache, replicas, listener)
        handler = BrokerHandler(cfg, self.cache, replicas, admin, producer_ids, self.controller)
        self.rpc = RpcServer(handler, BROKER_APIS, max_frame_size=cfg.socket_request_max_bytes)
        _bound_host, bound_port = await self.rpc.start(host, port)
        if cfg.advertised_listener is None:
            info_port = bound_port
            if info_host in _WILDCARD:
                info_host = socket.gethostname()
        listener.info = BrokerInfo(cfg.broker_id, info_host, info_port, cfg.broker_rack)
        await listener.start()
        await replicas.start()
        await self.controller.start()
        self.address = (host if host not in _WILDCARD else info_host, bound_port)
        log.info("broker %d started in %.2fs: %d topics, %d partitions hosted", cfg.broker_id,
                 time.monotonic() - t0, len(self.cache.topics),
                 sum(len(p) for p in replicas.partitions.values()))
        return self.address

    async def serve(self, shutdown_trigger: asyncio.Event) -> None:
        """Run until ``shutdown_trigger`` is set, then stop in order."""
        await shutdown_trigger.wait()
        await self.stop()

    async def stop(self) -> None:
        t0 = time.monotonic()
        log.info("broker %d shutting down", self.config.broker_id)
        # first stop copying: a fetch arriving at a leader after the controller took this
        # broker out of its ISR would bring it back in
        if self.fetchers is not None:
            await self.fetchers.stop()
        if self.config.controlled_shutdown_enable:
            try:
                await self._controlled_shutdown()
            except Exception:
                log.exception("controlled shutdown failed; stopping anyway")
        if self.rpc is not None:
            self.rpc.stop_accepting()
        if self.replicas is not None:
            self.replicas.wake_all()
        if self.rpc is not None:
            await self.rpc.drain(SHUTDOWN_GRACE)
            log.info("connections closed")
        if self.controller is not None:
            await self.controller.stop()
        if self.replicas is not None:
            await self.replicas.stop()
        if self.log_manager is not None:
            try:
                await self.log_manager.stop()
                log.info("logs flushed and closed")
            except Exception:
                log.exception("closing the logs failed")
        if self.listener is not None:
            await self.listener.stop()
            log.info("metadata session closed")
        log.info("broker %d stopped in %.2fs", self.config.broker_id, time.monotonic() - t0)

    async def _controlled_shutdown(self) -> None:
        """Ask the controller to move this broker's leaderships (and ISR memberships) to
        the other in-sync replicas, then wait until this broker has applied that."""
        replicas, listener = self.replicas, self.listener
        if replicas is None or listener is None or self.controller is None:
            return
        if not any(len(p.replicas) > 1 for p in replicas.all_partitions()):
            return  # nothing replicated: nothing to hand over
        me = self.config.broker_id
        remaining: set[tuple[str, int]] | None = None
        for attempt in range(CONTROLLED_SHUTDOWN_ATTEMPTS):
            code, left = await self._ask_controller(me, listener.broker_epoch)
            if code == ErrorCode.NONE:
                remaining = {(str(t), int(p)) for t, p in left}
                break
            log.warning("controlled shutdown attempt %d: %s", attempt + 1,
                        ErrorCode.of(code).name)
            await asyncio.sleep(0.5)
        if remaining is None:
            return
        log.info("controlled shutdown: %d partition(s) stay led here", len(remaining))

        def handed_over() -> bool:
            return not any(p.is_leader and (p.topic, p.index) not in remaining
                           for p in replicas.all_partitions())

        if not await self.cache.wait_until(handed_over, CONTROLLED_SHUTDOWN_WAIT):
            log.warning("controlled shutdown: some leaderships did not move in time")

    async def _ask_controller(self, me: int, epoch: int) -> tuple[int, list[list[Any]]]:
        assert self.controller is not None
        controller = self.cache.controller_id
        if controller == me:
            return await self.controller.controlled_shutdown(me)
        broker = self.cache.brokers.get(controller)
        if broker is None:
            return int(ErrorCode.NOT_CONTROLLER), []
        conn = Connection(broker.host, broker.port, client_id=f"broker-{me}-shutdown")
        try:
            await conn.connect(timeout=5.0)
            resp = await conn.request(ControlledShutdownRequest(me, epoch), timeout=10.0)
            assert isinstance(resp, ControlledShutdownResponse)
            return int(resp.error_code), list(resp.remaining)
        except (OSError, TimeoutError, MoldauError) as e:
            log.warning("controlled shutdown: asking controller %d failed: %s", controller, e)
            return int(ErrorCode.NETWORK_EXCEPTION), []
        finally:
            with contextlib.suppress(Exception):
                await conn.close()
