"""Property tests: the indexes agree with a plain list model, on disk and after truncation."""

from __future__ import annotations

import tempfile
from bisect import bisect_right
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from moldau.broker.log.offset_index import OffsetIndex
from moldau.broker.log.time_index import TimeIndex

BASE = 1000

steps = st.lists(st.tuples(st.integers(1, 50), st.integers(1, 5000)), max_size=60)


def offset_entries(deltas: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out = []
    off, pos = BASE, 0
    for d_off, d_pos in deltas:
        off += d_off
        pos += d_pos
        out.append((off, pos))
    return out


def model_lookup(entries: list[tuple[int, int]], offset: int) -> tuple[int, int]:
    keys = [o for o, _ in entries]
    i = bisect_right(keys, offset) - 1
    return entries[i] if i >= 0 else (BASE, 0)


@settings(max_examples=60, deadline=None)
@given(deltas=steps, probes=st.lists(st.integers(0, 5000), max_size=20),
       cut=st.integers(BASE, BASE + 3000))
def test_offset_index_matches_model(deltas: list[tuple[int, int]], probes: list[int],
                                    cut: int) -> None:
    entries = offset_entries(deltas)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "x.index"
        idx = OffsetIndex(path, BASE)
        idx.open()
        for o, p in entries:
            idx.append(o, p)
        log_end = (entries[-1][1] + 1) if entries else 0
        assert idx.sanity_check(log_end) is None
        for probe in probes:
            assert idx.lookup(BASE + probe) == model_lookup(entries, BASE + probe)
        assert idx.lookup(BASE - 5) == (BASE, 0)
        idx.truncate_to(cut)
        kept = [e for e in entries if e[0] < cut]
        assert idx.entries() == kept
        idx.close()
        # what is on disk is what was in memory
        again = OffsetIndex(path, BASE)
        again.open()
        assert again.entries() == kept
        assert path.stat().st_size == 8 * len(kept)
        for probe in probes:
            assert again.lookup(BASE + probe) == model_lookup(kept, BASE + probe)
        again.close()


@settings(max_examples=60, deadline=None)
@given(points=st.lists(st.tuples(st.integers(-5, 100), st.integers(0, 20)), max_size=60),
       probes=st.lists(st.integers(-10, 3000), max_size=20),
       cut=st.integers(BASE, BASE + 1500))
def test_time_index_matches_model(points: list[tuple[int, int]], probes: list[int],
                                  cut: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "x.timeindex"
        idx = TimeIndex(path, BASE)
        idx.open()
        model: list[tuple[int, int]] = []
        ts, off = 0, BASE
        for d_ts, d_off in points:
            ts += d_ts
            off += d_off
            added = idx.maybe_append(ts, off)
            # kept only when the timestamp grows: the index stays strictly monotonic
            assert added == (not model or ts > model[-1][0])
            if added:
                model.append((ts, off))
        assert idx.entries() == model
        assert idx.sanity_check(off + 1) is None
        for probe in probes:
            keys = [t for t, _ in model]
            i = bisect_right(keys, probe) - 1
            assert idx.lookup(probe) == (model[i] if i >= 0 else (-1, BASE))
        idx.truncate_to(cut)
        kept = [e for e in model if e[1] < cut]
        idx.close()
        again = TimeIndex(path, BASE)
        again.open()
        assert again.entries() == kept
        again.close()
