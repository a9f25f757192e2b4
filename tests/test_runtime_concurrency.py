"""Kernels and Python threads / processes: the GIL is released, concurrent
callers get exactly the serial results, OpenMP teams inside Python threads stay
bounded, and fork / spawn / forkserver children work (never hang)."""

import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import optcore
from registry import (OPTIMIZER_CLASSES, OPTIMIZER_STEPS, hyper_variants,
                          make_buffers, run_steps)


def _inside(ticks, intervals):
    """How many main-thread ticks fall strictly inside the worker's calls."""
    ticks = np.asarray(ticks)
    return sum(int(((ticks > lo) & (ticks < hi)).sum()) for lo, hi in intervals)


def _progress_during(call, repeats=3):
    """Run ``call`` in a worker thread ``repeats`` times while this thread
    records loop iterations; return how many iterations fell inside a call.

    The switch interval is made huge, so the worker is never preempted between
    reading the clock and entering ``call``: the main thread can tick inside a
    call only if ``call`` itself releases the GIL (the main loop gives the GIL
    back at every iteration through sleep(0)).
    """
    intervals, done, started = [], threading.Event(), threading.Event()

    def worker():
        started.set()
        for _ in range(repeats):
            t0 = time.perf_counter()
            call()
            intervals.append((t0, time.perf_counter()))
        done.set()

    old = sys.getswitchinterval()
    sys.setswitchinterval(100.0)
    try:
        th = threading.Thread(target=worker)
        ticks = []
        th.start()
        started.wait()
        while not done.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0)
        th.join()
    finally:
        sys.setswitchinterval(old)
    return _inside(ticks, intervals)


def test_kernels_release_the_gil():
    n = 1 << 23
    rng = np.random.default_rng(0)
    p, g = rng.standard_normal(n, dtype=np.float32), rng.standard_normal(n, dtype=np.float32)
    m, v = np.zeros(n, np.float32), np.ones(n, np.float32)
    optcore.set_num_threads(1)                   # one core kernel, one core Python
    try:
        adam = _progress_during(lambda: optcore.adam_step(p, g, m, v, step=1))
        sgd = _progress_during(lambda: optcore.sgd_step(p, g, m, step=2, lr=0.1,
                                                          momentum=0.9))
        mse = _progress_during(lambda: optcore.mse_loss_grad(p, g, out=m))
    finally:
        optcore.set_num_threads(None)
    # Control: a C call that keeps the GIL (bytes.count) lets no tick through,
    # so the measurement tells the two apart.
    blob = bytes(200_000_000)
    held = _progress_during(lambda: blob.count(b"\x01"))
    assert held == 0
    assert adam > 0 and sgd > 0 and mse > 0, (adam, sgd, mse)


def _optimizer_run(entry, hp, seed, threads=None):
    rng = np.random.default_rng(seed)
    # above the parallel threshold, so every call starts an OpenMP team
    bufs = make_buffers(entry, hp, rng, [40_000, 3, 70_001], np.float32, as_list=True)
    results = run_steps(entry, bufs, hp, steps=20)
    return bufs, results


def _in_threads(fn, n):
    """Run fn(i) for i < n in n threads started together; return the results."""
    out, errors = [None] * n, []
    barrier = threading.Barrier(n)

    def run(i):
        try:
            barrier.wait()
            out[i] = fn(i)
        except BaseException as exc:       # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return out


def _train(name, kwargs, seed, steps=15):
    rng = np.random.default_rng(seed)
    # one tensor above the parallel threshold: every step starts an OpenMP team
    params = [rng.standard_normal(s).astype(np.float32) for s in ((200, 300), (7,), (33,))]
    opt = getattr(optcore, name)(params, **kwargs)
    for _ in range(steps):
        opt.step([rng.standard_normal(p.shape).astype(np.float32) for p in params])
    return [p.tobytes() for p in params], opt.state_dict()


def test_eight_threads_stepping_distinct_optimizer_objects_match_serial():
    for first in range(0, len(OPTIMIZER_CLASSES), 8):        # every class, 8 threads at a time
        jobs = [OPTIMIZER_CLASSES[(first + i) % len(OPTIMIZER_CLASSES)] for i in range(8)]
        serial = [_train(name, kw, seed=i) for i, (name, kw) in enumerate(jobs)]
        concurrent = _in_threads(lambda i: _train(*jobs[i], seed=i), 8)
        for (name, _), (sp, ss), (cp, cs) in zip(jobs, serial, concurrent):
            assert sp == cp, name
            for idx, entry in ss["state"].items():
                for key, value in entry.items():
                    other = cs["state"][idx][key]
                    assert np.asarray(value).tobytes() == np.asarray(other).tobytes(), \
                        (name, idx, key)


