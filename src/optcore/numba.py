"""optcore's C-level kernels as ctypes function objects that numba-jitted
code can call (nopython mode), found through the extension modules' exported
C functions (``numba.extending.get_cython_function_address``).

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
from collections.abc import Sequence
from typing import Any

from numba.extending import get_cython_function_address

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
