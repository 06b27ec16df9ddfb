"""Key groups: how a key finds its parallel subtask, as Flink's ``KeyGroupRangeAssignment``.

A keyed stream is split into ``max_parallelism`` key groups (default 128). A key goes to
key group ``murmur_hash(hash_code(key)) % max_parallelism``, and key group ``g`` belongs to
operator subtask ``g * parallelism // max_parallelism``; each subtask therefore owns one
contiguous :class:`KeyGroupRange`. Keyed state is stored and snapshotted per key group, so
a job restored at another parallelism (up to ``max_parallelism``) hands each new subtask
the key groups it now owns, without rehashing any key.

``hash_code`` stands in for Java's ``hashCode()``: the CRC-32 of the key's *canonical
bytes*, which are the same in every process and on every host (Python's ``hash()`` of a
str is salted per process, so it can't be used). Keys that compare equal in Python get the
same canonical bytes (``1``, ``1.0`` and ``True`` are one key, as they are one dict key).
Keyable values: None, bool, int, float, str, bytes, tuples (so namedtuples and ``Row``) and
frozensets of keyable values, enums, dates and times, Decimal, and frozen dataclasses.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import math
import struct
import zlib
from collections.abc import Iterator
from typing import Any

__all__ = [
    "DEFAULT_MAX_PARALLELISM",
    "UPPER_BOUND_MAX_PARALLELISM",
    "KeyGroupRange",
    "assign_key_to_parallel_operator",
    "assign_to_key_group",
    "canonical_key_bytes",
    "compute_default_max_parallelism",
    "compute_key_group_range_for_operator_index",
    "compute_operator_index_for_key_group",
    "key_hash_code",
    "murmur_hash",
]

DEFAULT_MAX_PARALLELISM = 128
UPPER_BOUND_MAX_PARALLELISM = 1 << 15

_MASK = 0xFFFFFFFF
_DOUBLE = struct.Struct(">d")


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & _MASK


def murmur_hash(code: int) -> int:
    """Flink's ``MathUtils.murmurHash(int)``: scramble a 32-bit hash code into a
    non-negative int (one murmur3 round plus the finalizer)."""
    code &= _MASK
    code = (code * 0xCC9E2D51) & _MASK
    code = _rotl(code, 15)
    code = (code * 0x1B873593) & _MASK
    code = _rotl(code, 13)
    code = (code * 5 + 0xE6546B64) & _MASK
    code ^= 4
    code ^= code >> 16
    code = (code * 0x85EBCA6B) & _MASK
    code ^= code >> 13
    code = (code * 0xC2B2AE35) & _MASK
    code ^= code >> 16
    if code & 0x80000000:  # negative as a Java int: Flink returns -code (0 for MIN_VALUE)
        code = 0 if code == 0x80000000 else (-(code - 0x100000000)) & _MASK
    return code


def _int_bytes(n: int) -> bytes:
    return n.to_bytes((n.bit_length() + 8) // 8 or 1, "big", signed=True)


def _encode(key: Any, out: bytearray) -> None:
    # One tag byte per value; variable-length parts carry a length so that tuples of
    # different shapes never produce the same bytes.
    t = type(key)
    if t is str:
        b = key.encode("utf-8", "surrogatepass")
        out += b"S"
        out += len(b).to_bytes(4, "big")
        out += b
    elif t is int or t is bool:
        b = _int_bytes(int(key))
        out += b"I"
        out.append(len(b))
        out += b
    elif key is None:
        out += b"N"
    elif isinstance(key, tuple):
        out += b"T"
        out += len(key).to_bytes(4, "big")
        for item in key:
            _encode(item, out)
    elif t is float:
        if math.isfinite(key) and key == int(key):
            _encode(int(key), out)  # 1.0 == 1: one key, one key group
        else:
            out += b"F"
            out += _DOUBLE.pack(key) if key == key else b"nan"
    elif isinstance(key, bytes | bytearray | memoryview):
        b = bytes(key)
        out += b"B"
        out += len(b).to_bytes(4, "big")
        out += b
    elif isinstance(key, enum.Enum):
        out += b"E"
        _encode(type(key).__qualname__, out)
        _encode(key.value, out)
    elif isinstance(key, str):  # str subclasses
        _encode(str(key), out)
    elif isinstance(key, int):  # int subclasses (IntEnum is caught above)
        _encode(int(key), out)
    elif isinstance(key, float):
        _encode(float(key), out)
    elif isinstance(key, frozenset):
        parts = sorted(canonical_key_bytes(k) for k in key)
        out += b"Z"
        out += len(parts).to_bytes(4, "big")
        for p in parts:
            out += len(p).to_bytes(4, "big")
            out += p
    elif isinstance(key, decimal.Decimal):
        if key.is_finite() and key == key.to_integral_value():
            _encode(int(key), out)
        else:
            _encode(float(key), out)
    elif isinstance(key, datetime.datetime | datetime.date | datetime.time):
        out += b"D"
        _encode(key.isoformat(), out)
    elif dataclasses.is_dataclass(key) and not isinstance(key, type):
        params = getattr(type(key), "__dataclass_params__", None)
        if params is None or not params.frozen:
            raise TypeError(_not_keyable(key, "a dataclass key must be frozen"))
        out += b"C"
        _encode(type(key).__qualname__, out)
        _encode(tuple(getattr(key, f.name) for f in dataclasses.fields(key)), out)
    else:
        raise TypeError(_not_keyable(key))


def _not_keyable(key: Any, why: str = "") -> str:
    return (f"a key of type {type(key).__name__} ({key!r:.80}) can't be used: "
            + (why + "; " if why else "")
            + "keys must be None, bool, int, float, str, bytes, a tuple or frozenset of "
            "these, an enum, a date/time, a Decimal or a frozen dataclass")


def canonical_key_bytes(key: Any) -> bytes:
    """The bytes that identify ``key`` in every process (see the module docstring)."""
    out = bytearray()
    _encode(key, out)
    return bytes(out)


def key_hash_code(key: Any) -> int:
    """A stable 32-bit hash code of ``key`` (CRC-32 of its canonical bytes)."""
    return zlib.crc32(canonical_key_bytes(key))


_CACHE_MAX = 65536
_caches: dict[int, dict[Any, int]] = {}


def assign_to_key_group(key: Any, max_parallelism: int) -> int:
    """The key group of ``key``: ``murmur_hash(key_hash_code(key)) % max_parallelism``."""
    cache = _caches.get(max_parallelism)
    if cache is None:
        cache = _caches[max_parallelism] = {}
    try:
        return cache[key]
    except KeyError:
        pass
    except TypeError:
        raise TypeError(_not_keyable(key, "it is not hashable")) from None
    kg = murmur_hash(key_hash_code(key)) % max_parallelism
    # keys repeat in most streams (words, sensor ids, cells): a bounded memo pays off
    if len(cache) >= _CACHE_MAX:
        cache.clear()
    cache[key] = kg
    return kg


def compute_operator_index_for_key_group(max_parallelism: int, parallelism: int,
                                         key_group: int) -> int:
    """The subtask that owns ``key_group``."""
    return key_group * parallelism // max_parallelism


def assign_key_to_parallel_operator(key: Any, max_parallelism: int, parallelism: int) -> int:
    """The subtask that processes ``key``."""
    return assign_to_key_group(key, max_parallelism) * parallelism // max_parallelism


class KeyGroupRange:
    """The key groups ``start..end`` (both inclusive) of one subtask; empty when end < start."""

    __slots__ = ("end_key_group", "start_key_group")

    def __init__(self, start_key_group: int, end_key_group: int) -> None:
        self.start_key_group = start_key_group
        self.end_key_group = end_key_group

    def __contains__(self, key_group: object) -> bool:
        return isinstance(key_group, int) and (
            self.start_key_group <= key_group <= self.end_key_group)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start_key_group, self.end_key_group + 1))

    def __len__(self) -> int:
        return max(0, self.end_key_group - self.start_key_group + 1)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, KeyGroupRange) and (
            (self.start_key_group, self.end_key_group)
            == (other.start_key_group, other.end_key_group))

    def __hash__(self) -> int:
        return hash((self.start_key_group, self.end_key_group))

    def __repr__(self) -> str:
        return f"KeyGroupRange({self.start_key_group}, {self.end_key_group})"


def compute_key_group_range_for_operator_index(max_parallelism: int, parallelism: int,
                                               operator_index: int) -> KeyGroupRange:
    """The key groups owned by subtask ``operator_index`` (Flink's formula, the exact
    inverse of :func:`compute_operator_index_for_key_group`)."""
    if not 0 < parallelism <= max_parallelism:
        raise ValueError(f"parallelism {parallelism} must be in 1..{max_parallelism} "
                         "(the max parallelism)")
    if not 0 <= operator_index < parallelism:
        raise ValueError(f"subtask index {operator_index} is not in 0..{parallelism - 1}")
    start = (operator_index * max_parallelism + parallelism - 1) // parallelism
    end = ((operator_index + 1) * max_parallelism - 1) // parallelism
    return KeyGroupRange(start, end)


def compute_default_max_parallelism(parallelism: int) -> int:
    """Flink's default: ``parallelism * 1.5`` rounded up to a power of two, within
    [128, 32768]."""
    p = parallelism + parallelism // 2
    p2 = 1 << max(0, (p - 1).bit_length())
    return min(max(p2, DEFAULT_MAX_PARALLELISM), UPPER_BOUND_MAX_PARALLELISM)
