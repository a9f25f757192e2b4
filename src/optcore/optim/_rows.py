"""Row-form sparse gradients of the NumPy optimizers: ``(indices, rows)``, k
row numbers of the parameter's first axis and the k gradient rows (shape
``(k, *param.shape[1:])``), as ``optcore.SparseAdam`` takes them. optcore.SGD
(without momentum) and optcore.Adagrad step them on the touched rows
(``optcore.kernels.sparse_rows``), as torch.optim steps sparse COO gradients.

SGD with momentum steps the dense gradient the rows stand for (duplicates
summed in order): torch's sparse momentum buffer comes to hold every row
touched, and a step reads and writes all of them, so optcore keeps the buffer
dense, as a dense gradient makes it, and the step is the dense kernel's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from optcore.kernels import sparse_rows

if TYPE_CHECKING:
    from optcore.optim.base import Optimizer

__all__ = ["check_rows", "dense_rows", "is_row_form", "row_step"]

_SPARSE_DENSE = "add(sparse, dense) is not supported. Use add(dense, sparse) instead."


def is_row_form(grad: Any, param: np.ndarray) -> bool:
    """Whether ``grad`` is an ``(indices, rows)`` pair for ``param`` (rows with
    the parameter's number of dimensions: never a dense gradient's rows)."""
    return (type(grad) in (tuple, list) and len(grad) == 2
            and isinstance(grad[1], np.ndarray) and grad[1].ndim == param.ndim)


def check_rows(param: np.ndarray, grad: Any, label: str) -> tuple[np.ndarray, np.ndarray]:
    """The checked ``(indices, rows)`` of one row-form gradient; errors name
    ``label`` (the gradient as the user passed it)."""
    idx = np.asarray(grad[0])
    if idx.ndim != 1 or not (idx.dtype.kind in "iu" or idx.size == 0):
        raise TypeError(f"{label}: indices must be a 1-D integer array")
    rows = grad[1]
    if not isinstance(rows, np.ndarray) or rows.dtype != param.dtype:
        raise TypeError(f"{label}: rows must be a numpy.ndarray of the parameter's dtype "
                        f"({param.dtype}), got "
                        f"{getattr(rows, 'dtype', type(rows).__name__)}")
    expect = (idx.shape[0], *param.shape[1:])
    if rows.shape != expect:
        raise ValueError(f"{label}: rows has shape {rows.shape}, expected {expect} "
                         f"(one row per index)")
    if idx.size and (idx.min() < 0 or idx.max() >= param.shape[0]):
        raise IndexError(f"{label}: indices must lie in [0, {param.shape[0]})")
    return idx.astype(np.intp, copy=False), rows


def dense_rows(opt: Optimizer, g: int, j: int, param: np.ndarray, grad: Any,
               hyper: dict[str, Any]) -> np.ndarray | None:
    """The dense gradient a row-form one stands for, where the step is the
    dense kernel's (SGD with momentum); None where it steps the rows."""
    if type(opt).__name__ != "SGD" or hyper["momentum"] == 0 or param.ndim < 1:
        return None
    label = f"the grad of {opt._label(g, j)}"
    idx, rows = check_rows(param, grad, label)
    if hyper["weight_decay"] != 0:
        raise RuntimeError(f"{label}: {_SPARSE_DENSE}")    # torch's message
    dense = np.zeros_like(param, order="C")
    np.add.at(dense, idx, rows)
    return dense


def row_step(opt: Optimizer, g: int, j: int, param: np.ndarray, grad: Any,
             hyper: dict[str, Any]) -> Callable[[], None]:
    """The checked step of parameter j of group g for a row-form gradient,
    to run after the step's dense kernel calls (nothing is written here)."""
    name = type(opt).__name__
    label = f"the grad of {opt._label(g, j)}"
    if name not in ("SGD", "Adagrad") or param.ndim < 1:
        raise TypeError(f"{label}: optcore.{name} takes dense gradients only (row-form "
                        f"(indices, rows) gradients: SGD, Adagrad, SparseAdam)")
    idx, rows = check_rows(param, grad, label)
    sparse_rows._dense(param, opt._label(g, j))     # writeable, C-contiguous
    if name == "SGD":
        if hyper["weight_decay"] != 0:
            raise RuntimeError(f"{label}: {_SPARSE_DENSE}")    # torch's message
        lr, maximize = hyper["lr"], hyper["maximize"]
        return lambda: sparse_rows.sgd_rows(param, idx, rows, lr=lr, maximize=maximize)
    if hyper["weight_decay"] != 0:
        raise RuntimeError(f"{label}: weight_decay option is not compatible with sparse "
                           f"gradients")
    index = opt._starts[g] + j
    entry = opt._state.get(index)
    if entry is not None:
        (step,) = opt._entry_scalars(entry, g, j)
        total = opt._state_arrays(g, j, entry, ("sum",), None)[0]
        if total.shape != param.shape or total.dtype != param.dtype:
            raise ValueError(f"{opt._label(g, j)}, state 'sum': shape {total.shape} and "
                             f"dtype {total.dtype}, the parameter {param.shape}, "
                             f"{param.dtype}")

    def run() -> None:
        nonlocal entry
        if entry is None:              # a group added after the constructor
            opt._init_group_state(g)
            entry = opt._state[index]
        step = int(entry["step"]) + 1
        sparse_rows.adagrad_rows(param, idx, rows, entry["sum"], step=step,
                                 lr=hyper["lr"], lr_decay=hyper["lr_decay"],
                                 eps=hyper["eps"], maximize=hyper["maximize"])
        entry["step"] = step
    return run
