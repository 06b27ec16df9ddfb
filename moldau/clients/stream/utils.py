"""``ParameterTool``: job arguments as Flink reads them (``--input rides.gz --parallelism 2``)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["ParameterTool"]

_NO_VALUE = "__NO_VALUE_KEY"


class ParameterTool:
    """``ParameterTool.from_args(sys.argv[1:])``: ``--key value`` / ``-key value`` pairs; a
    key without value has the value ``"__NO_VALUE_KEY"`` as in Flink (``has(key)`` is
    true)."""

    def __init__(self, data: dict[str, str]) -> None:
        self._data = dict(data)

    @staticmethod
    def from_args(args: Sequence[str] | None = None) -> ParameterTool:
        argv = list(sys.argv[1:] if args is None else args)
        data: dict[str, str] = {}
        i = 0
        while i < len(argv):
            a = argv[i]
            if a.startswith("--"):
                key = a[2:]
            elif a.startswith("-") and len(a) > 1 and not _is_number(a):
                key = a[1:]
            else:
                raise ValueError(f"Error parsing arguments '{' '.join(argv)}' on '{a}'. Please "
                                 "prefix keys with -- or -.")
            if not key:
                raise ValueError(f"The input {argv} contains an empty argument")
            if "=" in key:
                key, value = key.split("=", 1)
                data[key] = value
                i += 1
                continue
            if i + 1 < len(argv) and (not argv[i + 1].startswith("-")
                                      or _is_number(argv[i + 1])):
                data[key] = argv[i + 1]
                i += 2
            else:
                data[key] = _NO_VALUE
                i += 1
        return ParameterTool(data)

    @staticmethod
    def from_map(data: dict[str, str]) -> ParameterTool:
        return ParameterTool({str(k): str(v) for k, v in data.items()})

    def has(self, key: str) -> bool:
        return key in self._data

    def get(self, key: str, default_value: str | None = None) -> str | None:
        return self._data.get(key, default_value)

    def get_required(self, key: str) -> str:
        v = self._data.get(key)
        if v is None or v == _NO_VALUE:
            raise RuntimeError(f"No data for required key '{key}'")
        return v

    def get_int(self, key: str, default_value: int | None = None) -> int:
        v = self._data.get(key)
        if v is None:
            if default_value is None:
                raise RuntimeError(f"No data for required key '{key}'")
            return default_value
        return int(v)

    def get_float(self, key: str, default_value: float | None = None) -> float:
        v = self._data.get(key)
        if v is None:
            if default_value is None:
                raise RuntimeError(f"No data for required key '{key}'")
            return default_value
        return float(v)

    def get_boolean(self, key: str, default_value: bool | None = None) -> bool:
        v = self._data.get(key)
        if v is None:
            if default_value is None:
                raise RuntimeError(f"No data for required key '{key}'")
            return default_value
        return v == _NO_VALUE or v.lower() == "true"

    def get_number_of_parameters(self) -> int:
        return len(self._data)

    def to_map(self) -> dict[str, str]:
        return dict(self._data)

    def __repr__(self) -> str:
        return f"ParameterTool({self._data})"


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True
