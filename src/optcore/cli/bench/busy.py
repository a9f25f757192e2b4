"""The busy-machine section: one kernel call after another, timed one by one,
on an idle machine and with cores kept busy by processes the section starts
and stops itself.

On a busy machine a parallel call waits for its slowest thread, so its mean
(not its median) is what a training loop pays; the section reports mean,
median and 90th percentile per call, for one thread and for all threads with
dynamic threads on and off (``optcore.set_dynamic_threads``).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np

import optcore
from optcore.kernels import _runtime

from optcore.cli.bench.report import fmt_time, fmt_x, table

if TYPE_CHECKING:
    from _typeshed import SupportsWrite

    from optcore._typing import JSONDict

SIZE = 2 ** 20
# a core kept busy: a Python loop that never sleeps, in its own process
_SPIN = "while True:\n    pass\n"


@contextmanager
def busy_cores(count: int) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``count`` processes spinning for as long as the block runs (given to
    the block; all of them have ended when it is left)."""
    procs = [subprocess.Popen([sys.executable, "-c", _SPIN]) for _ in range(count)]
    try:
        time.sleep(0.2)                 # let the scheduler see them
        yield procs
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


def _time_calls(calls: int, threads: int, dynamic: bool) -> JSONDict:
    rng = np.random.default_rng(0)
    p, g = (rng.standard_normal(SIZE).astype(np.float32) for _ in range(2))
    m, v = np.zeros_like(p), np.zeros_like(p)
    old_dynamic = optcore.get_dynamic_threads()
    optcore.set_num_threads(threads)
    optcore.set_dynamic_threads(dynamic)
    try:
        for step in range(1, max(10, calls // 20) + 1):   # warm-up
            optcore.adam_step(p, g, m, v, step=step, lr=1e-6)
        before = _runtime._thread_stats()
        clock = time.perf_counter_ns
        times = np.empty(calls)
        for i in range(calls):
            t = clock()
            optcore.adam_step(p, g, m, v, step=i + 1, lr=1e-6)
            times[i] = clock() - t
        after = _runtime._thread_stats()
    finally:
        optcore.set_num_threads(None)
        optcore.set_dynamic_threads(old_dynamic)
    times *= 1e-9
    return {"threads": threads, "dynamic": dynamic, "calls": calls,
            "mean_s": float(times.mean()), "median_s": float(np.median(times)),
            "p90_s": float(np.percentile(times, 90)),
            "late_calls": int(after["late_calls"]) - int(before["late_calls"]),
            "fallback_calls": int(after["fallback_calls"]) - int(before["fallback_calls"])}


def measure_busy(threads: int, calls: int, busy: int = 1) -> JSONDict:
    """adam_step on SIZE float32 elements, ``calls`` calls per case: idle and
    with ``busy`` cores kept busy; one thread, then ``threads`` threads with
    dynamic threads off and on."""
    cases = [(1, True), (threads, False), (threads, True)]
    out: JSONDict = {"kernel": "adam", "n": SIZE, "threads": threads, "busy_cores": busy,
                     "idle": [], "busy": []}
    for c in cases:
        out["idle"].append(_time_calls(calls, *c))
    with busy_cores(busy):
        for c in cases:
            out["busy"].append(_time_calls(calls, *c))
    return out


def ratios(section: JSONDict) -> dict[str, float]:
    """The section's two figures of merit: under load, the mean of a
    multi-threaded call (dynamic threads on) over one thread's; idle, one
    thread's mean over the multi-threaded mean (the speed-up)."""
    def mean(load: str, threads: int, dynamic: bool) -> float:
        row = next(r for r in section[load]
                   if r["threads"] == threads and r["dynamic"] == dynamic)
        return float(row["mean_s"])
    nt = section["threads"]
    return {"busy_over_single": mean("busy", nt, True) / mean("busy", 1, True),
            "idle_speedup": mean("idle", 1, True) / mean("idle", nt, True)}


def print_busy(section: JSONDict, out: SupportsWrite[str]) -> None:
    out.write(f"\nbusy machine: {section['kernel']} on {section['n']} float32 elements, "
              f"each call timed; idle, then with {section['busy_cores']} core(s) kept "
              "busy by a spinning process\n")
    rows = []
    for load in ("idle", "busy"):
        for r in section[load]:
            rows.append([load, r["threads"], "on" if r["dynamic"] else "off",
                         fmt_time(r["mean_s"]), fmt_time(r["median_s"]),
                         fmt_time(r["p90_s"]), r["late_calls"], r["fallback_calls"]])
    table(["load", "thr", "dynamic", "mean", "median", "p90", "late calls",
           "fallback calls"], rows, out)
    r = ratios(section)
    out.write(f"  busy: {section['threads']}-thread mean / 1-thread mean "
              f"{r['busy_over_single']:.2f}; idle: {fmt_x(r['idle_speedup'])} faster "
              "than one thread\n")


def default_calls(quick: bool) -> int:
    return 400 if quick else 2000


__all__: Sequence[str] = ("busy_cores", "measure_busy", "ratios", "print_busy",
                          "default_calls")
