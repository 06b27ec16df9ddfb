"""Durations as a Flink user writes them: ``Time.seconds(15)``, ``Duration.of_minutes(5)``.

Everything inside the stream processor counts time in integer milliseconds since the epoch
(event time and processing time alike), as Flink does; these classes only carry a length
of time to the API, and :func:`to_millis` turns any accepted form into milliseconds.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

__all__ = ["Duration", "Time", "TimeCharacteristic", "TimeDomain", "to_millis"]


def _ms(value: float, unit: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"a length of time must be a number, got {value!r}")
    return round(value * unit)


@dataclass(frozen=True, slots=True)
class Time:
    """A length of time (Flink's ``org.apache.flink.streaming.api.windowing.time.Time``)."""

    millis: int

    @classmethod
    def milliseconds(cls, n: float) -> Time:
        return cls(_ms(n, 1))

    @classmethod
    def seconds(cls, n: float) -> Time:
        return cls(_ms(n, 1000))

    @classmethod
    def minutes(cls, n: float) -> Time:
        return cls(_ms(n, 60_000))

    @classmethod
    def hours(cls, n: float) -> Time:
        return cls(_ms(n, 3_600_000))

    @classmethod
    def days(cls, n: float) -> Time:
        return cls(_ms(n, 86_400_000))

    def to_milliseconds(self) -> int:
        return self.millis

    def __str__(self) -> str:
        return f"{self.millis} ms"


@dataclass(frozen=True, slots=True)
class Duration:
    """A length of time (``pyflink.common.Duration``, Java's ``java.time.Duration``)."""

    millis: int

    @classmethod
    def of_millis(cls, n: float) -> Duration:
        return cls(_ms(n, 1))

    @classmethod
    def of_seconds(cls, n: float) -> Duration:
        return cls(_ms(n, 1000))

    @classmethod
    def of_minutes(cls, n: float) -> Duration:
        return cls(_ms(n, 60_000))

    @classmethod
    def of_hours(cls, n: float) -> Duration:
        return cls(_ms(n, 3_600_000))

    @classmethod
    def of_days(cls, n: float) -> Duration:
        return cls(_ms(n, 86_400_000))

    @classmethod
    def zero(cls) -> Duration:
        return cls(0)

    def to_milliseconds(self) -> int:
        return self.millis

    def __str__(self) -> str:
        return f"{self.millis} ms"


def to_millis(value: Any, what: str = "a length of time") -> int:
    """Milliseconds of a :class:`Time`, a :class:`Duration`, a ``datetime.timedelta`` or a
    plain integer (taken as milliseconds, as Flink's ``long`` arguments are)."""
    if isinstance(value, Time | Duration):
        return value.millis
    if isinstance(value, bool):
        raise TypeError(f"{what} must be a Time, a Duration or milliseconds, got {value!r}")
    if isinstance(value, int):
        return value
    import datetime

    if isinstance(value, datetime.timedelta):
        return round(value.total_seconds() * 1000)
    raise TypeError(f"{what} must be a Time, a Duration or milliseconds, got {value!r}")


class TimeCharacteristic(enum.Enum):
    """Accepted for old scripts (``env.set_stream_time_characteristic``); it only decides
    what ``KeyedStream.time_window`` means, as in Flink 1.12+, where event time is the
    default."""

    ProcessingTime = 0
    IngestionTime = 1
    EventTime = 2


class TimeDomain(enum.Enum):
    """Which clock fired a timer (``OnTimerContext.time_domain()``)."""

    EVENT_TIME = 0
    PROCESSING_TIME = 1
