"""Sparse COO gradients in optcore.torch: the SparseAdam class and the
row-sparse steps of SGD and Adagrad, over ``optcore.kernels.sparse_rows``.

A COO gradient with ``sparse_dim`` sparse dimensions is read as rows: the
parameter as ``(prod(shape[:sparse_dim]), prod(shape[sparse_dim:]))``, the
gradient's indices as row numbers of that view and its values as the rows
(zero-copy for the parameter and state; the indices are linearised).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from optcore.kernels import sparse_rows

if TYPE_CHECKING:
    from collections.abc import Callable

    from torch import Tensor
    from torch.optim.optimizer import ParamsT

__all__ = ["SparseAdam", "SparseGrads"]


def _rows_view(t: Tensor, sparse_dim: int) -> np.ndarray:
    """A zero-copy (rows, width) NumPy view of a dense parameter or state."""
    if t.dtype not in (torch.float32, torch.float64) or t.device.type != "cpu":
        raise TypeError(f"optcore.torch steps CPU float32/float64 tensors, got "
                        f"{t.dtype} on {t.device}")
    if not t.is_contiguous():
        raise ValueError("optcore.torch needs contiguous parameters for sparse gradients")
    a = t.detach().numpy()
    nrows = int(np.prod(t.shape[:sparse_dim], dtype=np.int64))
    return a.reshape(nrows, -1) if nrows else a.reshape(0, 0)


def sparse_rows_of(param: Tensor, grad: Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The parameter's (rows, width) view, the row numbers and the rows of a
    COO gradient (duplicates kept: the kernels sum them as coalesce does)."""
    if grad.shape != param.shape or grad.dtype != param.dtype:
        raise RuntimeError(f"the sparse gradient ({grad.dtype}, {tuple(grad.shape)}) does "
                           f"not match its parameter ({param.dtype}, {tuple(param.shape)})")
    sparse_dim = grad.sparse_dim()
    view = _rows_view(param, sparse_dim)
    idx = grad._indices().numpy()
    if sparse_dim:
        rows_idx = np.ravel_multi_index(tuple(idx), tuple(param.shape[:sparse_dim]))
    else:
        rows_idx = np.zeros(grad._nnz(), np.intp)
    values = grad._values().detach().numpy().reshape(len(rows_idx), view.shape[1])
    return view, np.asarray(rows_idx, np.intp), values


def sparse_sgd_step(param: Tensor, grad: Tensor, *, lr: float, maximize: bool) -> None:
    """SGD without momentum or weight decay for one sparse gradient."""
    view, idx, values = sparse_rows_of(param, grad)
    sparse_rows.sgd_rows(view, idx, values, lr=lr, maximize=maximize)


def sparse_adagrad_step(param: Tensor, grad: Tensor, state_sum: Tensor, *, step: int,
                        lr: float, lr_decay: float, eps: float, maximize: bool) -> None:
    """Adagrad for one sparse gradient (torch refuses weight decay there)."""
    view, idx, values = sparse_rows_of(param, grad)
    sums = _rows_view(state_sum, grad.sparse_dim())
    sparse_rows.adagrad_rows(view, idx, values, sums, step=step, lr=lr,
                             lr_decay=lr_decay, eps=eps, maximize=maximize)


def _scalar(value: Any) -> float:
    return float(value.item()) if isinstance(value, torch.Tensor) else float(value)


