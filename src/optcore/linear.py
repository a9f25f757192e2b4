"""The linear model ``pred = X @ w + b`` under MSE: loss and gradients.

Matrix products go through NumPy (BLAS); the residual, loss and its gradient
come from the fused one-pass MSE kernel.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from optcore._docstrings import assign as _assign_docs
from optcore.kernels.mse import mse_loss_grad

__all__ = ["linear_mse_grad"]

if TYPE_CHECKING:
    from numpy.typing import ArrayLike, NDArray


def linear_mse_grad(X: ArrayLike, y: ArrayLike, w: ArrayLike, b: ArrayLike | None = None,
                    *, reduction: Literal["mean", "sum"] = "mean"
                    ) -> tuple[float, NDArray[Any], NDArray[Any] | None]:
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    X = np.asarray(X)
    w = np.asarray(w)
    y = np.asarray(y)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (samples, features), got shape {X.shape}")
    if w.ndim not in (1, 2) or w.shape[0] != X.shape[1]:
        raise ValueError(f"w has shape {w.shape} but X has {X.shape[1]} features")
    for name, a in (("X", X), ("y", y), ("w", w)) + ((("b", np.asarray(b)),) if b is not None else ()):
        if a.dtype not in (np.float32, np.float64):
            raise TypeError(f"{name} has dtype {a.dtype}; optcore takes float32 or float64")
        if a.dtype != X.dtype:
            raise TypeError(f"{name} has dtype {a.dtype} but X has dtype {X.dtype}")
    outputs = 1 if w.ndim == 1 else w.shape[1]
    if b is not None and np.shape(b) not in ((), (1,), (outputs,)):
        raise ValueError(
            f"b has shape {np.shape(b)}; expected (), (1,) or ({outputs},) for w of "
            f"shape {w.shape}")
    pred = X @ w
    if b is not None:
        pred += b
    if y.shape != pred.shape:
        raise ValueError(f"y has shape {y.shape} but X @ w has shape {pred.shape}")
    loss, r = mse_loss_grad(pred, y, reduction=reduction)
    assert isinstance(loss, float)      # "mean" and "sum" reduce to a float
    grad_w = X.T @ r
    grad_b: NDArray[Any] | None = None
    if b is not None:
        # One bias shared by every output sums over everything.
        total = r.sum() if np.size(b) == 1 else r.sum(axis=0)
        grad_b = np.asarray(total, dtype=X.dtype).reshape(np.shape(b))
    return loss, grad_w, grad_b


_assign_docs(globals(), ("linear_mse_grad",))
