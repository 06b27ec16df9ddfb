"""Client of the ZooKeeper-style metadata service, and the cluster layout kept in it."""

from moldau.clients.metadata.client import MetadataClient, Stat, WatchEvent
from moldau.clients.protocol.messages import WatchEventType

__all__ = ["MetadataClient", "Stat", "WatchEvent", "WatchEventType"]
