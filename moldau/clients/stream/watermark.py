"""Event time: timestamp assigners, watermark generators and ``WatermarkStrategy``.

A watermark ``W`` says "no more records with timestamp <= W are expected". Watermarks are
int milliseconds; :data:`MIN_WATERMARK` is the initial value (Java's ``Long.MIN_VALUE``)
and :data:`MAX_WATERMARK` is sent when a bounded input ends, which fires every pending
event-time window and timer.

A :class:`WatermarkStrategy` makes one :class:`WatermarkGenerator` per source split (or per
subtask, for ``assign_timestamps_and_watermarks``): ``on_event`` sees every record,
``on_periodic_emit`` runs every ``pipeline.auto-watermark-interval`` (200 ms by default),
and the generator reports through a :class:`WatermarkOutput`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from moldau.clients.stream.time import to_millis

__all__ = [
    "MAX_WATERMARK",
    "MIN_WATERMARK",
    "AscendingTimestampsWatermarks",
    "BoundedOutOfOrdernessWatermarks",
    "NoWatermarksGenerator",
    "TimestampAssigner",
    "Watermark",
    "WatermarkGenerator",
    "WatermarkOutput",
    "WatermarkStrategy",
    "WatermarksWithIdleness",
]

MIN_WATERMARK = -(1 << 63)
MAX_WATERMARK = (1 << 63) - 1


class Watermark:
    """A watermark as a value (what a SourceFunction passes to ``ctx.emit_watermark``)."""

    __slots__ = ("timestamp",)

    def __init__(self, timestamp: int) -> None:
        self.timestamp = int(timestamp)

    def get_timestamp(self) -> int:
        return self.timestamp

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Watermark) and other.timestamp == self.timestamp

    def __hash__(self) -> int:
        return hash(self.timestamp)

    def __repr__(self) -> str:
        return f"Watermark({self.timestamp})"


class WatermarkOutput:
    """Where a generator reports: a new watermark, or that its input went idle/active."""

    def emit_watermark(self, watermark: Watermark | int) -> None:
        raise NotImplementedError

    def mark_idle(self) -> None:
        raise NotImplementedError

    def mark_active(self) -> None:
        raise NotImplementedError


class WatermarkGenerator:
    """Flink's ``WatermarkGenerator``: ``on_event`` per record, ``on_periodic_emit``
    periodically."""

    def on_event(self, event: Any, event_timestamp: int, output: WatermarkOutput) -> None:
        pass

    def on_periodic_emit(self, output: WatermarkOutput) -> None:
        pass


class BoundedOutOfOrdernessWatermarks(WatermarkGenerator):
    """Watermark = highest timestamp seen - out-of-orderness bound - 1: a record may be up
    to the bound late without being late."""

    __slots__ = ("max_timestamp", "out_of_orderness")

    def __init__(self, max_out_of_orderness_ms: int) -> None:
        if max_out_of_orderness_ms < 0:
            raise ValueError("the maximum out-of-orderness must not be negative")
        self.out_of_orderness = max_out_of_orderness_ms
        # start so that the first periodic watermark is MIN_WATERMARK, without overflow
        self.max_timestamp = MIN_WATERMARK + max_out_of_orderness_ms + 1

    def on_event(self, event: Any, event_timestamp: int, output: WatermarkOutput) -> None:
        if event_timestamp > self.max_timestamp:
            self.max_timestamp = event_timestamp

    def on_periodic_emit(self, output: WatermarkOutput) -> None:
        output.emit_watermark(self.max_timestamp - self.out_of_orderness - 1)


class AscendingTimestampsWatermarks(BoundedOutOfOrdernessWatermarks):
    """For timestamps that never decrease (``for_monotonous_timestamps``)."""

    def __init__(self) -> None:
        super().__init__(0)


class NoWatermarksGenerator(WatermarkGenerator):
    """Emits no watermarks (processing-time jobs, or timestamps without event time)."""


class WatermarksWithIdleness(WatermarkGenerator):
    """Marks the input idle when no record came for ``idle_timeout_ms`` of processing time,
    so an idle split or partition doesn't hold the watermark of the whole job back."""

    __slots__ = ("_clock", "_idle", "_last_activity", "_seen", "idle_timeout", "inner")

    def __init__(self, inner: WatermarkGenerator, idle_timeout_ms: int,
                 clock: Callable[[], int]) -> None:
        if idle_timeout_ms <= 0:
            raise ValueError("the idle timeout must be positive")
        self.inner = inner
        self.idle_timeout = idle_timeout_ms
        self._clock = clock
        self._last_activity = clock()
        self._seen = False
        self._idle = False

    def on_event(self, event: Any, event_timestamp: int, output: WatermarkOutput) -> None:
        self._seen = True
        if self._idle:
            self._idle = False
            output.mark_active()
        self.inner.on_event(event, event_timestamp, output)

    def on_periodic_emit(self, output: WatermarkOutput) -> None:
        now = self._clock()
        if self._seen:
            self._seen = False
            self._last_activity = now
        elif not self._idle and now - self._last_activity >= self.idle_timeout:
            self._idle = True
            output.mark_idle()
            return
        if not self._idle:
            self.inner.on_periodic_emit(output)


