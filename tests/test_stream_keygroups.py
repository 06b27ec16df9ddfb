"""Key groups: stable across processes, ranges that partition all groups, Flink's formulas."""

from __future__ import annotations

import dataclasses
import enum
import json
import os
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from moldau.clients.stream.keygroups import (
    KeyGroupRange,
    assign_key_to_parallel_operator,
    assign_to_key_group,
    canonical_key_bytes,
    compute_default_max_parallelism,
    compute_key_group_range_for_operator_index,
    compute_operator_index_for_key_group,
    murmur_hash,
)

KEYS: list[object] = ["", "a", "hello", "ünïcødé", 0, 1, -1, 2**40, -(2**70), 1.5, -0.25,
                      None, True, b"\x00\xff", ("a", 1), (("nested", 2), None), ("a", "b", 3)]


def test_key_groups_are_the_same_in_another_process() -> None:
    mine = [assign_to_key_group(k, 128) for k in KEYS] + [
        assign_to_key_group(k, 1000) for k in KEYS]
    code = (
        "import json\n"
        "from moldau.clients.stream.keygroups import assign_to_key_group\n"
        f"keys = {KEYS!r}\n"
        "print(json.dumps([assign_to_key_group(k, 128) for k in keys] + "
        "[assign_to_key_group(k, 1000) for k in keys]))\n")
    for seed in ("1", "12345"):  # a different str hash salt in each child
        env = dict(os.environ, PYTHONHASHSEED=seed)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env=env, check=True, timeout=60)
        assert json.loads(out.stdout) == mine


def test_equal_keys_share_a_group() -> None:
    assert canonical_key_bytes(1) == canonical_key_bytes(1.0) == canonical_key_bytes(True)
    assert assign_to_key_group(("a", 1), 128) == assign_to_key_group(("a", 1.0), 128)
    assert canonical_key_bytes(("a", "b")) != canonical_key_bytes(("ab",))
    assert canonical_key_bytes("1") != canonical_key_bytes(1)

    class Color(enum.Enum):
        RED = 1

    @dataclasses.dataclass(frozen=True)
    class Cell:
        x: int
        y: int

    assert canonical_key_bytes(Cell(1, 2)) == canonical_key_bytes(Cell(1, 2))
    assert canonical_key_bytes(Color.RED) != canonical_key_bytes(1)


def test_unkeyable_values_are_rejected_clearly() -> None:
    with pytest.raises(TypeError, match="not hashable"):
        assign_to_key_group(["a", "list"], 128)
    with pytest.raises(TypeError, match="a key of type object"):
        canonical_key_bytes(object())

    @dataclasses.dataclass
    class Mutable:
        x: int

    with pytest.raises(TypeError, match="must be frozen"):
        canonical_key_bytes(Mutable(1))


def test_spread_over_groups() -> None:
    groups = [assign_to_key_group(f"word-{i}", 128) for i in range(12800)]
    counts = [groups.count(g) for g in range(128)]
    assert min(counts) > 50 and max(counts) < 160  # ~100 each


def test_murmur_hash_is_non_negative_int32() -> None:
    for code in (0, 1, -1, 2**31 - 1, -(2**31), 123456789):
        h = murmur_hash(code)
        assert 0 <= h < 2**31


@given(st.integers(1, 4096).flatmap(lambda mp: st.tuples(st.just(mp), st.integers(1, mp))))
def test_ranges_partition_all_groups(mp_p: tuple[int, int]) -> None:
    mp, p = mp_p
    seen: list[int] = []
    for i in range(p):
        r = compute_key_group_range_for_operator_index(mp, p, i)
        assert len(r) >= 1
        for g in r:
            assert compute_operator_index_for_key_group(mp, p, g) == i
        seen.extend(r)
    assert seen == list(range(mp))


def test_flink_formulas_and_defaults() -> None:
    assert compute_operator_index_for_key_group(128, 3, 0) == 0
    assert compute_operator_index_for_key_group(128, 3, 127) == 2
    assert compute_key_group_range_for_operator_index(128, 3, 1) == KeyGroupRange(43, 85)
    assert 43 in KeyGroupRange(43, 85) and 86 not in KeyGroupRange(43, 85)
    key = "taxi-42"
    assert assign_key_to_parallel_operator(key, 128, 4) == (
        assign_to_key_group(key, 128) * 4 // 128)
    assert compute_default_max_parallelism(1) == 128
    assert compute_default_max_parallelism(100) == 256
    assert compute_default_max_parallelism(30000) == 32768
    with pytest.raises(ValueError):
        compute_key_group_range_for_operator_index(128, 129, 0)
