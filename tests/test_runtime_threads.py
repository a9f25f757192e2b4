"""Thread control: optcore.get/set_num_threads, OMP_NUM_THREADS,
threadpoolctl.threadpool_limits, and the parallel threshold (docs/contract.md §7)."""

import os
import subprocess
import sys

import numpy as np
import pytest
import threadpoolctl                 # a test dependency (pyproject's "test" extra)

import optcore
from support import random_array


@pytest.fixture(autouse=True)
def _restore_thread_settings():
    threshold = optcore.get_parallel_threshold()
    yield
    optcore.set_num_threads(None)
    optcore.set_parallel_threshold(threshold)


def test_set_and_get_num_threads():
    default = optcore.get_num_threads()
    assert default >= 1
    for n in (1, 2, 3, 7):
        optcore.set_num_threads(n)
        assert optcore.get_num_threads() == n
    optcore.set_num_threads(None)
    assert optcore.get_num_threads() == default
    optcore.set_num_threads(2)
    optcore.set_num_threads(0)                # 0 also means "follow OpenMP"
    assert optcore.get_num_threads() == default


@pytest.mark.parametrize("bad", [-1, -8])
def test_negative_num_threads_is_refused(bad):
    optcore.set_num_threads(2)
    with pytest.raises(ValueError, match="num_threads"):
        optcore.set_num_threads(bad)
    assert optcore.get_num_threads() == 2


def test_parallel_threshold():
    old = optcore.get_parallel_threshold()
    assert old > 0
    assert optcore.set_parallel_threshold(1000) == old
    assert optcore.get_parallel_threshold() == 1000
    with pytest.raises(ValueError, match="threshold"):
        optcore.set_parallel_threshold(-1)
    assert optcore.get_parallel_threshold() == 1000