class TimestampAssigner:
    """``extract_timestamp(value, record_timestamp)``: the event time of a record in ms
    (``record_timestamp`` is the timestamp it already has, e.g. the Kafka record's, or
    None)."""

    def extract_timestamp(self, value: Any, record_timestamp: int | None) -> int:
        raise NotImplementedError


def _assigner_callable(assigner: Any) -> Callable[[Any, int | None], int]:
    if isinstance(assigner, TimestampAssigner) or hasattr(assigner, "extract_timestamp"):
        return assigner.extract_timestamp  # type: ignore[no-any-return]
    if callable(assigner):
        return assigner  # type: ignore[no-any-return]
    raise TypeError("with_timestamp_assigner() expects a TimestampAssigner or a function "
                    f"(value, record_timestamp) -> timestamp in ms; got {assigner!r:.60}")


class WatermarkStrategy:
    """How a source or ``assign_timestamps_and_watermarks`` stamps and times records.

    ``WatermarkStrategy.for_bounded_out_of_orderness(Duration.of_seconds(60))
    .with_timestamp_assigner(lambda ride, ts: ride.event_time)``. Immutable: each
    ``with_*`` returns a new strategy."""

    __slots__ = ("_factory", "_idleness", "_kind", "_timestamp_assigner", "describe")

    def __init__(self, factory: Callable[[], WatermarkGenerator], describe: str,
                 timestamp_assigner: Any = None, idleness_ms: int | None = None,
                 kind: str = "custom") -> None:
        self._factory = factory
        self.describe = describe
        self._timestamp_assigner = timestamp_assigner
        self._idleness = idleness_ms
        self._kind = kind

    @staticmethod
    def for_bounded_out_of_orderness(max_out_of_orderness: Any) -> WatermarkStrategy:
        ms = to_millis(max_out_of_orderness, "the maximum out-of-orderness")
        if ms < 0:
            raise ValueError(f"the maximum out-of-orderness must not be negative, got {ms} ms")
        return WatermarkStrategy(_BoundedFactory(ms), f"BoundedOutOfOrderness({ms} ms)",
                                 kind="bounded")

    @staticmethod
    def for_monotonous_timestamps() -> WatermarkStrategy:
        return WatermarkStrategy(AscendingTimestampsWatermarks, "MonotonousTimestamps",
                                 kind="ascending")

    @staticmethod
    def no_watermarks() -> WatermarkStrategy:
        return WatermarkStrategy(NoWatermarksGenerator, "NoWatermarks", kind="none")

    @staticmethod
    def for_generator(generator_supplier: Callable[..., WatermarkGenerator]
                      ) -> WatermarkStrategy:
        """A strategy from a function that makes a :class:`WatermarkGenerator`."""
        if not callable(generator_supplier):
            raise TypeError("for_generator() expects a function returning a WatermarkGenerator")
        return WatermarkStrategy(_SupplierFactory(generator_supplier), "CustomGenerator")

    def with_timestamp_assigner(self, timestamp_assigner: Any) -> WatermarkStrategy:
        _assigner_callable(timestamp_assigner)
        return WatermarkStrategy(self._factory, self.describe, timestamp_assigner,
                                 self._idleness, self._kind)

    def with_idleness(self, idle_timeout: Any) -> WatermarkStrategy:
        ms = to_millis(idle_timeout, "the idle timeout")
        if ms <= 0:
            raise ValueError(f"the idle timeout must be positive, got {ms} ms")
        return WatermarkStrategy(self._factory, self.describe, self._timestamp_assigner, ms,
                                 self._kind)

    @property
    def has_timestamp_assigner(self) -> bool:
        return self._timestamp_assigner is not None

    @property
    def is_no_watermarks(self) -> bool:
        return self._kind == "none"

    @property
    def idleness_ms(self) -> int | None:
        return self._idleness

    def create_watermark_generator(self, clock: Callable[[], int] | None = None
                                   ) -> WatermarkGenerator:
        gen = self._factory()
        if self._idleness is not None:
            if clock is None:
                import time

                def clock() -> int:
                    return time.time_ns() // 1_000_000
            gen = WatermarksWithIdleness(gen, self._idleness, clock)
        return gen

    def create_timestamp_assigner(self) -> Callable[[Any, int | None], int] | None:
        """The assigner as a plain ``(value, record_ts) -> ts`` callable; None keeps the
        timestamps records already carry."""
        if self._timestamp_assigner is None:
            return None
        return _assigner_callable(self._timestamp_assigner)

    def __repr__(self) -> str:
        extra = ""
        if self._timestamp_assigner is not None:
            extra += ", with timestamp assigner"
        if self._idleness is not None:
            extra += f", idle after {self._idleness} ms"
        return f"WatermarkStrategy({self.describe}{extra})"


class _BoundedFactory:
    __slots__ = ("ms",)

    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> WatermarkGenerator:
        return BoundedOutOfOrdernessWatermarks(self.ms)


class _SupplierFactory:
    __slots__ = ("supplier",)

    def __init__(self, supplier: Callable[..., WatermarkGenerator]) -> None:
        self.supplier = supplier

    def __call__(self) -> WatermarkGenerator:
        try:
            gen = self.supplier()
        except TypeError:
            gen = self.supplier(None)  # Flink's supplier takes a context argument
        if not hasattr(gen, "on_event") or not hasattr(gen, "on_periodic_emit"):
            raise TypeError("the watermark generator supplier must return a "
                            f"WatermarkGenerator, got {gen!r:.60}")
        return gen
