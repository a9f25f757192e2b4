"""Muon's rules and its NumPy step, shared by ``optcore.Muon`` and
``optcore.torch.Muon``: torch.optim.Muon's option checks and messages, its
learning-rate adjustment, the Newton–Schulz orthogonalization in bfloat16
emulated over NumPy's float32 matmul, and the elementwise parts around it,
each one pass of a native kernel: the momentum step (``muon_momentum``: the
buffer updated and the Nesterov update written) and the parameter update
(``muon_apply``: decay and step fused), in torch's operation order and with
its fused multiply-adds, so that they have torch's bits. Arrays the kernels
cannot update in place (not C-contiguous) take the same arithmetic in NumPy
(``optcore._reference_muon``: the same bits, several passes).

torch runs the Newton–Schulz iterations on a bfloat16 copy of the update
(for float32 and float64 parameters alike); each of its bfloat16 matrix
products accumulates in float32 and rounds once to bfloat16. The NumPy twin
computes each product, and each elementwise operation, in float32 and rounds
the result to bfloat16 (round to nearest, ties to even), so its values are
bfloat16 values as torch's are; only the float32 summation order of the
products differs from torch's BLAS.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from optcore._reference_muon import fma, lerp
from optcore.kernels.muon import muon_momentum
from optcore.kernels.muon_apply import muon_apply

__all__ = ["DEFAULTS", "OPTION_NAMES", "adjust_lr", "apply_update", "check_options",
           "check_ns_options", "momentum_update", "newton_schulz"]

#: torch.optim.Muon's defaults, in its ``defaults`` order.
DEFAULTS: dict[str, Any] = {
    "lr": 1e-3,
    "weight_decay": 0.1,
    "momentum": 0.95,
    "nesterov": True,
    "ns_coefficients": (3.4445, -4.7750, 2.0315),
    "eps": 1e-7,
    "ns_steps": 5,
    "adjust_lr_fn": None,
}
OPTION_NAMES = tuple(DEFAULTS)
ADJUST_LR_FNS = ("original", "match_rms_adamw")


def check_options(lr: Any, weight_decay: Any, momentum: Any, adjust_lr_fn: Any,
                  lr_numel: int | None = None) -> None:
    """Raise torch.optim.Muon's ValueError for a bad constructor option
    (``lr_numel``: the element count of a tensor ``lr``, else None)."""
    if lr_numel is not None and lr_numel != 1:
        raise ValueError("Tensor lr must be 1-element")
    if not 0.0 <= lr:
        raise ValueError(f"Learning rate should be >= 0 but is: {lr}")
    if not 0.0 <= momentum:
        raise ValueError(f"momentum should be >= 0 but is: {momentum}")
    if not 0.0 <= weight_decay:
        raise ValueError(f"weight decay should be >= 0 but is: {weight_decay}")
    if adjust_lr_fn is not None and adjust_lr_fn not in ADJUST_LR_FNS:
        raise ValueError(f"Adjust learning rate function {adjust_lr_fn} is not supported")


def check_ns_options(ns_coefficients: Sequence[float], ns_steps: int) -> None:
    """Raise torch's ValueError for Newton–Schulz options it refuses at step
    time (checked here before any parameter of the step is written)."""
    if ns_steps >= 100:
        raise ValueError("Number of steps must be less than 100 for computational efficiency")
    if len(ns_coefficients) != 3:
        raise ValueError("Coefficients must be a tuple of exactly 3 values")


def adjust_lr(lr: float, adjust_lr_fn: str | None, shape: Sequence[int]) -> float:
    """The learning rate for a parameter of ``shape`` (rows ``A``, columns
    ``B``): ``"original"`` (or None) scales by ``sqrt(max(1, A / B))``,
    ``"match_rms_adamw"`` by ``0.2 * sqrt(max(A, B))``."""
    rows, cols = shape[0], shape[1]
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        # (A / B with B = 0 divides by zero in torch too; an empty matrix
        # has nothing to update, so its ratio is irrelevant)
        ratio = math.sqrt(max(1, rows / cols)) if cols else 1.0
    elif adjust_lr_fn == "match_rms_adamw":
        ratio = 0.2 * math.sqrt(max(rows, cols))
    else:
        ratio = 1.0
    return lr * ratio


def _in_place(*arrays: np.ndarray) -> bool:
    return all(a.flags.c_contiguous and a.flags.writeable for a in arrays)


def momentum_update(buf: np.ndarray, grad: np.ndarray, momentum: float,
                    nesterov: bool) -> np.ndarray:
    """Update the momentum buffer in place, ``buf = lerp(buf, grad, 1 -
    momentum)``, and return the update to orthogonalize: ``lerp(grad, buf,
    momentum)`` (a new array) with Nesterov, else ``buf`` itself (torch.lerp's
    two-sided formula with its fma, in the buffer's dtype). One pass of
    ``muon_momentum`` over C-contiguous buffers."""
    if _in_place(buf):
        out = np.empty(buf.shape, buf.dtype) if nesterov else None
        muon_momentum(grad, buf, out, momentum=momentum, nesterov=nesterov)
        return buf if out is None else out
    buf[...] = lerp(buf, grad, 1.0 - momentum)
    return lerp(grad, buf, momentum) if nesterov else buf


def apply_update(param: np.ndarray, update: np.ndarray, lr: float, decay: float) -> None:
    """``param = param * decay - lr * update`` in place (torch's ``mul_`` then
    ``add_``: the product rounded, then one fma), ``update`` (the
    orthogonalized float32 update, any layout) in the parameter's dtype; one
    pass of ``muon_apply`` over a C-contiguous parameter."""
    update = np.asarray(update, dtype=param.dtype, order="C")
    if _in_place(param):
        muon_apply(param, update, lr=lr, decay=decay)
        return
    dt = param.dtype.type
    param[...] = fma(update, dt(-lr), param * dt(decay)).reshape(param.shape)


def round_bf16(x: np.ndarray) -> np.ndarray:
    """``x`` rounded to bfloat16 (nearest, ties to even), as float32 values;
    float64 is rounded once, directly, as torch's ``.bfloat16()`` does."""
    if x.dtype == np.float64:
        u = np.ascontiguousarray(x).view(np.uint64)
        low = np.uint64(45)                       # 52 - 7 mantissa bits dropped
        half = np.uint64((1 << 44) - 1)
        r = (u + half + ((u >> low) & np.uint64(1))) & ~np.uint64((1 << 45) - 1)
        out = r.view(np.float64).astype(np.float32)
    else:
        u32 = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
        r32 = (u32 + np.uint32(0x7FFF) + ((u32 >> np.uint32(16)) & np.uint32(1))) \
            & np.uint32(0xFFFF0000)
        out = r32.view(np.float32)
    nan = np.isnan(x)
    if nan.any():                                 # the carry must not turn NaN into inf
        out = np.where(nan, np.float32(np.nan), out)
    return out


def newton_schulz(update: np.ndarray, ns_coefficients: Sequence[float], ns_steps: int,
                  eps: float) -> np.ndarray:
    """The orthogonalized update (float32 array of bfloat16 values, the
    update's shape): ``ns_steps`` quintic Newton–Schulz iterations ``X = a X +
    (b A + c A A) X`` with ``A = X X^T``, from ``X`` the update divided by its
    Frobenius norm (at least ``eps``), on the wide orientation of the matrix."""
    a, b, c = (np.float32(v) for v in ns_coefficients)
    x = round_bf16(update)
    tall = update.shape[0] > update.shape[1]
    if tall:
        x = x.T
    norm = round_bf16(np.sqrt(np.sum(x * x, dtype=np.float32)).reshape(1))
    norm = np.maximum(norm, round_bf16(np.array([eps])))
    x = round_bf16(x / norm)
    for _ in range(ns_steps):
        gram = round_bf16(x @ x.T)
        poly = round_bf16(b * gram + c * (gram @ gram))
        x = round_bf16(a * x + poly @ x)
    return x.T if tall else x
