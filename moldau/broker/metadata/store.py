"""The durable metadata database: the tree, its write-ahead log and its snapshots (ZooKeeper's
ZKDatabase).

Invariant: after ``start()`` the tree equals the newest valid snapshot with every later logged
transaction replayed, in zxid order (in a quorum, ``start(replay=False)`` replays nothing: a
logged entry may not be committed, so the later entries wait in ``unapplied`` until the
leader says they are). Every ``snapshot_every`` applied transactions the tree is
snapshotted (in the background) and the log rolled to a new file; then only the two newest
snapshots are kept, and the log files that only the deleted ones needed are removed. One
process at a time owns a data directory (an exclusive lock on ``<data_dir>/.lock``).
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
from collections.abc import Callable
from pathlib import Path

from moldau.broker.metadata import snapshot
from moldau.broker.metadata.tree import ApplyResult, DataTree, Txn
from moldau.broker.metadata.txnlog import TxnLog

log = logging.getLogger(__name__)

KEEP_SNAPSHOTS = 2


class MetadataStore:
    """No I/O until ``await start()``."""

    def __init__(self, data_dir: Path, snapshot_every: int = 10000) -> None:
        self.data_dir = data_dir
        self.snapshot_every = max(1, snapshot_every)
        self.tree = DataTree()
        self.log = TxnLog(data_dir)
        self._since_snapshot = 0
        self._snapshot_task: asyncio.Task[None] | None = None
        self.snapshots_taken = 0
        self._lock_fd = -1
        self.unapplied: list[Txn] = []
        # called with the zxid of each snapshot once it is durable
        self.on_snapshot: Callable[[int], None] | None = None

    async def start(self, replay: bool = True) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.data_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            self._lock_fd = -1
            raise RuntimeError(f"data directory {self.data_dir} is in use by another "
                               "process") from None
        loaded = await asyncio.to_thread(snapshot.load_newest, self.data_dir)
        if loaded is not None:
            zxid, image = loaded
            self.tree = DataTree.restore(image)
            if self.tree.last_zxid != zxid:
                raise RuntimeError(f"snapshot {zxid:#x} holds zxid {self.tree.last_zxid:#x}")
        after = self.tree.last_zxid
        txns = await asyncio.to_thread(self.log.recover, after)
        if replay:
            for txn in txns:
                self.tree.apply(txn)
            self._since_snapshot = len(txns)
        else:
            self.unapplied = txns
        log.info("loaded %s, %s %d logged transactions: %d nodes, %d sessions, "
                 "last zxid %#x", f"snapshot {after:#x}" if loaded else "no snapshot",
                 "replayed" if replay else "kept unapplied", len(txns), len(self.tree),
                 len(self.tree.sessions), self.tree.last_zxid)

    @property
    def last_zxid(self) -> int:
        """The zxid of the last logged transaction (applied or not)."""
        return self.log.last_zxid

    def append(self, txn: Txn) -> int:
        return self.log.append(txn)

    async def flush(self) -> int:
        return await self.log.flush()

    def apply(self, txn: Txn) -> ApplyResult:
        """Apply a durable transaction; start a snapshot when one is due."""
        result = self.tree.apply(txn)
        self._since_snapshot += 1
        if self._since_snapshot >= self.snapshot_every and (
                self._snapshot_task is None or self._snapshot_task.done()):
            self._start_snapshot()
        return result

    def _start_snapshot(self) -> None:
        if self._snapshot_task is not None and self._snapshot_task.done():
            self._snapshot_task.result()  # a failed snapshot write is fatal, as a log write
        self._since_snapshot = 0
        # the image is taken now, between two applies; the file is written off the loop
        image = self.tree.snapshot()
        zxid = self.tree.last_zxid
        self.log.roll()
        self._snapshot_task = asyncio.get_running_loop().create_task(self._write(zxid, image))

    async def _write(self, zxid: int, image: dict[str, object]) -> None:
        path = await asyncio.to_thread(snapshot.write_snapshot, self.data_dir, zxid, image)
        oldest = await asyncio.to_thread(snapshot.purge_snapshots, self.data_dir, KEEP_SNAPSHOTS)
        removed = self.log.purge(oldest)
        self.snapshots_taken += 1
        if self.on_snapshot is not None:
            self.on_snapshot(zxid)
        log.info("snapshot %s written (%d nodes); removed %d old log files", path.name,
                 len(image["nodes"]) if isinstance(image["nodes"], list) else -1, len(removed))

    def newest_snapshot(self) -> tuple[int, bytes] | None:
        """Blocking: ``(zxid, file bytes)`` of the newest snapshot on disk."""
        for zxid, path in reversed(snapshot.list_snapshots(self.data_dir)):
            try:
                return zxid, path.read_bytes()
            except FileNotFoundError:
                continue  # purged meanwhile
        return None

    def install_files(self, data: bytes, tree: DataTree) -> None:
        """Blocking: make a leader's snapshot (file bytes ``data``, decoded as ``tree``) this
        node's durable state: write it, and drop the whole log, whose entries it supersedes
        (the log reset is durable after the next flush). ``swap_tree`` then puts the tree
        in place."""
        snapshot.write_snapshot_bytes(self.data_dir, tree.last_zxid, data)
        self.log.reset(tree.last_zxid)
        snapshot.purge_snapshots(self.data_dir, KEEP_SNAPSHOTS)
        self.snapshots_taken += 1

    def swap_tree(self, tree: DataTree) -> DataTree:
        """Replace the tree (after ``install_files``); returns the old one."""
        old, self.tree = self.tree, tree
        self._since_snapshot = 0
        return old

    async def close(self) -> None:
        """Wait for a snapshot in progress, make the log durable, close its files."""
        if self._snapshot_task is not None:
            try:
                await self._snapshot_task
            except Exception:
                log.exception("snapshot write failed")
        await self.log.close()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = -1