class SparseAdam(torch.optim.Optimizer):
    """The torch.optim.SparseAdam drop-in, over optcore's row-sparse kernel.

    Adam for dense parameters with sparse COO gradients (e.g. those of
    ``nn.Embedding(sparse=True)``): only the values the gradient holds update
    the moments and the parameter. torch.optim.SparseAdam's signature,
    defaults, checks and messages, state keys (``step`` as an int,
    ``exp_avg``, ``exp_avg_sq``) and state_dict layout.

    Parameters
    ----------
    params : iterable
        Tensors or parameter-group dicts (dense float32/float64 CPU tensors).
    lr : float or Tensor, optional
        Learning rate (a one-element tensor is read as its value).
    betas : tuple of float, optional
        The moments' decay rates.
    eps : float, optional
        Added to the square root of the second moment.
    maximize : bool, optional
        Ascend instead of descend.

    Raises
    ------
    ValueError
        A bad hyperparameter, sparse or complex parameters (torch's messages).

    See Also
    --------
    optcore.SparseAdam : The NumPy class (row-sparse gradients).
    optcore.sparse_adam_rows : The kernel.

    Examples
    --------
    >>> import torch
    >>> from optcore.torch import SparseAdam
    >>> emb = torch.nn.Embedding(5, 2, sparse=True)
    >>> opt = SparseAdam(emb.parameters(), lr=0.1)
    >>> before = emb.weight.detach().clone()
    >>> emb(torch.tensor([1, 3, 1])).sum().backward()
    >>> opt.step()
    >>> (emb.weight != before).any(dim=1).tolist()
    [False, True, False, True, False]
    """

    def __init__(self, params: ParamsT, lr: float | Tensor = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 maximize: bool = False) -> None:
        if isinstance(lr, torch.Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        if not 0.0 < lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 < eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        for i in (0, 1):
            if not 0.0 <= betas[i] < 1.0:
                raise ValueError(f"Invalid beta parameter at index {i}: {betas[i]}")
        defaults = {"lr": lr, "betas": betas, "eps": eps, "maximize": maximize}
        super().__init__(params, defaults)
        where: dict[str, list[list[int]]] = {"sparse": [], "complex": []}
        for gi, group in enumerate(self.param_groups):
            for pi, p in enumerate(group["params"]):
                if p.is_sparse:
                    where["sparse"].append([gi, pi])
                if p.is_complex():
                    where["complex"].append([gi, pi])
        if where["sparse"]:
            raise ValueError(f"Sparse params at indices {where['sparse']}: SparseAdam "
                             f"requires dense parameter tensors")
        if where["complex"]:
            raise ValueError(f"Complex params at indices {where['complex']}: SparseAdam "
                             f"does not support complex parameters")

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Take one step for every parameter with a (sparse) gradient.

        Every gradient of the step is checked before the first write.

        Parameters
        ----------
        closure : callable, optional
            Re-evaluates the model and returns the loss (run with grad
            enabled, before the step).

        Returns
        -------
        object
            The closure's loss, or None.

        Raises
        ------
        RuntimeError
            A dense gradient (torch's message).

        Examples
        --------
        >>> import torch
        >>> from optcore.torch import SparseAdam
        >>> w = torch.nn.Parameter(torch.zeros(3, 1))
        >>> opt = SparseAdam([w], lr=0.5)
        >>> w.grad = torch.sparse_coo_tensor([[2]], [[1.0]], (3, 1), check_invariants=True)
        >>> opt.step()
        >>> [round(x, 4) for x in w.detach().ravel().tolist()]
        [0.0, 0.0, -0.5]
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        calls = []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if not p.grad.is_sparse:
                    raise RuntimeError("SparseAdam does not support dense gradients, "
                                       "please consider Adam instead")
                calls.append((group, p, sparse_rows_of(p, p.grad)))
        for group, p, (view, idx, values) in calls:
            state = self.state[p]
            if len(state) == 0:
                state["step"] = 0
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["step"] += 1
            sparse_dim = p.grad.sparse_dim()
            beta1, beta2 = _scalar(group["betas"][0]), _scalar(group["betas"][1])
            # torch's step size, in a tensor lr's dtype when lr is a tensor
            step = state["step"]
            step_size = _scalar(group["lr"] * math.sqrt(1 - beta2**step) / (1 - beta1**step))
            sparse_rows.adam_rows_at(
                view, idx, values, _rows_view(state["exp_avg"], sparse_dim),
                _rows_view(state["exp_avg_sq"], sparse_dim), step_size, beta1, beta2,
                group["eps"], group.get("maximize", False))
        return loss


class SparseGrads:
    """Sparse COO gradients for optcore.torch.SGD and Adagrad, where torch
    accepts them: without weight decay and without ``fused=True`` (torch's
    messages otherwise). Each is checked while the step is planned and
    stepped after the dense gradients (``KernelOptimizer._sparse_step``).

    SGD with momentum keeps torch's sparse momentum buffer (a COO tensor,
    kept coalesced here: the same values as torch's uncoalesced one, to
    rounding where rows repeat): a step reads and writes the rows the buffer
    holds, i.e. every row touched since the buffer was made, as torch's does.
    A dense buffer (made by a dense gradient) takes a sparse gradient as
    torch does: the buffer and then the whole parameter are updated.
    """

    param_groups: list[dict[str, Any]]
    state: Any

    def _sparse_step(self, gi: int, j: int, group: dict[str, Any], p: Tensor,
                     g: Tensor) -> Callable[[], None]:
        """The checked step of one sparse gradient, to run after the dense ones."""
        if type(self).__name__ != "SGD":
            return self._sparse_adagrad(group, p, g)
        if group.get("fused"):
            raise RuntimeError("`_fused_sgd` does not support sparse gradients")
        if group["weight_decay"] != 0:
            raise RuntimeError(_SPARSE_DENSE)
        view, idx, values = sparse_rows_of(p, g)
        lr, maximize = _scalar(group["lr"]), group["maximize"]
        if group["momentum"] == 0:
            return lambda: sparse_rows.sgd_rows(view, idx, values, lr=lr, maximize=maximize)
        return _momentum_step(self.state[p], p, g, view, idx, values, group, lr)

    def _sparse_adagrad(self, group: dict[str, Any], p: Tensor,
                        g: Tensor) -> Callable[[], None]:
        if group.get("fused"):
            raise RuntimeError("`fused` does not support sparse grad or complex param")
        if group["weight_decay"] != 0:
            raise RuntimeError("weight_decay option is not compatible with sparse gradients")
        state = self.state[p]
        view, idx, values = sparse_rows_of(p, g)
        sums = _rows_view(state["sum"], g.sparse_dim())

        def run() -> None:
            state["step"] += 1
            sparse_rows.adagrad_rows(view, idx, values, sums, step=int(state["step"]),
                                     lr=_scalar(group["lr"]), lr_decay=group["lr_decay"],
                                     eps=group["eps"], maximize=group["maximize"])
        return run

    def _slot(self, p: Tensor, state: dict[str, Any], *args: Any) -> Any:
        # A dense gradient meets the sparse momentum buffer of earlier sparse
        # ones: torch's buf.add_(grad) refuses it.
        buf = state.get("momentum_buffer")
        if buf is not None and buf.is_sparse:
            raise RuntimeError(_SPARSE_DENSE)
        return super()._slot(p, state, *args)  # type: ignore[misc]


_SPARSE_DENSE = "add(sparse, dense) is not supported. Use add(dense, sparse) instead."


def _momentum_step(state: dict[str, Any], p: Tensor, g: Tensor, view: np.ndarray,
                   idx: np.ndarray, values: np.ndarray, group: dict[str, Any],
                   lr: float) -> Callable[[], None]:
    """torch.optim.SGD's momentum step for a sparse gradient, computed now
    (nothing written), applied by the returned function."""
    momentum, dampening = float(group["momentum"]), float(group["dampening"])
    nesterov, maximize = bool(group["nesterov"]), bool(group["maximize"])
    buf = state.get("momentum_buffer")
    t = view.dtype.type
    if buf is not None and not buf.is_sparse:
        # torch: buf.mul_(m).add_(grad, alpha=1 - dampening) keeps it dense,
        # then p.add_(buf, alpha=-lr) over the whole parameter.
        if nesterov:
            raise RuntimeError(_SPARSE_DENSE)
        if buf.shape != p.shape or buf.dtype != p.dtype:
            raise RuntimeError(f"the momentum buffer ({buf.dtype}, {tuple(buf.shape)}) does "
                               f"not match its parameter ({p.dtype}, {tuple(p.shape)})")
        buf_view = _rows_view(buf, g.sparse_dim())

        def dense() -> None:
            buf.mul_(momentum)
            # buf[i] += ±(1 - dampening) * row, rows one after the other (torch's add_)
            sparse_rows.sgd_rows(buf_view, idx, values, lr=-(1.0 - dampening),
                                 maximize=maximize)
            p.add_(buf, alpha=-lr)
        return dense
    # The gradient coalesced: its distinct rows, duplicates summed in order of
    # appearance (torch's coalesce), negated for maximize.
    touched, position = np.unique(idx, return_inverse=True)
    summed = np.zeros((touched.size, view.shape[1]), view.dtype)
    sparse_rows.sgd_rows(summed, position, values, lr=1.0 if maximize else -1.0)
    if buf is None:                                  # torch: buf = grad.clone()
        live, rows = touched, summed
    else:
        held, held_rows = _buffer_rows(buf, p, g.sparse_dim())
        live = np.union1d(held, touched)
        rows = np.zeros((live.size, view.shape[1]), view.dtype)
        rows[np.searchsorted(live, held)] = held_rows * t(momentum)
        at = np.searchsorted(live, touched)
        rows[at] += summed * t(1.0 - dampening)
    update = rows
    if nesterov:                                     # grad.add(buf, alpha=momentum)
        update = rows * t(momentum)
        update[np.searchsorted(live, touched)] += summed
    new_buf = _coo(live, rows, p, g.sparse_dim())

    def run() -> None:
        sparse_rows.sgd_rows(view, live, update, lr=lr)
        if buf is None:
            state["momentum_buffer"] = new_buf
        else:
            buf.copy_(new_buf)           # in place, as torch's buf.mul_().add_()
    return run


def _buffer_rows(buf: Tensor, p: Tensor, sparse_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """The rows a sparse momentum buffer holds (sorted) and their values."""
    if buf.shape != p.shape or buf.dtype != p.dtype or buf.sparse_dim() != sparse_dim:
        raise RuntimeError(f"the sparse momentum buffer ({buf.dtype}, {tuple(buf.shape)}, "
                           f"sparse_dim {buf.sparse_dim()}) does not match the parameter "
                           f"({p.dtype}, {tuple(p.shape)}) and its gradient (sparse_dim "
                           f"{sparse_dim})")
    buf = buf.coalesce()                 # a no-op for the buffers made here
    idx = buf._indices().numpy()
    shape = tuple(p.shape[:sparse_dim])
    rows = np.ravel_multi_index(tuple(idx), shape) if sparse_dim else np.zeros(
        buf._nnz(), np.intp)
    width = int(np.prod(p.shape[sparse_dim:], dtype=np.int64))
    return np.asarray(rows, np.intp), buf._values().numpy().reshape(len(rows), width)


def _coo(live: np.ndarray, rows: np.ndarray, p: Tensor, sparse_dim: int) -> Tensor:
    shape = tuple(p.shape[:sparse_dim])
    idx = np.stack(np.unravel_index(live, shape)) if sparse_dim else np.zeros((0, live.size))
    values = torch.from_numpy(rows).reshape(live.size, *p.shape[sparse_dim:])
    return torch.sparse_coo_tensor(torch.from_numpy(idx.astype(np.int64)), values,
                                   p.shape, is_coalesced=True, check_invariants=False)
