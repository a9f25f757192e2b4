"""The C-level API: a downstream Cython extension that cimports optcore's
kernels, numba-jitted code calling them through optcore.numba, and the
exported capsules called with ctypes; each must give the Python API's bits
(docs/contract.md §6)."""

import ctypes
import importlib.util
import os
from pathlib import Path
import shutil
import subprocess
import sys

import numpy as np
import pytest

import optcore
from optcore.kernels import grad_utils, lamb, lion

from registry import BY_NAME, random_states
from support import DTYPES, random_array, require_module


# ==== cimport from a downstream Cython extension; numba (SGD, Adam) ==========

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


# ==== numba through optcore.numba: RMSprop ... RAdam =========================

N = 3001
STEPS = 4


def _jitted(numba, name, dtype):
    """A njit loop of STEPS steps through the C kernel, with fixed non-default
    options; returns (run, the same options for the Python function)."""
    from optcore import numba as onb
    k = getattr(onb, f"{name}_step_{'f32' if dtype == np.float32 else 'f64'}")
    if name == "rmsprop":
        @numba.njit
        def run(p, g, s):
            for t in range(1, STEPS + 1):
                k(p.ctypes, g.ctypes, s[0].ctypes, s[1].ctypes, s[2].ctypes, p.size, t,
                  1e-2, 0.9, 1e-6, 0.01, 0.8, 1, 1, 1)
            return 1.0
        return run, dict(lr=1e-2, alpha=0.9, eps=1e-6, weight_decay=0.01,
                         momentum=0.8, centered=True, maximize=True)
    if name == "adagrad":
        @numba.njit
        def run(p, g, s):
            for t in range(1, STEPS + 1):
                k(p.ctypes, g.ctypes, s[0].ctypes, p.size, t, 0.05, 0.1, 0.01, 1e-8, 1, 1)
            return 1.0
        return run, dict(lr=0.05, lr_decay=0.1, weight_decay=0.01, eps=1e-8,
                         maximize=True)
    if name == "adadelta":
        @numba.njit
        def run(p, g, s):
            for t in range(1, STEPS + 1):
                k(p.ctypes, g.ctypes, s[0].ctypes, s[1].ctypes, p.size, t, 0.5, 0.8,
                  1e-5, 0.01, 1, 1)
            return 1.0
        return run, dict(lr=0.5, rho=0.8, eps=1e-5, weight_decay=0.01, maximize=True)
    if name == "adamax":
        @numba.njit
        def run(p, g, s):
            for t in range(1, STEPS + 1):
                k(p.ctypes, g.ctypes, s[0].ctypes, s[1].ctypes, p.size, t, 1e-2, 0.8,
                  0.99, 1e-7, 0.01, 1, 1)
            return 1.0
        return run, dict(lr=1e-2, beta1=0.8, beta2=0.99, eps=1e-7, weight_decay=0.01,
                         maximize=True)
    if name == "nadam":
        @numba.njit
        def run(p, g, s):
            mu_product = 1.0
            for t in range(1, STEPS + 1):
                mu_product = k(p.ctypes, g.ctypes, s[0].ctypes, s[1].ctypes, p.size, t,
                               mu_product, 1e-2, 0.8, 0.99, 1e-7, 0.01, 5e-3, 1, 1, 1)
            return mu_product
        return run, dict(lr=1e-2, beta1=0.8, beta2=0.99, eps=1e-7, weight_decay=0.01,
                         momentum_decay=5e-3, decoupled_weight_decay=True, maximize=True)
    if name == "radam":
        @numba.njit
        def run(p, g, s):
            for t in range(1, STEPS + 1):
                k(p.ctypes, g.ctypes, s[0].ctypes, s[1].ctypes, p.size, t + 4, 1e-2,
                  0.8, 0.99, 1e-7, 0.01, 1, 1, 1)
            return 1.0
        return run, dict(lr=1e-2, beta1=0.8, beta2=0.99, eps=1e-7, weight_decay=0.01,
                         decoupled_weight_decay=True, maximize=True)
    raise AssertionError(name)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("name", ["rmsprop", "adagrad", "adadelta", "adamax", "nadam",
                                  "radam"])
def test_numba_calls_family_kernel(name, dtype, rng):
    numba = require_module("numba")
    opt = BY_NAME[name]
    run, opts = _jitted(numba, name, dtype)
    p = rng.standard_normal(N).astype(dtype)
    g = rng.standard_normal(N).astype(dtype)
    states = random_states(opt, rng, N, dtype)
    ref_p = p.copy()
    ref_states = {s: a.copy() for s, a in states.items()}
    got = run(p, g, tuple(states[s] for s in opt.states))
    mu_product = 1.0
    for t in range(1, STEPS + 1):
        step = t + 4 if name == "radam" else t      # RAdam crosses its switch
        args = [ref_states[s] for s in opt.states]
        if name == "nadam":
            mu_product = optcore.nadam_step(ref_p, g, *args, step=step,
                                            mu_product=mu_product, **opts)
        else:
            opt.fast(ref_p, g, *args, step=step, **opts)
    np.testing.assert_array_equal(p, ref_p)
    for s in opt.states:
        np.testing.assert_array_equal(states[s], ref_states[s])
    assert got == mu_product


def test_family_pxd_files_are_installed():
    from pathlib import Path
    root = Path(optcore.get_include()) / "optcore" / "kernels"
    header = (root / "__init__.pxd").read_text()
    for name in ("rmsprop", "adagrad", "adadelta", "adamax", "nadam", "radam"):
        assert (root / f"{name}.pxd").is_file(), name
        for suffix in ("f32", "f64", "multi_f32", "multi_f64"):
            assert f"{name}_step_{suffix}" in header, (name, suffix)


# ==== exported capsules through ctypes: Lion, LAMB, grad utilities ===========

