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
