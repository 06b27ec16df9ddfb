"""One-shot watches, per connection, fired as ZooKeeper fires them.

Data watches are left by get_data (on an existing node) and exists (whether or not the node
exists); child watches by get_children (on an existing node). A transaction's events trigger
them so:

    NODE_CREATED, NODE_DATA_CHANGED   data watches on the path
    NODE_DELETED                      data and child watches on the path
    NODE_CHILDREN_CHANGED             child watches on the path

Invariant: a watch fires at most once, and a watcher gets at most one push per event even if
it holds both a data and a child watch on the path. Watches die with their connection.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from moldau.clients.protocol import Message
from moldau.clients.protocol.messages import MdWatchEvent, WatchEventType


class Watcher(Protocol):
    def push(self, msg: Message) -> None: ...


_DATA_EVENTS = (WatchEventType.NODE_CREATED, WatchEventType.NODE_DATA_CHANGED,
                WatchEventType.NODE_DELETED)
_CHILD_EVENTS = (WatchEventType.NODE_CHILDREN_CHANGED, WatchEventType.NODE_DELETED)


class WatchManager:
    def __init__(self) -> None:
        self._data: dict[str, dict[Watcher, None]] = {}
        self._child: dict[str, dict[Watcher, None]] = {}
        self._by_watcher: dict[Watcher, set[tuple[bool, str]]] = {}

    def add_data_watch(self, path: str, watcher: Watcher) -> None:
        self._data.setdefault(path, {})[watcher] = None
        self._by_watcher.setdefault(watcher, set()).add((False, path))

    def add_child_watch(self, path: str, watcher: Watcher) -> None:
        self._child.setdefault(path, {})[watcher] = None
        self._by_watcher.setdefault(watcher, set()).add((True, path))

    def remove_watcher(self, watcher: Watcher) -> None:
        for is_child, path in self._by_watcher.pop(watcher, ()):
            table = self._child if is_child else self._data
            ws = table.get(path)
            if ws is not None:
                ws.pop(watcher, None)
                if not ws:
                    del table[path]

    def count(self) -> int:
        return sum(len(w) for w in self._data.values()) + sum(
            len(w) for w in self._child.values())

    def trigger(self, events: Iterable[tuple[WatchEventType, str]]) -> int:
        """Fire and forget the watches ``events`` trigger; returns the number of pushes."""
        pushed = 0
        for etype, path in events:
            fired: dict[Watcher, None] = {}
            if etype in _DATA_EVENTS:
                for w in self._data.pop(path, ()):
                    fired[w] = None
                    self._forget(w, False, path)
            if etype in _CHILD_EVENTS:
                for w in self._child.pop(path, ()):
                    fired[w] = None
                    self._forget(w, True, path)
            if fired:
                msg = MdWatchEvent(type=int(etype), path=path)
                for w in fired:
                    w.push(msg)
                    pushed += 1
        return pushed

    def _forget(self, watcher: Watcher, is_child: bool, path: str) -> None:
        keys = self._by_watcher.get(watcher)
        if keys is not None:
            keys.discard((is_child, path))
            if not keys:
                del self._by_watcher[watcher]