def test_eight_threads_stepping_distinct_kernels_match_serial():
    jobs = [(e, hyper_variants(e)[0]) for e in OPTIMIZER_STEPS]
    jobs = [jobs[i % len(jobs)] for i in range(max(8, len(jobs)))]
    serial = [_optimizer_run(e, hp, seed=i) for i, (e, hp) in enumerate(jobs)]

    concurrent = _in_threads(lambda i: _optimizer_run(jobs[i][0], jobs[i][1], seed=i),
                             len(jobs))
    for i, ((sb, sr), (cb, cr)) in enumerate(zip(serial, concurrent)):
        for name in sb:
            if sb[name] is None:
                continue
            for a, b in zip(sb[name], cb[name]):
                assert a.tobytes() == b.tobytes(), (jobs[i], name)
        assert sr == cr


def test_losses_from_eight_threads_match_serial():
    rng = np.random.default_rng(3)
    data = [(rng.standard_normal(50_000 + i), rng.standard_normal(50_000 + i))
            for i in range(8)]
    serial = [optcore.mse_loss_grad(p, t) for p, t in data]
    out = [None] * 8

    def run(i):
        for _ in range(20):
            out[i] = optcore.mse_loss_grad(*data[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for (l1, g1), (l2, g2) in zip(serial, out):
        assert l1 == l2 and g1.tobytes() == g2.tobytes()


# ---- OpenMP inside Python threads ------------------------------------------------

def _os_threads():
    return len(os.listdir("/proc/self/task"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs /proc (Linux)")
@pytest.mark.skipif(not optcore.openmp_enabled(), reason="built without OpenMP")
@pytest.mark.parametrize("per_call", [None, 1])
def test_openmp_teams_in_python_threads_are_bounded(per_call):
    """Each Python thread that calls a large kernel gets its own OpenMP team of
    get_num_threads() threads (the caller plus n - 1 workers), so P Python
    threads use at most P * n OS threads -- bounded, never growing with the
    number of calls or of successive thread generations. With
    set_num_threads(1) no worker thread is started at all."""
    nthreads, python_threads, generations = 3, 6, 4
    optcore.set_num_threads(per_call or nthreads)
    n_team = per_call or nthreads
    p = [np.ones(200_000, np.float32) for _ in range(python_threads)]
    g = np.ones(200_000, np.float32)
    peak, after = [], []
    try:
        optcore.sgd_step(p[0], g, step=1, lr=0.0)    # the main thread's own team
        baseline = _os_threads()
        for _ in range(generations):
            stop = threading.Event()
            counts = []

            def step(i):
                while not stop.is_set():
                    optcore.sgd_step(p[i], g, step=1, lr=0.0)

            threads = [threading.Thread(target=step, args=(i,)) for i in range(python_threads)]
            for t in threads:
                t.start()
            for _ in range(50):
                counts.append(_os_threads())
                time.sleep(0.002)
            stop.set()
            for t in threads:
                t.join()
            peak.append(max(counts))
            # a finished thread's team exits asynchronously: give it time
            for _ in range(500):
                if _os_threads() <= baseline:
                    break
                time.sleep(0.01)
            after.append(_os_threads())
    finally:
        optcore.set_num_threads(None)
    bound = baseline + python_threads * n_team
    assert max(peak) <= bound, (peak, bound)
    if per_call == 1:
        assert max(peak) <= baseline + python_threads
    # teams of finished Python threads are gone: no growth across generations
    assert max(after) <= baseline, (after, baseline)


# ---- processes ------------------------------------------------------------------------

CHILD = textwrap.dedent("""
    import multiprocessing as mp, sys
    import numpy as np
    import optcore

    def work(n):
        rng = np.random.default_rng(n)
        p, g = rng.standard_normal(n), rng.standard_normal(n)
        m, v = np.zeros(n), np.zeros(n)
        for s in range(1, 4):
            optcore.adam_step(p, g, m, v, step=s, lr=1e-2)
        return p.tobytes(), optcore.get_num_threads()

    if __name__ == "__main__":
        method, warm = sys.argv[1], sys.argv[2] == "1"
        n = 300_000
        optcore.set_num_threads(2)
        if warm:
            work(n)                   # OpenMP has run in the parent
        ctx = mp.get_context(method)
        with ctx.Pool(2) as pool:
            results = pool.map(work, [n] * 4)
        expected = work(n)[0]
        assert all(r[0] == expected for r in results), "results differ"
        print("threads in children:", sorted({r[1] for r in results}))
""")


@pytest.mark.parametrize("method,warm", [("fork", True), ("fork", False),
                                         ("spawn", True), ("forkserver", True)])
def test_multiprocessing_children_work_and_never_hang(method, warm, tmp_path):
    import multiprocessing
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"{method} not available here")
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    try:
        proc = subprocess.run([sys.executable, str(script), method, "1" if warm else "0"],
                              capture_output=True, text=True, timeout=120, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{method} child hung (OpenMP after fork)")
    assert proc.returncode == 0, proc.stderr
    line = proc.stdout.strip().splitlines()[-1]
    if method == "fork" and warm:
        # libgomp's pool cannot be used in a forked child: it runs on one thread
        assert line.endswith("[1]"), line
    else:
        assert line.endswith("[2]"), line
