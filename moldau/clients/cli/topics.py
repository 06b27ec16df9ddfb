"""``moldau topics``: Kafka's ``kafka-topics.sh`` with the same flags and messages.

Two ways to reach the cluster, as in Kafka: ``--bootstrap-server`` goes through the brokers
(the Admin client), ``--zookeeper`` reads and writes the metadata tree directly, as Kafka's
tool did before 2.2 (a topic is created with one multi-op of ``topic_creation_ops``, so a
reader never sees a topic without its partitions, and the brokers pick it up from there).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from moldau.clients.cli.base import CliError, check_reachable, parse_properties, split_servers

if TYPE_CHECKING:
    from moldau.clients.types import NewTopic, TopicDescription

COMMAND_ERROR = "Error while executing topic command : "


def register(sub: Any, name: str, **kw: Any) -> None:
    p = sub.add_parser(
        name, **kw,
        description="Create, delete, describe, or change a topic, as kafka-topics.sh does.")
    actions = p.add_mutually_exclusive_group(required=True)
    actions.add_argument("--create", action="store_true", help="create a new topic")
    actions.add_argument("--list", action="store_true", help="list all available topics")
    actions.add_argument("--describe", action="store_true",
                         help="list details for the given topics (all when --topic is absent)")
    actions.add_argument("--delete", action="store_true", help="delete a topic")
    actions.add_argument("--alter", action="store_true",
                         help="change the number of partitions or the configuration of a topic")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--bootstrap-server", metavar="HOST:PORT[,...]",
                       help="the broker(s) to connect to")
    where.add_argument("--zookeeper", metavar="HOST:PORT[,...]",
                       help="the metadata service to talk to directly (Kafka's old way)")
    p.add_argument("--topic", metavar="TOPIC",
                   help="the topic to create, alter, describe or delete; except with "
                   "--create it may be a regular expression")
    p.add_argument("--partitions", type=int, metavar="N",
                   help="the number of partitions of the topic being created or altered")
    p.add_argument("--replication-factor", type=int, metavar="N",
                   help="the replication factor of each partition of the topic being created")
    p.add_argument("--replica-assignment", metavar="B:B,B:B,...",
                   help="manual replica assignment: partitions separated by ',', the broker "
                   "ids of one partition by ':' (the first is the preferred leader)")
    p.add_argument("--config", action="append", metavar="KEY=VALUE",
                   help="a topic configuration override (repeatable)")
    p.add_argument("--delete-config", action="append", metavar="KEY",
                   help="a topic configuration override to remove, with --alter (repeatable)")
    p.add_argument("--if-exists", action="store_true",
                   help="with --alter, --delete or --describe: only act if the topic exists")
    p.add_argument("--if-not-exists", action="store_true",
                   help="with --create: only create the topic if it does not exist")
    p.add_argument("--exclude-internal", action="store_true",
                   help="leave internal topics out of --list and --describe")
    p.add_argument("--under-replicated-partitions", action="store_true",
                   help="with --describe: only partitions whose in-sync replicas are fewer "
                   "than their replicas")
    p.add_argument("--unavailable-partitions", action="store_true",
                   help="with --describe: only partitions whose leader is not available")
    p.add_argument("--topics-with-overrides", action="store_true",
                   help="with --describe: only topics that have configuration overrides")
    p.add_argument("--command-config", metavar="FILE",
                   help="accepted for compatibility; moldau's admin client needs no settings")
    p.set_defaults(func=run)


# --------------------------------------------------------------------------- backends


@dataclass
class TopicView:
    """What --describe prints about one topic, from either backend."""

    description: TopicDescription
    configs: dict[str, str] = field(default_factory=dict)
    marked_for_deletion: bool = False


class Backend(Protocol):
    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def list_topics(self) -> dict[str, bool]:
        """Topic name -> marked for deletion."""
        ...
    async def describe(self, names: Sequence[str]) -> list[TopicView]: ...
    async def create(self, topic: NewTopic) -> None: ...
    async def delete(self, name: str) -> str | None:
        """Delete ``name``; the line to print, if any."""
        ...
    async def add_partitions(self, view: TopicView, total: int) -> None: ...
    async def alter_configs(self, name: str, set_: dict[str, str], delete: list[str]) -> None: ...


def command_error(message: str) -> CliError:
    """Kafka's one line for a failed topic command (the message is used as worded)."""
    return CliError(COMMAND_ERROR + message.strip(), prefix="")


