from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import Processes


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
