"""optcore's C-level kernels as ctypes function objects that numba-jitted
code can call (nopython mode), found through the extension modules' exported
C functions (``numba.extending.get_cython_function_address``)::

    from optcore.numba import adam_step_f32

    @numba.njit
    def train(...):
        ...
        adam_step_f32(w.ctypes, g.ctypes, m.ctypes, v.ctypes, v.ctypes, w.size,
                      step, lr, 0.9, 0.999, 1e-8, 0.0, 0, 0, 0, 1)

Arguments and contract are those of ``optcore/kernels/__init__.pxd``: pointers
(``array.ctypes``), the element count, ``step``, the hyperparameters as floats,
flags as 0/1 ints, and ``num_threads`` last (1: the calling thread). Nothing
is checked: pass contiguous arrays of the right dtype and size. Pointers that
a call does not use (``max_exp_avg_sq`` without amsgrad, ``momentum_buffer``
without momentum, ``grad`` of a loss without a gradient) may be any valid
pointer; they are not touched (likewise RMSprop's ``momentum_buffer`` without
momentum and ``grad_avg`` unless centered). ``nadam_step_*`` returns the new
``mu_product``.

Requires numba (imported here only).
"""

from __future__ import annotations

import ctypes
import inspect
from collections.abc import Sequence
from typing import Any

from numba.extending import get_cython_function_address

from optcore import _kernel_docs, _spec
from optcore._numba_signatures import SIGNATURES as _KERNEL_SIGNATURES

_F32 = ctypes.POINTER(ctypes.c_float)
_F64 = ctypes.POINTER(ctypes.c_double)
_N = ctypes.c_ssize_t
_STEP = ctypes.c_longlong
_D = ctypes.c_double
_I = ctypes.c_int
# the codes of optcore/_numba_signatures.py (generated from optcore/_spec.py)
_CODES: dict[str | None, Any] = {"N": _N, "STEP": _STEP, "D": _D, "I": _I, None: None}


def _ctypes_signature(restype: str | None,
                      argtypes: Sequence[str]) -> tuple[Any, tuple[Any, ...]]:
    return _CODES[restype], tuple(a if a == "P" else _CODES[a] for a in argtypes)


# name -> (module, result type, argument types with "P" for the dtype's pointer)
_SIGNATURES = {
    name: (module,) + _ctypes_signature(restype, argtypes)
    for name, (module, restype, argtypes) in _KERNEL_SIGNATURES.items()
}
# hand-written C API (not a spec kernel)
_SIGNATURES["mse_loss_grad"] = ("mse", _D, ("P", "P", "P", _N, _D, _I))

__all__: list[str] = []


def _bind(name: str, module: str, restype: Any, argtypes: Sequence[Any], suffix: str,
          pointer: Any) -> ctypes._CFunctionType:
    address = get_cython_function_address(f"optcore.kernels.{module}", f"{name}_{suffix}")
    types = [pointer if a == "P" else a for a in argtypes]
    return ctypes.CFUNCTYPE(restype, *types)(address)


for _name, (_module, _restype, _argtypes) in _SIGNATURES.items():
    for _suffix, _pointer in (("f32", _F32), ("f64", _F64)):
        globals()[f"{_name}_{_suffix}"] = _bind(_name, _module, _restype, _argtypes,
                                                _suffix, _pointer)
        __all__.append(f"{_name}_{_suffix}")


def _document() -> None:
    # The docstrings are rendered from the spec, as the Python wrappers' are.
    for suffix, ctype, dtype in _spec.DTYPES:
        ctypes_name = "c_" + ctype
        for kernel in _spec.KERNELS:
            function = globals()[f"{kernel.name}_{suffix}"]
            function.__doc__ = _kernel_docs.c_docstring(kernel, suffix, dtype, ctypes_name)
            function.__signature__ = _positional(
                [b.name for b in kernel.buffers] + ["n"]
                + [h.name for h in kernel.hypers] + ["num_threads"])
        function = globals()[f"mse_loss_grad_{suffix}"]
        function.__doc__ = _MSE_DOC.format(
            suffix=suffix, dtype=dtype, ctype=ctypes_name,
            extra=", dtype=float32" if dtype == "float32" else "")
        function.__signature__ = _positional(
            ["pred", "target", "grad", "n", "grad_scale", "num_threads"])


def _positional(names: list[str]) -> inspect.Signature:
    # The C arguments' names, for help() and inspect (ctypes has no signature).
    return inspect.Signature([inspect.Parameter(name, inspect.Parameter.POSITIONAL_ONLY)
                              for name in names])


_MSE_DOC = """``optcore.mse_loss_grad`` on {dtype} arrays: the C function, for numba-jitted code.

``optcore.kernels.mse.mse_loss_grad_{suffix}`` as a ctypes function object.
Nothing is checked: pass contiguous arrays of the right dtype and size.

Parameters
----------
pred : ctypes.POINTER(ctypes.{ctype})
    The predictions: ``n`` contiguous {dtype} elements; read.
target : ctypes.POINTER(ctypes.{ctype})
    The targets: ``n`` contiguous {dtype} elements; read.
grad : ctypes.POINTER(ctypes.{ctype})
    Where the gradient of the loss is written (``n`` elements).
n : int
    The number of elements.
grad_scale : float
    The gradient's factor: ``2 / n`` for the mean loss, 2 for the sum.
num_threads : int
    1 runs on the calling thread, 0 uses optcore's process setting.

Returns
-------
float
    The sum of the squared errors (accumulated in double).

See Also
--------
optcore.mse_loss_grad : The checked Python function.

Examples
--------
>>> import ctypes
>>> import numpy as np
>>> import optcore.numba
>>> pred = np.array([1.0, 3.0], dtype=np.{dtype})
>>> target = np.array([0.0, 1.0], dtype=np.{dtype})
>>> grad = np.empty_like(pred)
>>> def ptr(a): return a.ctypes.data_as(ctypes.POINTER(ctypes.{ctype}))
>>> optcore.numba.mse_loss_grad_{suffix}(ptr(pred), ptr(target), ptr(grad), 2, 1.0, 1)
5.0
>>> grad
array([1., 2.]{extra})
"""


_document()
