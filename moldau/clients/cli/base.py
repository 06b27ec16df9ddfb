"""What every console tool shares: an argument parser whose errors are one line, the error
type a command raises for the user, ``key=value`` property parsing, and running a coroutine.

Only the standard library is imported at module level: ``moldau --help`` must stay fast, so
asyncio, the protocol and the client library are imported inside the command that uses them.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Coroutine, Iterable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

T = TypeVar("T")

# the package root (the directory holding ``moldau/``), for child processes' PYTHONPATH
PACKAGE_ROOT = Path(__file__).resolve().parents[3]


class CliError(Exception):
    """A failure to report to the user as one line ``Error: <message>`` (no traceback)."""

    def __init__(self, message: str, exit_code: int = 1, prefix: str = "Error: ") -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        # Kafka's tools word some errors themselves ("Error while executing ...")
        self.prefix = prefix


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"Error: {message} (see '{self.prog} --help')\n")
        sys.exit(2)


def parse_properties(items: Iterable[str] | None, what: str = "property") -> dict[str, str]:
    """``["k=v", "a=b=c"]`` -> ``{"k": "v", "a": "b=c"}``; a missing ``=`` is a user error."""
    out: dict[str, str] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CliError(f"invalid {what} {item!r}: expected key=value")
        out[key.strip()] = value
    return out


def read_properties_file(path: str) -> dict[str, str]:
    """A Java-style ``.properties`` file: ``key=value`` lines, ``#``/``!`` comments."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise CliError(f"cannot read {path}: {e.strerror or e}") from None
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#!":
            continue
        key, sep, value = line.partition("=")
        if not sep:
            key, sep, value = line.partition(":")
        out[key.strip()] = value.strip()
    return out


def split_servers(value: str, default_port: int) -> list[str]:
    """``"h1:9092,h2"`` -> ``["h1:9092", "h2:<default_port>"]``; a bad address is a user error."""
    servers: list[str] = []
    for part in value.split("/", 1)[0].split(","):
        part = part.strip()
        if not part:
            continue
        host, sep, port = part.rpartition(":")
        if not sep or part.endswith("]"):
            servers.append(f"{part}:{default_port}")
            continue
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise CliError(f"bad address {part!r}: expected HOST:PORT")
        servers.append(f"{host or '127.0.0.1'}:{port}")
    if not servers:
        raise CliError(f"no server address in {value!r}")
    return servers


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on uvloop (asyncio's loop if uvloop is missing).

    Ctrl-C cancels the coroutine (its ``finally`` blocks run) and then raises
    KeyboardInterrupt, which ``main`` turns into a quiet exit status 130.
    """
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency
        import asyncio

        return asyncio.run(coro)
    return uvloop.run(coro)


async def check_reachable(servers: Sequence[str], what: str, timeout: float = 5.0) -> None:
    """Fail fast with one clear line when none of ``servers`` accepts a TCP connection.

    The client libraries retry unreachable servers (right for a daemon that is restarting);
    a console tool run by a person should say at once that the address is wrong.
    """
    import asyncio

    errors: list[str] = []
    for server in servers:
        host, _, port = server.rpartition(":")
        host = host.strip("[]")
        try:
            async with asyncio.timeout(timeout):
                _, writer = await asyncio.open_connection(host, int(port))
        except TimeoutError:
            errors.append(f"{server}: timed out")
            continue
        except OSError as e:
            errors.append(f"{server}: {e.strerror or e}")
            continue
        writer.close()
        return
    raise CliError(f"cannot reach {what} {', '.join(servers)} ({'; '.join(errors)})")


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a daemon started from the CLI: unbuffered output, and this
    ``moldau`` package importable even when it is not installed."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    root = str(PACKAGE_ROOT)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if root not in paths:
        env["PYTHONPATH"] = os.pathsep.join([root, *paths])
    env.update(extra or {})
    return env


# Kafka client settings that have no meaning here (Java serializers, JMX, ...): accepted
# and ignored, so a Kafka properties file works unchanged.
IGNORED_CLIENT_KEYS = frozenset({
    "bootstrap.servers", "key.serializer", "value.serializer", "key.deserializer",
    "value.deserializer", "interceptor.classes", "metric.reporters", "metrics.num.samples",
    "metrics.sample.window.ms", "security.protocol", "client.dns.lookup",
    "send.buffer.bytes", "receive.buffer.bytes", "connections.max.idle.ms",
})


def client_kwargs(cls: type, props: dict[str, str], what: str) -> dict[str, Any]:
    """Kafka-style ``a.b.c=value`` settings -> keyword arguments of ``cls`` (``a_b_c``),
    each converted to the type of the parameter's default; an unknown key is a user error."""
    import inspect

    params = inspect.signature(cls).parameters
    out: dict[str, Any] = {}
    for key, raw in props.items():
        if key in IGNORED_CLIENT_KEYS:
            continue
        name = key.replace(".", "_").replace("-", "_")
        param = params.get(name)
        if param is None or param.kind not in (param.KEYWORD_ONLY, param.POSITIONAL_OR_KEYWORD):
            raise CliError(f"unknown {what} property {key!r}")
        default = param.default
        value: Any = raw
        try:
            if isinstance(default, bool):
                value = raw.strip().lower() in ("true", "1", "yes")
            elif isinstance(default, int) and name != "acks":
                value = int(raw)
            elif isinstance(default, float):
                value = float(raw)
        except ValueError:
            raise CliError(f"invalid value for {what} property {key}: {raw!r}") from None
        out[name] = value
    return out
