"""The NumPy twins of the row-sparse steps (``optcore.kernels.sparse_rows``),
re-exported by ``optcore.reference``: one NumPy operation per step of torch's
rule, in the parameter's dtype, on the touched rows only."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import ArrayLike, NDArray

__all__ = ["sparse_adam_rows", "adagrad_rows", "sgd_rows"]


def _coalesced(indices: ArrayLike, rows: NDArray) -> tuple[NDArray, NDArray]:
    # The distinct rows in increasing order, the duplicates of each summed in
    # order of appearance (torch's coalesce).
    idx = np.asarray(indices, dtype=np.intp).reshape(-1)
    order = np.argsort(idx, kind="stable")
    unique, first = np.unique(idx[order], return_index=True)
    summed = np.empty((unique.size, *rows.shape[1:]), rows.dtype)
    bounds = [*first.tolist(), idx.size]
    for n in range(unique.size):
        acc = rows[order[bounds[n]]].copy()
        for k in range(bounds[n] + 1, bounds[n + 1]):
            acc = acc + rows[order[k]]
        summed[n] = acc
    return unique, summed


def sparse_adam_rows(param: NDArray, indices: ArrayLike, rows: NDArray, exp_avg: NDArray,
                     exp_avg_sq: NDArray, *, step: int, lr: float = 1e-3, beta1: float = 0.9,
                     beta2: float = 0.999, eps: float = 1e-8, maximize: bool = False) -> None:
    """The NumPy twin of :func:`optcore.sparse_adam_rows` (same arguments).

    Parameters
    ----------
    param : numpy.ndarray
        The parameter; its first axis is the row axis.
    indices : array_like of int
        The row numbers of the gradient, duplicates allowed.
    rows : numpy.ndarray
        The gradient rows, one per index.
    exp_avg : numpy.ndarray
        The first moment.
    exp_avg_sq : numpy.ndarray
        The second moment.
    step : int
        The step number, from 1.
    lr : float, optional
        Learning rate.
    beta1 : float, optional
        First-moment decay.
    beta2 : float, optional
        Second-moment decay.
    eps : float, optional
        Added to the square root of the second moment.
    maximize : bool, optional
        Ascend instead of descend.

    Returns
    -------
    None
        The arrays are updated in place.

    See Also
    --------
    optcore.sparse_adam_rows : The native function.

    Examples
    --------
    >>> import numpy as np
    >>> from optcore import reference
    >>> table = np.ones((3, 1))
    >>> m, v = np.zeros_like(table), np.zeros_like(table)
    >>> reference.sparse_adam_rows(table, [1, 1], np.ones((2, 1)), m, v, step=1, lr=0.1)
    >>> table.ravel().round(4).tolist(), m.ravel().round(4).tolist()
    ([1.0, 0.9, 1.0], [0.0, 0.2, 0.0])
    """
    unique, grad = _coalesced(indices, rows)
    if unique.size == 0:
        return
    t = param.dtype.type
    grad = -grad if maximize else grad
    old_m, old_v = exp_avg[unique], exp_avg_sq[unique]
    upd_m = (grad - old_m) * t(1 - beta1)
    upd_v = (grad * grad - old_v) * t(1 - beta2)
    exp_avg[unique] = old_m + upd_m
    exp_avg_sq[unique] = old_v + upd_v
    step_size = lr * (1 - beta2**step) ** 0.5 / (1 - beta1**step)
    denom = np.sqrt(upd_v + old_v) + t(eps)
    param[unique] = param[unique] + t(-step_size) * ((upd_m + old_m) / denom)


def adagrad_rows(param: NDArray, indices: ArrayLike, rows: NDArray, state_sum: NDArray, *,
                 step: int, lr: float = 1e-2, lr_decay: float = 0.0, eps: float = 1e-10,
                 maximize: bool = False) -> None:
    """The NumPy twin of :func:`optcore.adagrad_rows` (same arguments).

    Parameters
    ----------
    param : numpy.ndarray
        The parameter; its first axis is the row axis.
    indices : array_like of int
        The row numbers of the gradient, duplicates allowed.
    rows : numpy.ndarray
        The gradient rows, one per index.
    state_sum : numpy.ndarray
        The running sum of squared gradients.
    step : int
        The step number, from 1.
    lr : float, optional
        Learning rate.
    lr_decay : float, optional
        Learning-rate decay.
    eps : float, optional
        Added to the square root of `state_sum`.
    maximize : bool, optional
        Ascend instead of descend.

    Returns
    -------
    None
        The arrays are updated in place.

    See Also
    --------
    optcore.adagrad_rows : The native function.

    Examples
    --------
    >>> import numpy as np
    >>> from optcore import reference
    >>> table, total = np.ones((2, 1)), np.zeros((2, 1))
    >>> reference.adagrad_rows(table, [0], np.full((1, 1), 2.0), total, step=1, lr=0.5)
    >>> table.ravel().round(4).tolist()
    [0.5, 1.0]
    """
    unique, grad = _coalesced(indices, rows)
    if unique.size == 0:
        return
    t = param.dtype.type
    grad = -grad if maximize else grad
    clr = lr / (1 + (step - 1) * lr_decay)
    total = state_sum[unique] + grad * grad
    state_sum[unique] = total
    param[unique] = param[unique] + t(-clr) * (grad / (np.sqrt(total) + t(eps)))


def sgd_rows(param: NDArray, indices: ArrayLike, rows: NDArray, *, lr: float = 1e-3,
             maximize: bool = False) -> None:
    """The NumPy twin of :func:`optcore.sgd_rows` (same arguments).

    Parameters
    ----------
    param : numpy.ndarray
        The parameter; its first axis is the row axis.
    indices : array_like of int
        The row numbers of the gradient, duplicates allowed.
    rows : numpy.ndarray
        The gradient rows, one per index.
    lr : float, optional
        Learning rate.
    maximize : bool, optional
        Ascend instead of descend.

    Returns
    -------
    None
        `param` is updated in place.

    See Also
    --------
    optcore.sgd_rows : The native function.

    Examples
    --------
    >>> import numpy as np
    >>> from optcore import reference
    >>> table = np.zeros((2, 1))
    >>> reference.sgd_rows(table, [1, 1], np.ones((2, 1)), lr=0.5)
    >>> table.ravel().tolist()
    [0.0, -1.0]
    """
    idx = np.asarray(indices, dtype=np.intp).reshape(-1)
    alpha = param.dtype.type(lr if maximize else -lr)
    for k in range(idx.size):
        param[idx[k]] = param[idx[k]] + alpha * rows[k]