_get_name = ctypes.pythonapi.PyCapsule_GetName
_get_name.restype = ctypes.c_char_p
_get_name.argtypes = [ctypes.py_object]
_get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_get_pointer.restype = ctypes.c_void_p
_get_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]

P, SSIZE, STEP, D, I = ctypes.c_void_p, ctypes.c_ssize_t, ctypes.c_longlong, ctypes.c_double, ctypes.c_int


def _cfunc(module, name, restype, *argtypes):
    capsule = module.__pyx_capi__[name]
    address = _get_pointer(capsule, _get_name(capsule))
    return ctypes.CFUNCTYPE(restype, *argtypes)(address)


def _ptrs(arrays):
    return (ctypes.c_void_p * len(arrays))(*[a.ctypes.data for a in arrays])


def _sizes(arrays):
    return (ctypes.c_ssize_t * len(arrays))(*[a.size for a in arrays])


SUFFIX = {np.float32: "f32", np.float64: "f64"}
SIZES = [5, 0, 40_000, 9, 1025, 3, 8, 17, 2, 4097]     # > 8 tensors: lamb's heap scratch


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 2])
def test_lion_and_lamb_entry_points(rng, dtype, threads):
    sfx = SUFFIX[dtype]
    lion_one = _cfunc(lion, f"lion_step_{sfx}", None, P, P, P, SSIZE, STEP, D, D, D, D, I, I)
    lion_multi = _cfunc(lion, f"lion_step_multi_{sfx}", None, P, P, P, P, SSIZE, STEP, D, D,
                        D, D, I, I)
    lamb_one = _cfunc(lamb, f"lamb_step_{sfx}", None, P, P, P, P, SSIZE, STEP, D, D, D, D, D,
                      I, I)
    lamb_multi = _cfunc(lamb, f"lamb_step_multi_{sfx}", I, P, P, P, P, P, SSIZE, STEP, D, D,
                        D, D, D, I, I)
    p = [random_array(rng, n, dtype) for n in SIZES]
    g = [random_array(rng, n, dtype) for n in SIZES]
    m = [random_array(rng, n, dtype, scale=0.1) for n in SIZES]
    v = [random_array(rng, n, dtype, positive=True, scale=0.01) for n in SIZES]
    want = [[a.copy() for a in b] for b in (p, m, v)]
    got = [[a.copy() for a in b] for b in (p, m, v)]
    # lion: one tensor, then the list
    optcore.lion_step(want[0][0], g[0], want[1][0], step=2, lr=0.1, weight_decay=0.1,
                      maximize=True)
    lion_one(got[0][0].ctypes.data, g[0].ctypes.data, got[1][0].ctypes.data, SIZES[0],
             2, 0.1, 0.9, 0.99, 0.1, 1, threads)
    optcore.lion_step(want[0], g, want[1], step=3, lr=0.1)
    lion_multi(_ptrs(got[0]), _ptrs(g), _ptrs(got[1]), _sizes(g), len(g), 3, 0.1, 0.9,
               0.99, 0.0, 0, threads)
    # lamb: one tensor, then the list
    optcore.lamb_step(want[0][2], g[2], want[1][2], want[2][2], step=4, lr=0.01,
                      weight_decay=0.1)
    lamb_one(got[0][2].ctypes.data, g[2].ctypes.data, got[1][2].ctypes.data,
             got[2][2].ctypes.data, SIZES[2], 4, 0.01, 0.9, 0.999, 1e-6, 0.1, 0, threads)
    optcore.lamb_step(want[0], g, want[1], want[2], step=5, lr=0.01, maximize=True)
    assert lamb_multi(_ptrs(got[0]), _ptrs(g), _ptrs(got[1]), _ptrs(got[2]), _sizes(g),
                      len(g), 5, 0.01, 0.9, 0.999, 1e-6, 0.0, 1, threads) == 0
    for a, b in zip(got, want):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 2])
def test_grad_util_entry_points(rng, dtype, threads):
    sfx = SUFFIX[dtype]
    norm = _cfunc(grad_utils, f"global_norm_{sfx}", D, P, P, SSIZE, D, I)
    clip_norm = _cfunc(grad_utils, f"clip_grad_norm_{sfx}", D, P, P, SSIZE, D, D, I)
    clip_value = _cfunc(grad_utils, f"clip_grad_value_{sfx}", None, P, P, SSIZE, D, I)
    finite = _cfunc(grad_utils, f"all_finite_{sfx}", I, P, P, SSIZE, I)
    unscale = _cfunc(grad_utils, f"unscale_{sfx}", I, P, P, SSIZE, D, I)
    g = [random_array(rng, n, dtype) for n in SIZES]
    k = len(g)
    for p in (1.0, 2.0, 3.0, float("inf")):
        assert norm(_ptrs(g), _sizes(g), k, p, threads) == optcore.global_norm(g, p)
    assert np.isnan(norm(_ptrs(g), _sizes(g), k, 0.0, threads))
    want = [a.copy() for a in g]
    total = optcore.clip_grad_norm_(want, 0.5, 2.0)
    assert clip_norm(_ptrs(g), _sizes(g), k, 0.5, 2.0, threads) == total
    optcore.clip_grad_value_(want, 0.01)
    clip_value(_ptrs(g), _sizes(g), k, 0.01, threads)
    assert finite(_ptrs(g), _sizes(g), k, threads) == 1
    g[4][1024] = want[4][1024] = np.inf
    assert finite(_ptrs(g), _sizes(g), k, threads) == 0
    assert unscale(_ptrs(g), _sizes(g), k, 0.5, threads) == 1
    assert optcore.unscale_(want, 0.5) is True
    for a, b in zip(g, want):
        np.testing.assert_array_equal(a, b)
