"""Embedding optcore in numba: a jitted training loop for a linear model
(10 features -> 1, MSE) that calls optcore's Adam kernel at every step.

    python examples/numba_linear_adam.py
"""

from __future__ import annotations

import numba
import numpy as np
from numpy.typing import NDArray

from optcore.numba import adam_step_f64


@numba.njit(cache=False)
def train_linear_adam(X: NDArray[np.float64], y: NDArray[np.float64],
                      w: NDArray[np.float64], steps: int, lr: float) -> NDArray[np.float64]:
    """Full-batch Adam on loss = mean((X @ w - y)**2); returns the loss per step."""
    n, d = X.shape
    g = np.empty_like(w)
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    losses = np.empty(steps)
    for step in range(1, steps + 1):
        # Forward and backward as plain loops (numba compiles them; its matrix
        # products would need SciPy).
        g[:] = 0.0
        loss = 0.0
        for i in range(n):
            r = -y[i]
            for j in range(d):
                r += X[i, j] * w[j]
            loss += r * r
            for j in range(d):
                g[j] += (2.0 / n) * r * X[i, j]
        losses[step - 1] = loss / n
        # param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq (unused), n, step,
        # lr, beta1, beta2, eps, weight_decay, decoupled, amsgrad, maximize,
        # num_threads (1: this thread)
        adam_step_f64(w.ctypes, g.ctypes, m.ctypes, v.ctypes, v.ctypes, w.size, step,
                      lr, 0.9, 0.999, 1e-8, 0.0, 0, 0, 0, 1)
    return losses


def main() -> None:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((1000, 10))
    w_true = rng.standard_normal(10)
    y = X @ w_true + 0.1 * rng.standard_normal(1000)
    w = np.zeros(10)
    losses = train_linear_adam(X, y, w, 500, 0.05)
    print(f"loss: step 1 {losses[0]:.4f}, step 500 {losses[-1]:.5f}")
    print("max |w - w_true|:", float(np.abs(w - w_true).max()))


if __name__ == "__main__":
    main()