def _num_threads_in_subprocess(env_update, code="print(optcore.get_num_threads())"):
    env = dict(os.environ)
    env.update(env_update)
    # The subprocess must import the same optcore as this process (an in-place
    # build or the installed package), not a source tree without compiled
    # modules that happens to be the working directory: run it from there.
    root = os.path.dirname(os.path.dirname(os.path.abspath(optcore.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(
        [root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    res = subprocess.run([sys.executable, "-c", "import optcore\n" + code], env=env,
                         cwd=root, capture_output=True, text=True, timeout=60, check=True)
    return res.stdout.split()


@pytest.mark.skipif(not optcore.openmp_enabled(), reason="built without OpenMP")
@pytest.mark.parametrize("n", ["1", "3"])
def test_omp_num_threads_is_honoured(n):
    assert _num_threads_in_subprocess({"OMP_NUM_THREADS": n}) == [n]


@pytest.mark.skipif(not optcore.openmp_enabled(), reason="built without OpenMP")
def test_omp_num_threads_then_own_setting():
    # An explicit set_num_threads wins over OpenMP's setting; None goes back.
    out = _num_threads_in_subprocess(
        {"OMP_NUM_THREADS": "1"},
        "optcore.set_num_threads(2); a = optcore.get_num_threads()\n"
        "optcore.set_num_threads(None); print(a, optcore.get_num_threads())")
    assert out == ["2", "1"]


@pytest.mark.skipif(not optcore.openmp_enabled(), reason="built without OpenMP")
def test_threadpoolctl_limits_take_effect():
    optcore.set_num_threads(None)
    before = optcore.get_num_threads()
    with threadpoolctl.threadpool_limits(1, user_api="openmp"):
        assert optcore.get_num_threads() == 1
        # optcore's own explicit setting still takes precedence...
        optcore.set_num_threads(2)
        assert optcore.get_num_threads() == 2
        # ...and None follows the limit again.
        optcore.set_num_threads(None)
        assert optcore.get_num_threads() == 1
    assert optcore.get_num_threads() == before


@pytest.mark.skipif(not optcore.openmp_enabled(), reason="built without OpenMP")
def test_threadpoolctl_sees_optcore_openmp():
    apis = {info["user_api"] for info in threadpoolctl.threadpool_info()}
    assert "openmp" in apis


def test_limits_do_not_change_results(rng):
    # Under a threadpoolctl limit the kernels still compute the same bits.
    n = 4 * optcore.get_parallel_threshold() + 1
    p0, g = random_array(rng, n, np.float32), random_array(rng, n, np.float32)
    m0, v0 = random_array(rng, n, np.float32), random_array(rng, n, np.float32, positive=True)
    results = []
    for limit in (1, None):
        p, m, v = p0.copy(), m0.copy(), v0.copy()
        with threadpoolctl.threadpool_limits(limit, user_api="openmp"):
            optcore.adam_step(p, g, m, v, step=3, lr=0.01)
        results.append(p.tobytes() + m.tobytes() + v.tobytes())
    assert results[0] == results[1]


def test_every_element_is_updated_when_openmp_gives_fewer_threads():
    # OMP_THREAD_LIMIT=1 caps the team below the 2 threads optcore asks for:
    # the partitions of the threads that never start must still be computed.
    code = (
        "import numpy as np; optcore.set_num_threads(2)\n"
        "n = 4 * optcore.get_parallel_threshold() + 5\n"
        "p = np.zeros(n, np.float32); g = np.ones(n, np.float32)\n"
        "optcore.sgd_step(p, g, step=1, lr=1.0)\n"
        "m = [np.zeros(n, np.float32)]; v = [np.ones(n, np.float32)]\n"
        "q = [np.zeros(n, np.float32)]\n"
        "optcore.adam_step(q, [g], m, v, step=1, lr=1.0)\n"
        "print(int((p == -1).sum()) == n and int((q[0] != 0).sum()) == n)\n"
    )
    assert _num_threads_in_subprocess({"OMP_THREAD_LIMIT": "1"}, code) == ["True"]


# -- dynamic threads: the fallback to the calling thread on a busy machine

def _large_adam(rng, threads):
    n = 4 * optcore.get_parallel_threshold() + 3
    p, g = random_array(rng, n, np.float32), random_array(rng, n, np.float32)
    m, v = random_array(rng, n, np.float32), random_array(rng, n, np.float32, positive=True)
    optcore.set_num_threads(threads)
    optcore.adam_step(p, g, m, v, step=2, lr=0.01)
    return p.tobytes() + m.tobytes() + v.tobytes()


@pytest.fixture()
def _dynamic_threads_restored():
    yield
    optcore.set_dynamic_threads(True)


def test_dynamic_threads_setting(_dynamic_threads_restored):
    assert optcore.get_dynamic_threads() is True          # the default
    optcore.set_dynamic_threads(False)
    assert optcore.get_dynamic_threads() is False
    optcore.set_dynamic_threads(True)
    assert optcore.get_dynamic_threads() is True


def test_dynamic_threads_off_from_the_environment():
    out = _num_threads_in_subprocess({"OPTCORE_DYNAMIC_THREADS": "0"},
                                     "print(optcore.get_dynamic_threads())")
    assert out == ["False"]


@pytest.mark.skipif(not optcore.openmp_enabled(), reason="built without OpenMP")
def test_a_fallback_runs_large_calls_on_the_calling_thread(_dynamic_threads_restored):
    # A late call starts a fallback; during it a 2-thread call runs on the
    # calling thread, with the same bits, and outside it in parallel again.
    from optcore.kernels import _runtime
    expected = _large_adam(np.random.default_rng(5), 1)
    before = _runtime._thread_stats()
    _runtime._force_fallback(60.0)
    assert _runtime._thread_stats()["falling_back"]
    assert _large_adam(np.random.default_rng(5), 2) == expected
    during = _runtime._thread_stats()
    assert during["fallback_calls"] == before["fallback_calls"] + 1
    assert during["parallel_calls"] == before["parallel_calls"]
    # turning dynamic threads off (or on again) ends a fallback
    optcore.set_dynamic_threads(False)
    assert not _runtime._thread_stats()["falling_back"]
    _runtime._force_fallback(60.0)
    assert _large_adam(np.random.default_rng(5), 2) == expected
    after = _runtime._thread_stats()
    assert after["fallback_calls"] == during["fallback_calls"]
    assert after["parallel_calls"] == during["parallel_calls"] + 1


@pytest.mark.skipif(not optcore.openmp_enabled(), reason="built without OpenMP")
def test_reductions_fall_back_too(_dynamic_threads_restored):
    from optcore.kernels import _runtime
    rng = np.random.default_rng(6)
    grads = [random_array(rng, 3 * optcore.get_parallel_threshold(), np.float64)
             for _ in range(3)]
    optcore.set_num_threads(1)
    expected = optcore.global_norm(grads)
    optcore.set_num_threads(2)
    before = _runtime._thread_stats()
    _runtime._force_fallback(60.0)
    assert optcore.global_norm(grads) == expected
    assert _runtime._thread_stats()["fallback_calls"] == before["fallback_calls"] + 1
    optcore.set_dynamic_threads(True)                    # ends the fallback
    assert optcore.global_norm(grads) == expected
    assert _runtime._thread_stats()["parallel_calls"] > before["parallel_calls"]


def test_late_calls_are_repaid_before_the_fallback_shortens(_dynamic_threads_restored):
    # A late call falls back for 20 times its wait (at least 1 ms, four times
    # the last fallback while calls stay late, at most 1 s). Its lost time is a
    # debt: prompt calls repay it with what they saved against the calling
    # thread doing the whole call at its own rate (or add what they lost)
    # before the next fallback halves.
    from optcore.kernels import _runtime
    ms = 1_000_000
    us = 1_000
    optcore.set_dynamic_threads(True)                       # no backoff, no debt
    _runtime._note_call(0, 50 * us, 150 * us)               # worked 50 us, waited 100: late
    stats = _runtime._thread_stats()
    assert stats["backoff_ns"] == 2 * ms and stats["debt_ns"] == 100 * us
    _runtime._note_call(0, 50 * us, 150 * us)               # late again: four times longer
    stats = _runtime._thread_stats()
    assert stats["backoff_ns"] == 8 * ms and stats["debt_ns"] == 200 * us
    _runtime._note_call(0, 100 * us, 20 * ms)               # waited 19.9 ms: 20 times that
    stats = _runtime._thread_stats()
    assert stats["backoff_ns"] == 398 * ms and stats["debt_ns"] == 20 * ms + 100 * us
    for _ in range(10):            # half the chunks in 1 ms, the call in 1 ms: saved 1 ms
        _runtime._note_call(0, ms, ms, 1, 2)
    stats = _runtime._thread_stats()
    assert stats["backoff_ns"] == 398 * ms and stats["debt_ns"] == 10 * ms + 100 * us
    # a prompt call that saved nothing (all 8 chunks, the team arrived 0.5 ms
    # later) adds its loss
    _runtime._note_call(0, ms, ms + ms // 2, 8, 8)
    assert _runtime._thread_stats()["debt_ns"] == 10 * ms + 600 * us
    for _ in range(10):
        _runtime._note_call(0, ms, ms, 1, 2)
    stats = _runtime._thread_stats()
    assert stats["backoff_ns"] == 398 * ms and stats["debt_ns"] == 600 * us
    _runtime._note_call(0, ms, ms, 1, 2)                    # repaid: the fallback halves
    stats = _runtime._thread_stats()
    assert stats["debt_ns"] == 0 and stats["backoff_ns"] == 199 * ms
    assert not stats["falling_back"]           # (the stamps lie in the past)
    _runtime._note_call(0, 100 * ms, 200 * ms)   # waited as long as it worked: prompt
    assert _runtime._thread_stats()["late_calls"] == stats["late_calls"]
    _runtime._note_call(0, ms, 101 * ms)         # waited 100 ms: at most 1 s
    assert _runtime._thread_stats()["backoff_ns"] == 1000 * ms
