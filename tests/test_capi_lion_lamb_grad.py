"""The C-level entry points of lion, lamb and grad_utils (the functions
declared in their .pxd files), called through their exported capsules with
ctypes: they must give the Python API's results."""

import ctypes

import numpy as np
import pytest

import optcore
from optcore.kernels import grad_utils, lamb, lion
from support import random_array

_get_name = ctypes.pythonapi.PyCapsule_GetName
_get_name.restype = ctypes.c_char_p
_get_name.argtypes = [ctypes.py_object]
_get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_get_pointer.restype = ctypes.c_void_p
_get_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]

P, N, STEP, D, I = ctypes.c_void_p, ctypes.c_ssize_t, ctypes.c_longlong, ctypes.c_double, ctypes.c_int


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
    lion_one = _cfunc(lion, f"lion_step_{sfx}", None, P, P, P, N, STEP, D, D, D, D, I, I)
    lion_multi = _cfunc(lion, f"lion_step_multi_{sfx}", None, P, P, P, P, N, STEP, D, D,
                        D, D, I, I)
    lamb_one = _cfunc(lamb, f"lamb_step_{sfx}", None, P, P, P, P, N, STEP, D, D, D, D, D,
                      I, I)
    lamb_multi = _cfunc(lamb, f"lamb_step_multi_{sfx}", I, P, P, P, P, P, N, STEP, D, D,
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
    norm = _cfunc(grad_utils, f"global_norm_{sfx}", D, P, P, N, D, I)
    clip_norm = _cfunc(grad_utils, f"clip_grad_norm_{sfx}", D, P, P, N, D, D, I)
    clip_value = _cfunc(grad_utils, f"clip_grad_value_{sfx}", None, P, P, N, D, I)
    finite = _cfunc(grad_utils, f"all_finite_{sfx}", I, P, P, N, I)
    unscale = _cfunc(grad_utils, f"unscale_{sfx}", I, P, P, N, D, I)
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