class ZookeeperBackend:
    """Reads and writes the metadata tree, as Kafka's tool did with ``--zookeeper``."""

    def __init__(self, connect: str) -> None:
        self.connect = connect
        self.client: Any = None

    async def start(self) -> None:
        await check_reachable(split_servers(self.connect, 2181), "the metadata service at")
        from moldau.clients.metadata.client import MetadataClient

        self.client = MetadataClient(self.connect)
        await self.client.start()

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()

    async def _children(self, path: str) -> list[str]:
        from moldau.clients.protocol import ErrorCode, MoldauError

        try:
            return list(await self.client.children(path))
        except MoldauError as e:
            if e.code == ErrorCode.NO_NODE:
                return []
            raise

    async def _get(self, path: str) -> bytes | None:
        from moldau.clients.protocol import ErrorCode, MoldauError

        try:
            data, _ = await self.client.get(path)
        except MoldauError as e:
            if e.code == ErrorCode.NO_NODE:
                return None
            raise
        return bytes(data)

    async def list_topics(self) -> dict[str, bool]:
        from moldau.clients.metadata import layout

        deleting = set(await self._children(layout.DELETE_TOPICS))
        return {t: t in deleting for t in await self._children(layout.TOPICS)}

    async def live_brokers(self) -> list[int]:
        from moldau.clients.metadata import layout

        return sorted(int(b) for b in await self._children(layout.BROKER_IDS) if b.isdigit())

    async def describe(self, names: Sequence[str]) -> list[TopicView]:
        from moldau.clients.metadata import layout
        from moldau.clients.types import PartitionInfo, TopicDescription

        live = set(await self.live_brokers())
        deleting = set(await self._children(layout.DELETE_TOPICS))
        views: list[TopicView] = []
        for name in names:
            data = await self._get(layout.topic_path(name))
            if data is None:
                continue
            assignment = layout.TopicAssignment.decode(data)
            parts: list[PartitionInfo] = []
            for p, replicas in sorted(assignment.partitions.items()):
                raw = await self._get(layout.partition_state_path(name, p))
                isr: tuple[int, ...]
                if raw is None:
                    leader, epoch, isr = -1, -1, ()
                else:
                    st = layout.PartitionState.decode(raw)
                    leader, epoch, isr = st.leader, st.leader_epoch, st.isr
                if leader not in live:
                    leader = -1
                parts.append(PartitionInfo(p, leader, epoch, tuple(replicas), tuple(isr),
                                           tuple(r for r in replicas if r not in live)))
            cfg_raw = await self._get(layout.topic_config_path(name))
            configs = layout.decode_topic_config(cfg_raw) if cfg_raw else {}
            views.append(TopicView(
                TopicDescription(name, name in layout.INTERNAL_TOPICS, tuple(parts)),
                configs, name in deleting))
        return views

    async def _ensure_roots(self) -> None:
        from moldau.clients.metadata import layout
        from moldau.clients.protocol import ErrorCode, MoldauError

        for path in layout.PERSISTENT_ROOTS:
            if await self.client.exists(path):
                continue
            try:
                await self.client.create(path, b"")
            except MoldauError as e:
                if e.code != ErrorCode.NODE_EXISTS:
                    raise

    async def create(self, topic: NewTopic) -> None:
        from moldau.clients.metadata import layout
        from moldau.clients.protocol import ErrorCode, MoldauError

        brokers = await self.live_brokers()
        if topic.replica_assignment is not None:
            assignment = {p: tuple(r) for p, r in topic.replica_assignment.items()}
            unknown = sorted({b for r in assignment.values() for b in r} - set(brokers))
            if unknown:
                raise command_error(
                    f"Unknown broker(s) in the replica assignment: "
                    f"{', '.join(map(str, unknown))} (live brokers: "
                    f"{', '.join(map(str, brokers)) or 'none'}).")
        else:
            rf = topic.replication_factor
            if rf > len(brokers):
                raise command_error(
                    f"Replication factor: {rf} larger than available brokers: {len(brokers)}.")
            try:
                assignment = layout.assign_replicas(brokers, topic.num_partitions, rf)
            except layout.AssignmentError as e:
                raise command_error(str(e)) from None
        if await self.client.exists(layout.topic_path(topic.name)):
            raise TopicExists(topic.name)
        await self._ensure_roots()
        try:
            await self.client.multi(layout.topic_creation_ops(
                topic.name, assignment, topic.configs))
        except MoldauError as e:
            if e.code == ErrorCode.NODE_EXISTS:
                raise TopicExists(topic.name) from None
            raise

    async def delete(self, name: str) -> str | None:
        from moldau.clients.metadata import layout
        from moldau.clients.protocol import ErrorCode, MoldauError

        # As the brokers do (their controller does not act on /admin/delete_topics): remove
        # the topic's nodes; every broker watching /brokers/topics drops its logs.
        for path, recursive in ((layout.topic_path(name), True),
                                (layout.topic_config_path(name), False)):
            try:
                await self.client.delete(path, recursive=recursive)
            except MoldauError as e:
                if e.code != ErrorCode.NO_NODE:
                    raise
        return f"Topic {name} is marked for deletion."

    async def add_partitions(self, view: TopicView, total: int) -> None:
        from moldau.clients.metadata import layout

        name = view.description.name
        current = {p.partition: p.replicas for p in view.description.partitions}
        rf = max((len(r) for r in current.values()), default=1)
        brokers = await self.live_brokers()
        try:
            new = layout.assign_replicas(brokers, total - len(current), rf,
                                         first_partition=len(current))
        except layout.AssignmentError as e:
            raise command_error(str(e)) from None
        data, stat = await self.client.get(layout.topic_path(name))
        merged = dict(layout.TopicAssignment.decode(bytes(data)).partitions)
        merged.update(new)
        ops: list[dict[str, Any]] = [{
            "op": "set", "path": layout.topic_path(name),
            "data": layout.TopicAssignment(merged).encode(), "version": stat_version(stat)}]
        for p, replicas in sorted(new.items()):
            ops.append({"op": "create", "path": layout.partition_path(name, p), "data": b""})
            ops.append({"op": "create", "path": layout.partition_state_path(name, p),
                        "data": layout.PartitionState(replicas[0], 0, tuple(replicas)).encode()})
        await self.client.multi(ops)

    async def alter_configs(self, name: str, set_: dict[str, str], delete: list[str]) -> None:
        from moldau.clients.metadata import layout

        data, stat = await self.client.get(layout.topic_config_path(name))
        config = layout.decode_topic_config(bytes(data))
        config.update(set_)
        for key in delete:
            config.pop(key, None)
        await self.client.set(layout.topic_config_path(name), layout.encode_topic_config(config),
                              stat_version(stat))


