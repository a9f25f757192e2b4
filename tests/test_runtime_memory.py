"""No leaks: a million small calls and a thousand large ones -- every kernel,
valid calls and calls that raise -- leave RSS and tracemalloc flat.

Bounds (stated here, checked below):
  * 1,000,000 small calls: RSS grows by less than 8 MB (a leak of 8 bytes per
    call would exceed it; any real allocation is larger);
  * 100,000 small calls under tracemalloc: traced memory grows by less than
    64 KB (one leaked block per call would be > 1.6 MB);
  * 1,000 large calls on 2**20-element buffers (mse_grad allocating its
    4-8 MB output each time): RSS grows by less than 64 MB (one leaked output
    or kept view per call would be gigabytes).
"""

import gc
import os
import tracemalloc

import numpy as np
import pytest

from registry import KERNELS, make_buffers, typical_hyper

SMALL_CALLS = 1_000_000
TRACED_CALLS = 100_000
LARGE_CALLS = 1_000
RSS_SMALL_BOUND = 8 << 20
TRACED_BOUND = 64 << 10
RSS_LARGE_BOUND = 64 << 20


def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def workload(n, seed=0):
    """Closures over every kernel: one valid call per entry, and calls that
    raise (bad hyperparameter, wrong size in the last tensor, wrong dtype)."""
    rng = np.random.default_rng(seed)
    calls, count = [], 0
    for entry in KERNELS:
        hp = typical_hyper(entry)
        sizes = [n, n] if entry.multi else [n]
        bufs = make_buffers(entry, hp, rng, sizes, np.float32, as_list=entry.multi)
        fn = entry.fast

        def valid(entry=entry, bufs=bufs, hp=hp, fn=fn):
            entry.call(fn, bufs, hp)

        bad_hp = next((dict(hp, **{k: v}) for k, v in
                       (("step", 0), ("reduction", "bad"), ("norm_type", -1.0)) if k in hp),
                      None)
        last = [b.name for b in entry.buffers if bufs[b.name] is not None][-1]
        wrong_size = dict(bufs)
        wrong_dtype = dict(bufs)
        if entry.multi:
            wrong_size[last] = bufs[last][:-1] + [np.ones(n + 1, np.float32)]
            wrong_dtype[last] = bufs[last][:-1] + [np.ones(n, np.int32)]
        else:
            wrong_size[last] = np.ones(n + 1, np.float32)
            wrong_dtype[last] = np.ones(n, np.int32)

        cases = ((wrong_dtype, hp),) + (((bufs, bad_hp),) if bad_hp else ())
        if sum(v is not None for v in bufs.values()) > 1:     # sizes must agree
            cases += ((wrong_size, hp),)

        def raising(entry=entry, fn=fn, cases=cases):
            for b, h in cases:
                try:
                    entry.call(fn, b, h)
                except (TypeError, ValueError):
                    pass
                else:
                    raise AssertionError(f"{entry.name} accepted a bad call")

        calls += [valid, raising]
        count += 1 + len(cases)
    return calls, count                   # calls made by one pass over `calls`


def run(calls, per_pass, total):
    for _ in range(-(-total // per_pass)):
        for c in calls:
            c()


def test_million_small_calls_keep_rss_flat():
    calls, per_pass = workload(8)
    run(calls, per_pass, 50_000)                   # warm up allocator pools and caches
    gc.collect()
    before = rss()
    run(calls, per_pass, SMALL_CALLS)
    gc.collect()
    after = rss()
    print(f"\n{SMALL_CALLS} small calls: RSS {before / 2**20:.1f} MB -> "
          f"{after / 2**20:.1f} MB ({after - before:+d} bytes)")
    assert after - before < RSS_SMALL_BOUND


def test_small_calls_keep_tracemalloc_flat():
    calls, per_pass = workload(8, seed=1)
    run(calls, per_pass, 5_000)
    gc.collect()
    tracemalloc.start()
    try:
        run(calls, per_pass, 5_000)
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        run(calls, per_pass, TRACED_CALLS)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    print(f"\n{TRACED_CALLS} calls under tracemalloc: {after - before:+d} bytes")
    assert after - before < TRACED_BOUND


def test_thousand_large_calls_keep_rss_flat():
    calls, per_pass = workload(1 << 20, seed=2)
    run(calls, per_pass, 2 * per_pass)
    gc.collect()
    before = rss()
    run(calls, per_pass, LARGE_CALLS)
    gc.collect()
    after = rss()
    print(f"\n{LARGE_CALLS} large calls: RSS {before / 2**20:.1f} MB -> "
          f"{after / 2**20:.1f} MB ({after - before:+d} bytes)")
    assert after - before < RSS_LARGE_BOUND


def test_the_measurements_see_a_leak():
    # The same harness around a call that leaks 16 bytes per call (a kept
    # reference) fails both bounds: the tests above can fail.
    kept = []
    leak = [lambda: kept.append(bytes(16))]
    gc.collect()
    before = rss()
    run(leak, 1, SMALL_CALLS)
    assert rss() - before > RSS_SMALL_BOUND
    kept.clear()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        run(leak, 1, TRACED_CALLS)
        assert tracemalloc.get_traced_memory()[0] - before > TRACED_BOUND
    finally:
        tracemalloc.stop()
        kept.clear()
