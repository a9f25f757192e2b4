"""Shared test helpers: torch requirement, random inputs, tolerances.

Import as `from support import ...` (tests/ is on pytest's pythonpath)."""

import os

import numpy as np
import pytest

import optcore

# In CI (OPTCORE_REQUIRE_TORCH=1, set by .ci/run) the torch parity tests must
# run: a missing torch is an error there, not a skip.
REQUIRE_TORCH = os.environ.get("OPTCORE_REQUIRE_TORCH") == "1"
# Likewise for the other optional test dependencies (numba, ...).
REQUIRE_OPTIONAL = REQUIRE_TORCH or os.environ.get("OPTCORE_REQUIRE_OPTIONAL") == "1"

DTYPES = [np.float32, np.float64]

# Sizes around the vector width (8 float32 lanes in AVX2, the 16-element
# partition alignment) and around the single-thread threshold.
_T = optcore.get_parallel_threshold()
SIZES = [0, 1, 7, 8, 9, 15, 16, 17, 1023, 1024, 1025, _T - 1, _T, _T + 1]
LARGE = 1_000_003

# Kernel vs NumPy reference. Both evaluate the same operations in the same order
# in the buffer's dtype, with -ffp-contract=off (no fused multiply-add), so they
# normally agree to the bit; the bound leaves room for one rounding difference
# per operation (~10 operations per step, unit roundoff 6e-8 / 1.1e-16) in case
# a compiler or NumPy build evaluates one of them differently.
REF_RTOL = {np.float32: 1e-6, np.float64: 1e-14}
REF_ATOL = {np.float32: 1e-7, np.float64: 1e-15}

# Kernel vs torch.optim after many steps: torch orders some operations
# differently (e.g. fused/lerp forms), so rounding differences of a few ulps per
# step accumulate; relative to the parameter scale.
TORCH_RTOL = {np.float32: 1e-4, np.float64: 1e-10}


def require_torch():
    """Import torch, or skip (fail when OPTCORE_REQUIRE_TORCH=1)."""
    try:
        import torch
    except ImportError as exc:
        if REQUIRE_TORCH:
            pytest.fail(f"torch is required in CI (OPTCORE_REQUIRE_TORCH=1) but missing: {exc}")
        pytest.skip("torch not installed")
    return torch


def require_module(name):
    """Import an optional test dependency, or skip (fail in CI)."""
    import importlib
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        if REQUIRE_OPTIONAL:
            pytest.fail(f"{name} is required in CI but missing: {exc}")
        pytest.skip(f"{name} not installed")


def assert_close(actual, expected, dtype, rtol=None, atol=None, what=""):
    rtol = REF_RTOL[dtype] if rtol is None else rtol
    atol = REF_ATOL[dtype] if atol is None else atol
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=rtol,
                               atol=atol, err_msg=what)


def assert_same_bits(actual, expected, what=""):
    """Bitwise equality (NaN payloads and the sign of zero included), for
    kernels that perform exactly the reference's IEEE operations in the same
    order and dtype (every elementwise step so far is such a kernel)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    if actual.tobytes() != expected.tobytes():
        uint = f"u{actual.itemsize}"
        a_bits = np.ascontiguousarray(actual).reshape(-1).view(uint)
        e_bits = np.ascontiguousarray(expected).reshape(-1).view(uint)
        bad = np.flatnonzero(a_bits != e_bits)
        with np.errstate(invalid="ignore"):
            diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
        finite = diff[np.isfinite(diff)]
        raise AssertionError(
            f"{what}: {bad.size} of {actual.size} elements differ in their bits, "
            f"first at flat index {bad[:5].tolist()}; max finite |diff| "
            f"{finite.max(initial=0.0):.3g}")


def random_array(rng, n, dtype, positive=False, scale=1.0):
    """Random, never-zero data (a kernel that ignores an input cannot pass)."""
    if positive:
        a = rng.uniform(0.1, 2.0, n) * scale
    else:
        a = rng.standard_normal(n) * scale
        a[a == 0] = 0.5
    return a.astype(dtype)


def run_python(args, **kwargs):
    """Run ``python *args`` against the optcore these tests import (an in-place
    build or the installed package) -- never against a source tree without
    compiled modules that happens to be the working directory: the child runs
    in optcore's parent directory, which also leads its PYTHONPATH."""
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(optcore.__file__)))
    env = dict(kwargs.pop("env", None) or os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    kwargs.setdefault("cwd", root)
    return subprocess.run([sys.executable, *args], env=env, **kwargs)
