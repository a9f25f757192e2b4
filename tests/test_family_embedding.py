"""The C-level API of RMSprop, Adagrad, Adadelta, Adamax, NAdam and RAdam,
called from numba-jitted code through optcore.numba: the same bits as the
Python functions."""

import numpy as np
import pytest

import optcore
from support import DTYPES, require_module
from family import BY_NAME, random_states

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
