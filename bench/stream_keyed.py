"""Stream processing benchmark: moldau's cluster beside one plain Python loop and bytewax.

Starts its own JobManager and one TaskManager with 2 slots, then runs over N generated
words (Zipf-like over 10,000 distinct; event ``i`` is ``WORDS[i % 65536]`` of a word list
drawn once from a fixed seed, so every system sees the same words):

- (a) stateless: sequence source -> map(i -> word) -> filter -> discarding sink;
- (b) keyed running count: sequence source -> map(i -> (word, 1)) -> key_by(word) -> sum
  -> discarding sink;

at parallelism 1 and 2 through ``moldau run -p N`` (submission to FINISHED, wall clock; the
job's own duration from REST ``/jobs/<jid>``), with the peak RSS (VmHWM) of the JobManager,
the TaskManager and its slot processes. The same computations as one plain Python loop
(inlined: the interpreter's ceiling on one core) and in bytewax (``pip install bytewax``;
one worker). The sinks check the results: (a) the number of words that passed the filter,
(b) the final running count of the most frequent word, against the plain loop's.
Last, the latency of events at 1,000/s through one shuffle (p50/p99, event creation to
sink).

Targets are printed beside the figures, never asserted.

Usage: python bench/stream_keyed.py [--events N] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

SEED = 20260
MASK = 65535  # the word list's length - 1
CHECK_WORD = "w0"  # the most frequent word


def make_words(seed: int, n: int = MASK + 1, distinct: int = 10_000) -> list[str]:
    """The word list, Zipf-like (weight 1/rank) over ``distinct`` words."""
    import random

    rng = random.Random(seed)
    vocab = [f"w{r}" for r in range(distinct)]
    return rng.choices(vocab, weights=[1.0 / (r + 1) for r in range(distinct)], k=n)


def keep(w: str) -> bool:
    """The filter of (a): drops the words ending in 7 (about a tenth of the vocabulary)."""
    return not w.endswith("7")


JOB = '''
import sys
import time

from moldau.clients.stream import StreamExecutionEnvironment
from moldau.clients.stream.connectors import SourceFunction
from moldau.clients.stream.functions import KeyedProcessFunction, MapFunction, SinkFunction

MASK = {mask}
CHECK_WORD = {check!r}

{make_words}

{keep}


class ToWord(MapFunction):
    def __init__(self, words):
        self.words = words

    def map(self, i):
        return self.words[i & MASK]


class ToPair(ToWord):
    def map(self, i):
        return (self.words[i & MASK], 1)


class CountingSink(SinkFunction):
    """Discards its input; prints how many records it saw when it closes."""

    def __init__(self):
        self.n = 0

    def invoke(self, value, context):
        self.n += 1

    def close(self):
        i = self.get_runtime_context().get_index_of_this_subtask()
        print(f"BENCH-CHECK a {{i}} {{self.n}}", flush=True)


class LastCountSink(SinkFunction):
    """Discards its input; prints the last running count of CHECK_WORD when it closes."""

    def __init__(self):
        self.last = 0

    def invoke(self, value, context):
        if value[0] == CHECK_WORD:
            self.last = value[1]

    def close(self):
        i = self.get_runtime_context().get_index_of_this_subtask()
        print(f"BENCH-CHECK b {{i}} {{self.last}}", flush=True)


class Paced(SourceFunction):
    """The latency run's source: event i leaves at start + i / rate, stamped then (its own
    thread: the sleeping never holds up the task's event loop)."""

    def __init__(self, n, rate):
        self.n, self.rate = n, rate
        self.running = True

    def run(self, ctx):
        start = time.time()
        for i in range(self.n):
            if not self.running:
                return
            delay = start + i / self.rate - time.time()
            if delay > 0:
                time.sleep(delay)
            ctx.collect((str(i % 100), time.time()))

    def cancel(self):
        self.running = False


class Latency(KeyedProcessFunction):
    def process_element(self, value, ctx):
        yield time.time() - value[1]


class LatencySink(SinkFunction):
    def __init__(self):
        self.lat = []

    def invoke(self, value, context):
        self.lat.append(value)

    def close(self):
        i = self.get_runtime_context().get_index_of_this_subtask()
        print(f"BENCH-LAT {{i}} " + ",".join(f"{{x:.6f}}" for x in self.lat), flush=True)


