"""The embedding API: a downstream Cython extension that cimports optcore's
kernels, and numba-jitted code calling them."""

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import optcore
from support import random_array, require_module

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_get_include_has_the_pxd_files():
    root = Path(optcore.get_include())
    for name in ("__init__", "sgd", "adam", "mse"):
        assert (root / "optcore" / "kernels" / f"{name}.pxd").is_file(), name


@pytest.fixture(scope="module")
def adam_loop(tmp_path_factory):
    """The Cython example, built against the optcore being tested."""
    require_module("Cython")
    build = tmp_path_factory.mktemp("embed")
    for name in ("adam_loop.pyx", "setup.py"):
        shutil.copy(EXAMPLES / "cython" / name, build / name)
    env = dict(os.environ)
    # The build must find the same optcore the tests import.
    env["PYTHONPATH"] = os.pathsep.join(
        [optcore.get_include()] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    proc = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"],
                          cwd=build, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    so = next(build.glob("adam_loop*.so"))
    spec = importlib.util.spec_from_file_location("adam_loop", so)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _adam_buffers(rng, sizes, dtype=np.float32):
    p = [random_array(rng, n, dtype) for n in sizes]
    g = [random_array(rng, n, dtype) for n in sizes]
    m = [random_array(rng, n, dtype) for n in sizes]
    v = [random_array(rng, n, dtype, positive=True) for n in sizes]
    return p, g, m, v


def _copy(buffers):
    return [[a.copy() for a in group] for group in buffers]


def test_downstream_cython_extension_matches_adam_step(adam_loop, rng):
    sizes = [0, 1, 7, 33, 1024, 40_000, 100_003]
    ours = _adam_buffers(rng, sizes)
    expected = _copy(ours)
    for step in (1, 2, 3):
        adam_loop.adam_step_all(*ours, step=step, lr=1e-2, weight_decay=0.1)
        optcore.adam_step(*expected, step=step, lr=1e-2, weight_decay=0.1)
    for got_group, want_group in zip(ours, expected):
        for got, want in zip(got_group, want_group):
            np.testing.assert_array_equal(got, want)


def test_downstream_repeat_loop(adam_loop, rng):
    p, g, m, v = (group[0] for group in _adam_buffers(rng, [1024]))
    ref = [a.copy() for a in (p, g, m, v)]
    adam_loop.adam_repeat(p, g, m, v, 5)
    for step in range(1, 6):
        optcore.adam_step(*ref, step=step)
    for got, want in zip((p, g, m, v), ref):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numba_calls_adam_kernel(rng, dtype):
    numba = require_module("numba")
    from optcore import numba as onb
    kernel = onb.adam_step_f32 if dtype == np.float32 else onb.adam_step_f64

    @numba.njit
    def steps(p, g, m, v, vmax, nsteps):
        for s in range(1, nsteps + 1):
            kernel(p.ctypes, g.ctypes, m.ctypes, v.ctypes, vmax.ctypes, p.size, s,
                   1e-2, 0.8, 0.99, 1e-8, 0.05, 1, 1, 0, 1)

    n = 3001
    p, g, m, v = (group[0] for group in _adam_buffers(rng, [n], dtype))
    vmax = random_array(rng, n, dtype, positive=True)
    ref = [a.copy() for a in (p, g, m, v, vmax)]
    steps(p, g, m, v, vmax, 4)
    for s in range(1, 5):
        optcore.adam_step(*ref[:4], step=s, lr=1e-2, beta1=0.8, beta2=0.99,
                          weight_decay=0.05, decoupled_weight_decay=True, amsgrad=True,
                          max_exp_avg_sq=ref[4])
    for got, want in zip((p, g, m, v, vmax), ref):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numba_calls_sgd_and_mse_kernels(rng, dtype):
    numba = require_module("numba")
    from optcore import numba as onb
    sgd = onb.sgd_step_f32 if dtype == np.float32 else onb.sgd_step_f64
    mse = onb.mse_loss_grad_f32 if dtype == np.float32 else onb.mse_loss_grad_f64

    @numba.njit
    def run(p, g, buf, pred, target, out):
        for s in range(1, 4):
            sgd(p.ctypes, g.ctypes, buf.ctypes, p.size, s, 0.1, 0.9, 0.1, 0, 0.01, 1, 1)
        return mse(pred.ctypes, target.ctypes, out.ctypes, pred.size, 2.0 / pred.size, 1)

    n = 5000
    p, g, buf, pred, target = (random_array(rng, n, dtype) for _ in range(5))
    out = np.empty(n, dtype)
    ref = [a.copy() for a in (p, g, buf)]
    total = run(p, g, buf, pred, target, out)
    for s in range(1, 4):
        optcore.sgd_step(*ref, step=s, lr=0.1, momentum=0.9, dampening=0.1,
                         weight_decay=0.01, maximize=True)
    for got, want in zip((p, g, buf), ref):
        np.testing.assert_array_equal(got, want)
    loss, grad = optcore.mse_loss_grad(pred, target)
    assert total / n == loss
    np.testing.assert_array_equal(out, grad)


def test_numba_linear_example_trains():
    require_module("numba")
    spec = importlib.util.spec_from_file_location("numba_linear_adam",
                                                  EXAMPLES / "numba_linear_adam.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((500, 10))
    w_true = rng.standard_normal(10)
    y = X @ w_true + 0.05 * rng.standard_normal(500)
    w = np.zeros(10)
    losses = example.train_linear_adam(X, y, w, 400, 0.05)
    assert losses[-1] < 0.01 * losses[0]
    assert losses[-1] < 4 * 0.05**2
    np.testing.assert_allclose(w, w_true, atol=0.05)