def stat_version(stat: Any) -> int:
    if isinstance(stat, dict):
        return int(stat.get("version", -1))
    return int(getattr(stat, "version", -1))


class TopicExists(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(f"Topic '{name}' already exists.")
        self.name = name


class BootstrapBackend:
    """Talks to the brokers through the Admin client."""

    def __init__(self, servers: str) -> None:
        self.servers = servers
        self.admin: Any = None

    async def start(self) -> None:
        await check_reachable(split_servers(self.servers, 9092), "the broker(s) at")
        from moldau.clients.admin import Admin

        self.admin = Admin(self.servers)
        await self.admin.start()

    async def close(self) -> None:
        if self.admin is not None:
            await self.admin.close()

    async def list_topics(self) -> dict[str, bool]:
        return {t: False for t in await self.admin.list_topics(include_internal=True)}

    async def describe(self, names: Sequence[str]) -> list[TopicView]:
        if not names:
            return []
        views = []
        for d in await self.admin.describe_topics(list(names)):
            # the broker answers with the topic's effective configuration (its defaults
            # merged with the topic's overrides)
            views.append(TopicView(d, await self.admin.describe_configs(d.name)))
        return views

    async def create(self, topic: NewTopic) -> None:
        from moldau.clients.protocol import ErrorCode

        err = (await self.admin.create_topics_results([topic])).get(topic.name)
        if err is None:
            return
        if err.code == ErrorCode.TOPIC_ALREADY_EXISTS:
            raise TopicExists(topic.name)
        raise command_error(err.message or err.code.name)

    async def delete(self, name: str) -> str | None:
        err = (await self.admin.delete_topics_results([name])).get(name)
        if err is not None:
            raise command_error(err.message or err.code.name)
        return None

    async def add_partitions(self, view: TopicView, total: int) -> None:
        from moldau.clients.protocol import MoldauError

        name = view.description.name
        try:
            await self.admin.create_partitions(name, total)
        except MoldauError as e:
            raise command_error(_unprefixed(e, name)) from None

    async def alter_configs(self, name: str, set_: dict[str, str], delete: list[str]) -> None:
        from moldau.clients.protocol import MoldauError

        try:
            await self.admin.alter_configs(name, set_, delete)
        except MoldauError as e:
            raise command_error(_unprefixed(e, name)) from None


def _unprefixed(e: Any, name: str) -> str:
    """The broker's message without the ``topic: `` the admin client puts in front."""
    msg = str(e.message or e.code.name)
    return msg.removeprefix(f"{name}: ")


# --------------------------------------------------------------------------- the command


def run(args: argparse.Namespace) -> int:
    if not args.bootstrap_server and not args.zookeeper:
        raise CliError("one of --bootstrap-server HOST:9092 (the brokers) or --zookeeper "
                       "HOST:2181 (the metadata service) is required")
    if (args.create or args.delete or args.alter) and not args.topic:
        raise CliError(f"Missing required argument \"[topic]\" for --{_action(args)}")
    if args.if_not_exists and not args.create:
        raise CliError("--if-not-exists is only valid with --create")
    if args.create:
        create_spec(args)
    from moldau.clients.cli.base import run_async

    return run_async(_run(args))


def _action(args: argparse.Namespace) -> str:
    for a in ("create", "list", "describe", "delete", "alter"):
        if getattr(args, a):
            return a
    return "?"


async def _run(args: argparse.Namespace) -> int:
    backend: Backend = (ZookeeperBackend(args.zookeeper) if args.zookeeper
                        else BootstrapBackend(args.bootstrap_server))
    await backend.start()
    try:
        if args.create:
            return await _create(backend, args)
        if args.list:
            return await _list(backend, args)
        if args.describe:
            return await _describe(backend, args)
        if args.delete:
            return await _delete(backend, args)
        return await _alter(backend, args)
    finally:
        await backend.close()


def _parse_assignment(text: str) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for p, part in enumerate(text.split(",")):
        try:
            replicas = [int(b) for b in part.split(":")]
        except ValueError:
            raise CliError(f"bad --replica-assignment {text!r}: expected broker ids like "
                           "1:2,2:3") from None
        if len(set(replicas)) != len(replicas):
            raise command_error(f"Partition {p} has duplicate replicas: {part}.")
        out[p] = replicas
    if len({len(r) for r in out.values()}) > 1:
        raise command_error("Partition replica lists may not contain different numbers "
                            "of replicas.")
    return out


def create_spec(args: argparse.Namespace) -> NewTopic:
    """Check --create's arguments before connecting anywhere (Kafka's wording)."""
    from moldau.clients.metadata.layout import InvalidTopicName, validate_topic_name
    from moldau.clients.types import NewTopic

    try:
        validate_topic_name(args.topic)
    except InvalidTopicName as e:
        raise command_error(str(e)) from None
    configs = parse_properties(args.config, "--config")
    assignment = None
    if args.replica_assignment:
        if args.partitions is not None or args.replication_factor is not None:
            raise CliError("--replica-assignment cannot be combined with --partitions or "
                           "--replication-factor")
        assignment = _parse_assignment(args.replica_assignment)
    # left out: the brokers' num.partitions / default.replication.factor (-1 asks for
    # them); the metadata tree knows no defaults, so --zookeeper takes 1
    default = -1 if args.bootstrap_server else 1
    partitions = args.partitions if args.partitions is not None else default
    rf = args.replication_factor if args.replication_factor is not None else default
    if assignment is not None:
        partitions, rf = len(assignment), len(assignment[0])
    if args.partitions is not None and partitions < 1:
        raise command_error("The partitions must be greater than 0")
    if args.replication_factor is not None and rf < 1:
        raise command_error("The replication factor must be greater than 0")
    return NewTopic(args.topic, partitions, rf, configs, assignment)


async def _create(backend: Backend, args: argparse.Namespace) -> int:
    try:
        await backend.create(create_spec(args))
    except TopicExists as e:
        if args.if_not_exists:
            return 0
        raise command_error(str(e)) from None
    print(f"Created topic {args.topic}.")
    return 0


async def _list(backend: Backend, args: argparse.Namespace) -> int:
    from moldau.clients.metadata.layout import INTERNAL_TOPICS

    topics = await backend.list_topics()
    names = _select(topics, args.topic)
    for name in names:
        if args.exclude_internal and name in INTERNAL_TOPICS:
            continue
        print(f"{name} - marked for deletion" if topics[name] else name)
    return 0


def _select(topics: Sequence[str] | dict[str, bool], pattern: str | None) -> list[str]:
    """Kafka's --topic: an exact name, else a regular expression (',' separates names)."""
    names = sorted(topics)
    if pattern is None:
        return names
    if pattern in topics:
        return [pattern]
    try:
        rx = re.compile(pattern.replace(",", "|"))
    except re.error:
        return []
    return [n for n in names if rx.fullmatch(n)]


def _ensure_found(found: list[str], args: argparse.Namespace) -> bool:
    """False when nothing matched and --if-exists says that is fine."""
    if found or args.topic is None:
        return True
    if args.if_exists:
        return False
    raise command_error(f"Topic '{args.topic}' does not exist as expected")


async def _describe(backend: Backend, args: argparse.Namespace) -> int:
    from moldau.clients.metadata.layout import INTERNAL_TOPICS

    names = _select(await backend.list_topics(), args.topic)
    if not _ensure_found(names, args):
        return 0
    if args.exclude_internal:
        names = [n for n in names if n not in INTERNAL_TOPICS]
    views = await backend.describe(names)
    partition_filter = args.under_replicated_partitions or args.unavailable_partitions
    out: list[str] = []
    for view in views:
        if args.topics_with_overrides and not view.configs:
            continue
        out.extend(format_topic(view, under_replicated=args.under_replicated_partitions,
                                unavailable=args.unavailable_partitions,
                                header=not partition_filter))
    if out:
        sys.stdout.write("\n".join(out) + "\n")
    return 0


def format_topic(view: TopicView, *, under_replicated: bool = False, unavailable: bool = False,
                 header: bool = True) -> list[str]:
    """Kafka's --describe lines for one topic."""
    d = view.description
    lines: list[str] = []
    rf = max((len(p.replicas) for p in d.partitions), default=0)
    if header:
        configs = ",".join(f"{k}={v}" for k, v in sorted(view.configs.items()))
        head = (f"Topic: {d.name}\tTopicId: -\tPartitionCount: {len(d.partitions)}\t"
                f"ReplicationFactor: {rf}\tConfigs: {configs}")
        if view.marked_for_deletion:
            head += "\tMarkedForDeletion: true"
        lines.append(head)
    for p in sorted(d.partitions, key=lambda p: p.partition):
        if under_replicated and not len(p.isr) < len(p.replicas):
            continue
        if unavailable and p.leader >= 0:
            continue
        leader = str(p.leader) if p.leader >= 0 else "none"
        line = (f"\tTopic: {d.name}\tPartition: {p.partition}\tLeader: {leader}\t"
                f"Replicas: {','.join(map(str, p.replicas))}\tIsr: {','.join(map(str, p.isr))}")
        if p.offline_replicas:
            line += f"\tOffline: {','.join(map(str, p.offline_replicas))}"
        if view.marked_for_deletion:
            line += "\tMarkedForDeletion: true"
        lines.append(line)
    return lines


async def _delete(backend: Backend, args: argparse.Namespace) -> int:
    from moldau.clients.metadata.layout import INTERNAL_TOPICS

    names = _select(await backend.list_topics(), args.topic)
    if not _ensure_found(names, args):
        return 0
    for name in names:
        if name in INTERNAL_TOPICS:
            raise command_error(f"Topic {name} is a kafka internal topic and is not allowed "
                                "to be marked for deletion.")
    for name in names:
        line = await backend.delete(name)
        if line:
            print(line)
    return 0


async def _alter(backend: Backend, args: argparse.Namespace) -> int:
    if args.partitions is None and not args.config and not args.delete_config:
        raise CliError("--alter needs --partitions N, --config KEY=VALUE or --delete-config KEY")
    if args.replication_factor is not None:
        raise CliError("--replication-factor cannot be changed with --alter")
    names = _select(await backend.list_topics(), args.topic)
    if not _ensure_found(names, args):
        return 0
    views = await backend.describe(names)
    for view in views:
        if args.partitions is not None:
            have = len(view.description.partitions)
            if args.partitions <= have:
                raise command_error(
                    f"The number of partitions for a topic can only be increased. Topic "
                    f"{view.description.name} currently has {have} partitions, "
                    f"{args.partitions} would not be an increase.")
            await backend.add_partitions(view, args.partitions)
            print("Adding partitions succeeded!")
        if args.config or args.delete_config:
            await backend.alter_configs(view.description.name,
                                        parse_properties(args.config, "--config"),
                                        list(args.delete_config or ()))
            print(f"Updated config for topic {view.description.name}.")
    return 0
