"""Buffers of more than 2**31 elements: 64-bit indexing end to end (the
Python wrapper, bind(), run_segments' partitions, the kernels' loops and the
MSE block reduction).

Memory: np.zeros maps untouched pages to the kernel's shared zero page, so a
buffer that is only read costs no RAM except the few pages we write into. The
MSE test therefore needs almost nothing; the SGD test writes its parameter
(2**31 + 33 float32 = 8.6 GB resident) and runs only when that much memory is
available.
"""

import numpy as np
import pytest

import optcore
import optcore.reference as reference

N = 2**31 + 33
# indices that a 32-bit int would wrap or truncate
PROBES = np.array([0, 5, 2**31 - 17, 2**31 - 1, 2**31, 2**31 + 1, N - 16, N - 1])


def _available_bytes():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _window(a, i):
    return slice(max(i - 8, 0), min(i + 8, a.size))


pytestmark = pytest.mark.slow


def test_mse_loss_over_more_than_2_31_elements():
    pred = np.zeros(N, np.float32)
    target = np.zeros(N, np.float32)
    rng = np.random.default_rng(0)
    expected = 0.0
    for i in PROBES:
        pred[i], target[i] = rng.standard_normal(2)
        d = np.float64(pred[i] - target[i])       # the kernel's d is float32, squared in double
        expected += d * d
    for threads in (1, 2):
        optcore.set_num_threads(threads)
        try:
            total = optcore.mse_loss(pred, target, reduction="sum")
            mean = optcore.mse_loss(pred, target, reduction="mean")
        finally:
            optcore.set_num_threads(None)
        assert total == pytest.approx(expected, rel=1e-15)
        assert mean == pytest.approx(expected / N, rel=1e-15)


@pytest.mark.skipif(_available_bytes() < 12 * 2**30,
                    reason="needs ~9 GB of free memory (an 8.6 GB parameter buffer)")
def test_sgd_step_over_more_than_2_31_elements():
    param = np.zeros(N, np.float32)
    grad = np.zeros(N, np.float32)                 # read only: stays on the zero page
    rng = np.random.default_rng(1)
    for i in PROBES:
        w = _window(param, i)
        param[w] = rng.standard_normal(param[w].size)
        grad[w] = rng.standard_normal(grad[w].size)
    hp = dict(step=1, lr=0.25, weight_decay=0.5)   # decay moves every touched element
    expected = {}
    for i in PROBES:
        w = _window(param, i)
        p, g = param[w].copy(), grad[w].copy()
        reference.sgd_step(p, g, **hp)
        expected[int(i)] = p
    optcore.sgd_step(param, grad, **hp)
    for i in PROBES:
        w = _window(param, i)
        assert param[w].tobytes() == expected[int(i)].tobytes(), i
    assert param[1000] == 0.0 and param[2**31 - 1000] == 0.0
