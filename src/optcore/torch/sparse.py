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
    accepts them: SGD and Adagrad without weight decay and without
    ``fused=True`` (torch's messages otherwise); SGD's momentum with a sparse
    gradient (a sparse momentum buffer in torch.optim) is not supported."""

    param_groups: list[dict[str, Any]]
    state: Any

    def _sparse_step(self, group: dict[str, Any], p: Tensor, g: Tensor) -> Callable[[], None]:
        """The checked step of one sparse gradient, to run after the dense ones."""
        name = type(self).__name__
        if name == "SGD":
            if group.get("fused"):
                raise RuntimeError("`_fused_sgd` does not support sparse gradients")
            if group["momentum"] != 0:
                raise NotImplementedError(
                    "optcore.torch.SGD does not support sparse gradients with momentum "
                    "(torch.optim keeps a sparse momentum buffer there; use torch.optim.SGD)")
            if group["weight_decay"] != 0:
                raise RuntimeError("add(sparse, dense) is not supported. Use add(dense, "
                                   "sparse) instead.")
            view, idx, values = sparse_rows_of(p, g)
            lr, maximize = _scalar(group["lr"]), group["maximize"]
            return lambda: sparse_rows.sgd_rows(view, idx, values, lr=lr, maximize=maximize)
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

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Take one step: dense gradients in the kernel calls, sparse COO ones
        on the rows they touch.

        Every sparse gradient is checked before the first write; then the
        dense step runs (it checks its own calls first), then the sparse ones.

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
            A sparse gradient where torch refuses one (torch's message).
        NotImplementedError
            A sparse gradient for SGD with momentum.

        Examples
        --------
        >>> import torch
        >>> import optcore.torch
        >>> w = torch.nn.Parameter(torch.zeros(3, 1))
        >>> opt = optcore.torch.SGD([w], lr=0.5)
        >>> w.grad = torch.sparse_coo_tensor([[0, 0]], [[1.0], [1.0]], (3, 1),
        ...                                  check_invariants=True)
        >>> opt.step()
        >>> w.detach().ravel().tolist()
        [-1.0, 0.0, 0.0]
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        runs: list[Callable[[], None]] = []
        swapped: list[tuple[Tensor, Tensor]] = []
        try:
            for group in self.param_groups:
                for p in group["params"]:
                    g = p.grad
                    if g is None or not g.is_sparse:
                        continue
                    runs.append(self._sparse_step(group, p, g))
                    swapped.append((p, g))
                    p.grad = None                  # the dense step skips it
            super().step()  # type: ignore[misc]
        finally:
            for p, g in swapped:
                p.grad = g
        for run in runs:
            run()
        return loss
