from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from harness import Processes

if TYPE_CHECKING:
    from netns import Network


@pytest.fixture
def procs(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Processes]:
    """Daemons started through this fixture are SIGKILLed by PID when the test ends."""
    p = Processes(tmp_path)
    try:
        yield p
    finally:
        p.cleanup()
        rep = getattr(request.node, "rep_call", None)
        if rep is not None and rep.failed:
            print(p.logs())


@pytest.fixture
def cluster(procs: Processes) -> Processes:
    """One metadata node and one broker: ``procs.daemons[0]`` and ``[1]``."""
    md = procs.metadata()
    procs.broker(1, md.address)
    return procs


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def is_root() -> bool:
    return os.geteuid() == 0


@pytest.fixture
def make_network(tmp_path: Path, request: pytest.FixtureRequest
                 ) -> Iterator[Callable[..., Network]]:
    """Factory: ``make_network(n)`` makes ``n`` hosts as network namespaces on a bridge (see
    tests/netns.py). Skips the test when namespaces can't be made here (not root, no ``ip``);
    every process started on the hosts is killed and every namespace removed at teardown."""
    import netns

    reason = netns.unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    nets: list[Network] = []

    def make(n_hosts: int, subnet: str = netns.DEFAULT_SUBNET) -> Network:
        net = netns.make_network(n_hosts, tmp_path / f"net{len(nets) + 1}", subnet)
        nets.append(net)
        return net

    try:
        yield make
    finally:
        for net in nets:
            net.cleanup()
        rep = getattr(request.node, "rep_call", None)
        if rep is not None and rep.failed:
            for net in nets:
                print(net.logs())


@pytest.fixture
def hosts(make_network: Callable[..., Network]) -> Network:
    """Four namespace hosts ``hosts.hosts[0..3]`` (h1..h4) on 10.213.0.0/24."""
    return make_network(4)
