"""The ZooKeeper-style metadata service: a tree of versioned nodes with sessions, ephemeral
and sequential nodes and watches, logged and snapshotted to disk (``python -m
moldau.broker.metadata``)."""
