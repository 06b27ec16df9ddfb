"""The broker daemon: wires the log manager, the metadata listener, the replica manager and
the request handler together, and owns the start and shutdown order.

Start: open the logs (recovery), listen, open the metadata session and register
``/brokers/ids/<id>`` with the real port, load topics (creating local logs), then report
ready. Shutdown (on the trigger): stop accepting, answer parked fetches, drain in-flight
requests for a grace period, flush and close every log, close the metadata session (the
registration disappears at once).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time

from moldau.broker.admin_manager import AdminManager
from moldau.broker.config import BrokerConfig
from moldau.broker.handlers import BROKER_APIS, BrokerHandler
from moldau.broker.log import LogConfig, LogManager
from moldau.broker.metadata_cache import MetadataCache
from moldau.broker.metadata_listener import MetadataListener
from moldau.broker.replica_manager import ReplicaManager
from moldau.clients.metadata.layout import BrokerInfo
from moldau.clients.rpc import RpcServer

log = logging.getLogger(__name__)

SHUTDOWN_GRACE = 3.0
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
        self.listener: MetadataListener | None = None
        self.rpc: RpcServer | None = None
        self.address: tuple[str, int] = ("", 0)

    async def start(self) -> tuple[str, int]:
        """Start serving; return the address clients should use."""
        cfg = self.config
        t0 = time.monotonic()
        self.log_manager = LogManager(cfg.log_dir_list, self.default_log_config,
                                      broker_id=cfg.broker_id)
        await self.log_manager.start()
        self.replicas = ReplicaManager(cfg.broker_id, self.log_manager, self.cache,
                                       self.default_log_config)
        host, port = cfg.listener
        info_host, info_port = cfg.advertised_listener or (host, port)
        # handler and admin need the listener; the server starts before registration so
        # that the registered port is the real one when asked for port 0
        listener = MetadataListener(cfg.broker_id, cfg.zookeeper_connect,
                                    cfg.zookeeper_session_timeout_ms,
                                    BrokerInfo(cfg.broker_id, "", 0, cfg.broker_rack),
                                    self.cache, self.replicas,
                                    connect_timeout=cfg.metadata_connect_timeout)
        self.listener = listener
        admin = AdminManager(cfg, self.cache, self.replicas, listener)
        handler = BrokerHandler(cfg, self.cache, self.replicas, admin)
        self.rpc = RpcServer(handler, BROKER_APIS, max_frame_size=cfg.socket_request_max_bytes)
        _bound_host, bound_port = await self.rpc.start(host, port)
        if cfg.advertised_listener is None:
            info_port = bound_port
            if info_host in _WILDCARD:
                info_host = socket.gethostname()
        listener.info = BrokerInfo(cfg.broker_id, info_host, info_port, cfg.broker_rack)
        await listener.start()
        self.address = (host if host not in _WILDCARD else info_host, bound_port)
        log.info("broker %d started in %.2fs: %d topics, %d partitions hosted", cfg.broker_id,
                 time.monotonic() - t0, len(self.cache.topics),
                 sum(len(p) for p in self.replicas.partitions.values()))
        return self.address

    async def serve(self, shutdown_trigger: asyncio.Event) -> None:
        """Run until ``shutdown_trigger`` is set, then stop in order."""
        await shutdown_trigger.wait()
        await self.stop()

    async def stop(self) -> None:
        t0 = time.monotonic()
        log.info("broker %d shutting down", self.config.broker_id)
        if self.rpc is not None:
            self.rpc.stop_accepting()
        if self.replicas is not None:
            self.replicas.wake_all()
        if self.rpc is not None:
            await self.rpc.drain(SHUTDOWN_GRACE)
            log.info("connections closed")
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