def main():
    mode, n = sys.argv[1], int(sys.argv[2])
    env = StreamExecutionEnvironment.get_execution_environment()
    words = make_words({seed})
    if mode == "a":
        (env.generate_sequence(0, n - 1).map(ToWord(words)).filter(keep)
         .add_sink(CountingSink()))
    elif mode == "b":
        (env.generate_sequence(0, n - 1).map(ToPair(words)).key_by(lambda t: t[0]).sum(1)
         .add_sink(LastCountSink()))
    else:
        env.set_buffer_timeout(1)
        (env.add_source(Paced(n, int(sys.argv[3]))).key_by(lambda t: t[0]).process(Latency())
         .add_sink(LatencySink()))
    env.execute(f"bench-{{mode}}")


if __name__ == "__main__":
    main()
'''


# --------------------------------------------------------------------------------- processes


def spawn(args: list[str], log: Path, ready: str, timeout: float = 30) -> subprocess.Popen[bytes]:
    f = open(log, "ab")  # noqa: SIM115 - owned by the child
    p = subprocess.Popen(args, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         start_new_session=True)
    f.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready in log.read_text(errors="replace"):
            return p
        if p.poll() is not None:
            raise RuntimeError(f"{args} exited: {log.read_text()[-2000:]}")
        time.sleep(0.05)
    raise RuntimeError(f"{args} not ready after {timeout} s: {log.read_text()[-2000:]}")


def stop(p: subprocess.Popen[bytes]) -> None:
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def status_kb(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def children(ppid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        # the comm field may hold spaces: the ppid is the second field after its ')'
        if int(stat.rsplit(")", 1)[1].split()[1]) == ppid:
            out.append(int(d))
    return out


class PeakRss:
    """Samples VmHWM of the JobManager, the TaskManager and the TaskManager's children
    (slot processes, which exit when their job ended) until stopped."""

    def __init__(self, jm: int, tm: int) -> None:
        self.jm, self.tm = jm, tm
        self.slots: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        for pid in children(self.tm):
            hwm = status_kb(pid, "VmHWM")
            if hwm:
                self.slots[pid] = max(self.slots.get(pid, 0), hwm)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self._sample()

    def __enter__(self) -> PeakRss:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def text(self) -> str:
        # a slot process exits after its job: the fresh one that replaces it is listed too
        slots = "+".join(f"{v / 1024:.0f}" for v in sorted(self.slots.values(), reverse=True))
        return (f"peak RSS MB: JM {status_kb(self.jm, 'VmHWM') / 1024:.0f}, "
                f"TM {status_kb(self.tm, 'VmHWM') / 1024:.0f}, slot processes {slots or '-'}")


class Cluster:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []
        self.rest = ""
        self.tm_out = tmp / "tm" / "taskmanager.out"

    def start(self) -> None:
        py = sys.executable
        (self.tmp / "jm").mkdir()
        (self.tmp / "tm").mkdir()
        jm_log = self.tmp / "jm.log"
        jm = spawn([py, "-m", "moldau.jobmanager", "--rpc", "127.0.0.1:0", "--rest",
                    "127.0.0.1:0", "--data-dir", str(self.tmp / "jm")], jm_log, "rest on")
        self.procs.append(jm)
        text = jm_log.read_text()
        rpc = re.search(r"ready on (\S+)", text).group(1)  # type: ignore[union-attr]
        self.rest = re.search(r"rest on (\S+)", text).group(1)  # type: ignore[union-attr]
        tm = spawn([py, "-m", "moldau.taskmanager", "--jobmanager", rpc, "--slots", "2",
                    "--data-dir", str(self.tmp / "tm")], self.tmp / "tm.log", "ready on")
        self.procs.append(tm)
        deadline = time.monotonic() + 20
        while self.overview().get("taskmanagers", 0) < 1 and time.monotonic() < deadline:
            time.sleep(0.1)

    def overview(self) -> dict[str, object]:
        with urllib.request.urlopen(f"http://{self.rest}/overview", timeout=5) as r:
            return json.loads(r.read())  # type: ignore[no-any-return]

    def job(self, jid: str) -> dict[str, object]:
        with urllib.request.urlopen(f"http://{self.rest}/jobs/{jid}", timeout=5) as r:
            return json.loads(r.read())  # type: ignore[no-any-return]

    def stop(self) -> None:
        for p in reversed(self.procs):
            stop(p)

    def run(self, script: Path, p: int, args: list[str]) -> tuple[float, float, str, str]:
        """Submits and waits: (wall seconds, job duration seconds, peak RSS text, the new
        lines of the TaskManager's stdout)."""
        before = self.tm_out.stat().st_size if self.tm_out.exists() else 0
        cmd = [sys.executable, "-c", "import sys; from moldau.clients.cli.main import main; "
               "sys.exit(main())", "run", "-m", self.rest, "-p", str(p),
               str(script), *args]
        with PeakRss(self.procs[0].pid, self.procs[1].pid) as rss:
            t = time.perf_counter()
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            wall = time.perf_counter() - t
        if out.returncode != 0:
            raise RuntimeError(f"moldau run failed:\n{out.stdout}\n{out.stderr}")
        jid = re.search(r"JobID (\w+)", out.stdout).group(1)  # type: ignore[union-attr]
        duration = int(self.job(jid).get("duration") or 0) / 1000  # type: ignore[call-overload]
        time.sleep(0.3)  # the slot's stdout reaches the file through the TaskManager
        with open(self.tm_out, "rb") as f:
            f.seek(before)
            new = f.read().decode(errors="replace")
        return wall, duration, rss.text(), new


# --------------------------------------------------------------------------------- baselines


def plain_a(words: list[str], n: int) -> int:
    passed = 0
    for i in range(n):
        w = words[i & MASK]
        if not w.endswith("7"):
            passed += 1  # the sink
    return passed


def plain_b(words: list[str], n: int) -> int:
    counts: dict[str, int] = {}
    last = 0
    for i in range(n):
        w = words[i & MASK]
        c = counts.get(w, 0) + 1
        counts[w] = c
        if w == CHECK_WORD:  # the sink
            last = c
    return last


def bytewax_run(words: list[str], n: int, mode: str) -> int:
    import bytewax.operators as op
    from bytewax.dataflow import Dataflow
    from bytewax.outputs import DynamicSink, StatelessSinkPartition
    from bytewax.testing import TestingSource, run_main

    result = [0]

    class Part(StatelessSinkPartition):  # type: ignore[type-arg]
        def write_batch(self, items: list[object]) -> None:
            if mode == "a":
                result[0] += len(items)
            else:
                for k, c in items:  # type: ignore[misc]
                    if k == CHECK_WORD:
                        result[0] = c

    class Sink(DynamicSink):  # type: ignore[type-arg]
        def build(self, step_id: str, worker_index: int, worker_count: int) -> Part:
            return Part()

    def count(state: int | None, _v: int) -> tuple[int, int]:
        c = (state or 0) + 1
        return c, c

    flow = Dataflow(f"bench-{mode}")
    s = op.input("in", flow, TestingSource(range(n), batch_size=1000))
    if mode == "a":
        w = op.map("word", s, lambda i: words[i & MASK])
        op.output("out", op.filter("keep", w, keep), Sink())
    else:
        pairs = op.map("pair", s, lambda i: (words[i & MASK], 1))
        keyed = op.key_on("key", pairs, lambda t: t[0])
        counted = op.stateful_map("sum", op.map("v", keyed, lambda kv: (kv[0], kv[1][1])),
                                  count)
        op.output("out", counted, Sink())
    run_main(flow)
    return result[0]


# --------------------------------------------------------------------------------- main


def check_line(new: str, mode: str) -> list[int]:
    return [int(m.group(1)) for m in re.finditer(rf"BENCH-CHECK {mode} \d+ (\d+)", new)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=2_000_000)
    ap.add_argument("--quick", action="store_true", help="200,000 events")
    ap.add_argument("--latency-secs", type=int, default=10)
    a = ap.parse_args()
    n = 200_000 if a.quick else a.events
    words = make_words(SEED)
    print(f"{n:,} events, 10,000 distinct words (Zipf-like), {os.cpu_count()} cores",
          flush=True)

    rates: dict[str, float] = {}

    def show(name: str, secs: float, extra: str = "") -> None:
        rates[name] = n / secs
        print(f"  {name:<34} {n / secs:>12,.0f} events/s  {secs:7.2f} s  {extra}", flush=True)

    print("plain Python loop (one core, inlined; a = map+filter, b = keyed count)")
    t = time.perf_counter()
    expect_a = plain_a(words, n)
    show("plain a", time.perf_counter() - t, f"passed {expect_a:,}")
    t = time.perf_counter()
    expect_b = plain_b(words, n)
    show("plain b", time.perf_counter() - t,
         f"count({CHECK_WORD}) {expect_b:,}")

    try:
        import bytewax  # noqa: F401
        have_bytewax = True
    except ImportError:
        have_bytewax = False
    if have_bytewax:
        print("bytewax (one worker, run_main, source batches of 1,000)")
        for mode, expect in (("a", expect_a), ("b", expect_b)):
            t = time.perf_counter()
            got = bytewax_run(words, n, mode)
            show(f"bytewax {mode}", time.perf_counter() - t,
                 f"check {got:,} {'ok' if got == expect else f'WRONG, expected {expect:,}'}")
    else:
        print("bytewax: not installed (pip install bytewax), skipped")

    tmp = Path(tempfile.mkdtemp(prefix="moldau-bench-stream-"))
    cluster = Cluster(tmp)
    try:
        cluster.start()
        jobdir = tmp / "job"
        jobdir.mkdir()
        script = jobdir / "bench_job.py"
        script.write_text(JOB.format(mask=MASK, check=CHECK_WORD, seed=SEED,
                                     make_words=inspect.getsource(make_words),
                                     keep=inspect.getsource(keep)))
        print("moldau (JobManager + 1 TaskManager with 2 slots; wall = moldau run, from "
              "submission to FINISHED; job = its REST duration)", flush=True)
        for mode, expect in (("a", expect_a), ("b", expect_b)):
            for p in (1, 2):
                wall, dur, rss, new = cluster.run(script, p, [mode, str(n)])
                got = check_line(new, mode)
                value = sum(got) if mode == "a" else max(got, default=-1)
                ok = "ok" if value == expect and len(got) == p else \
                    f"WRONG: {got}, expected {expect:,}"
                show(f"moldau {mode} p{p}", wall,
                     f"job {n / dur:,.0f}/s in {dur:.2f} s; check {ok}; {rss}")
        rate, secs = 1000, a.latency_secs
        _, _, _, new = cluster.run(script, 2, ["lat", str(rate * secs), str(rate)])
        lat = sorted(float(x) for m in re.finditer(r"BENCH-LAT \d+ ([\d.,]*)", new)
                     for x in m.group(1).split(",") if x)
        if lat:
            def pct(q: float) -> float:
                return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000
            print(f"  latency at {rate:,} events/s through one shuffle (p1 source -> key_by "
                  f"-> p2), {len(lat):,} events: p50 {pct(0.5):.1f} ms, p99 {pct(0.99):.1f} "
                  f"ms, max {lat[-1] * 1000:.1f} ms (target p99 <= 150 ms)")
        else:
            print("  latency: no samples")
    finally:
        cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    def ratio(x: str, y: str) -> str:
        if x in rates and y in rates:
            return f"{rates[x] / rates[y]:.2f}"
        return "-"

    print("targets (not asserted)")
    for m in ("a", "b"):
        print(f"  {m}: p1 / plain loop {ratio(f'moldau {m} p1', f'plain {m}'):>6} "
              f"(target >= 0.50);  p2 / p1 {ratio(f'moldau {m} p2', f'moldau {m} p1'):>6} "
              f"(target >= 1.7);  p1, p2 / bytewax {ratio(f'moldau {m} p1', f'bytewax {m}')}, "
              f"{ratio(f'moldau {m} p2', f'bytewax {m}')} (target >= 5)")
    sp2 = rates.get("moldau a p2", 0.0)
    print(f"  stateless p2 {sp2:,.0f} events/s (target >= 300,000)")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
