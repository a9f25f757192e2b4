"""optcore.torch.LBFGS: torch.optim.LBFGS's class over optcore's L-BFGS
(``optcore.optim._lbfgs``, shared with the NumPy ``optcore.LBFGS``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from optcore.optim._lbfgs import check_options, lbfgs_step

if TYPE_CHECKING:
    from collections.abc import Callable

    from torch import Tensor
    from torch.optim.optimizer import ParamsT

__all__ = ["LBFGS"]


class _TorchOps:
    """The flat-vector operations on 1-D tensors (torch's BLAS dot products;
    scalars are 0-dim tensors in the parameters' dtype, as in torch.optim)."""

    @staticmethod
    def dot(a: Tensor, b: Tensor) -> Tensor:
        return a.dot(b)

    @staticmethod
    def abs_max(a: Tensor) -> Tensor:
        return a.abs().max()

    @staticmethod
    def abs_sum(a: Tensor) -> Tensor:
        return a.abs().sum()

    @staticmethod
    def neg(a: Tensor) -> Tensor:
        return a.neg()

    @staticmethod
    def sub(a: Tensor, b: Tensor) -> Tensor:
        return a.sub(b)

    @staticmethod
    def scaled(a: Tensor, s: Any) -> Tensor:
        return torch.mul(a, s)

    @staticmethod
    def axpy_(y: Tensor, alpha: Any, x: Tensor) -> None:
        y.add_(x, alpha=alpha)

    @staticmethod
    def clone(a: Tensor) -> Tensor:
        return a.clone(memory_format=torch.contiguous_format)

    @staticmethod
    def copy_(dst: Tensor, src: Tensor) -> None:
        dst.copy_(src)

    @staticmethod
    def sqrt(s: Tensor) -> Tensor:
        return s.sqrt()


_OPS = _TorchOps()


class _Parameters:
    """The parameters of one LBFGS as one flat vector: gradients gathered into
    a fresh flat buffer, each parameter moved in place by its slice of a flat
    direction (complex ones as their real/imaginary pairs)."""

    def __init__(self, params: list[Tensor], closure: Callable[[], Any]) -> None:
        self.params = params
        self._closure = closure
        self.real = [torch.view_as_real(p) if torch.is_complex(p) else p for p in params]
        self.numel = sum(p.numel() for p in self.real)

    def closure(self) -> Any:
        with torch.enable_grad():
            return self._closure()

    def flat_grad(self) -> Tensor:
        views = []
        for p in self.params:
            g = p.grad
            if g is None:
                view = p.new_zeros(p.numel())
            elif g.is_sparse:
                view = g.to_dense().reshape(-1)
            else:
                view = g.reshape(-1)
            views.append(torch.view_as_real(view).reshape(-1) if view.is_complex() else view)
        return torch.cat(views, 0)

    def add_(self, t: Any, d: Tensor) -> None:
        offset = 0
        for p in self.real:
            n = p.numel()
            p.add_(d[offset:offset + n].view_as(p), alpha=t)
            offset += n

    def clone_params(self) -> list[Tensor]:
        return [p.clone(memory_format=torch.contiguous_format) for p in self.params]

    def set_params(self, saved: list[Tensor]) -> None:
        for p, s in zip(self.params, saved, strict=True):
            p.copy_(s)


class LBFGS(torch.optim.Optimizer):
    """L-BFGS with torch.optim.LBFGS's arguments, state and results.

    A quasi-Newton method: each ``step(closure)`` runs up to ``max_iter``
    iterations, each moving along ``-H g`` where ``H`` is the inverse Hessian
    estimate of the last ``history_size`` correction pairs (the two-loop
    recursion over flat buffers, with torch's BLAS dot products), with a
    fixed step ``lr`` or a strong-Wolfe line search. Parameters stay the
    user's tensors and are updated in place; gradients are gathered into one
    flat buffer per evaluation. The state (torch's keys ``func_evals``,
    ``n_iter``, ``d``, ``t``, ``old_dirs``, ``old_stps``, ``ro``, ``H_diag``,
    ``prev_flat_grad``, ``prev_loss``, ``al``) is kept under the first
    parameter, as torch does, so state_dicts load both ways.

    Parameters
    ----------
    params : iterable of torch.Tensor or dict
        The parameters (one group only).
    lr : float or torch.Tensor, default 1
        The step length (the line search's first trial).
    max_iter : int, default 20
        Iterations per ``step``.
    max_eval : int or None, default None
        Closure evaluations per ``step``; ``None`` means ``max_iter * 5 // 4``.
    tolerance_grad : float, default 1e-7
        Stop when the gradient's largest magnitude is at most this.
    tolerance_change : float, default 1e-9
        Stop when the loss or the parameters change less than this.
    history_size : int, default 100
        Correction pairs kept.
    line_search_fn : {None, "strong_wolfe"}, default None
        The line search.

    Raises
    ------
    ValueError
        With torch's messages: a negative ``lr``, a tensor ``lr`` of more than
        one element, more than one parameter group.

    See Also
    --------
    optcore.LBFGS : The same algorithm over NumPy arrays.

    Examples
    --------
    >>> import torch
    >>> import optcore.torch
    >>> x = torch.nn.Parameter(torch.tensor([-1.5, 2.0], dtype=torch.float64))
    >>> opt = optcore.torch.LBFGS([x], line_search_fn="strong_wolfe")
    >>> def closure():
    ...     opt.zero_grad()
    ...     loss = (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2
    ...     loss.backward()
    ...     return loss
    >>> for _ in range(5):
    ...     _ = opt.step(closure)
    >>> [round(v, 4) for v in x.tolist()]
    [1.0, 1.0]
    """

    def __init__(self, params: ParamsT, lr: float | Tensor = 1, max_iter: int = 20,
                 max_eval: int | None = None, tolerance_grad: float = 1e-7,
                 tolerance_change: float = 1e-9, history_size: int = 100,
                 line_search_fn: str | None = None) -> None:
        if isinstance(lr, torch.Tensor):
            check_options(lr, True, lr.numel())
        else:
            check_options(lr, False, None)
        if max_eval is None:
            max_eval = max_iter * 5 // 4
        defaults = {"lr": lr, "max_iter": max_iter, "max_eval": max_eval,
                    "tolerance_grad": tolerance_grad, "tolerance_change": tolerance_change,
                    "history_size": history_size, "line_search_fn": line_search_fn}
        super().__init__(params, defaults)
        if len(self.param_groups) != 1:
            raise ValueError("LBFGS doesn't support per-parameter options (parameter groups)")

    @torch.no_grad()
    def step(self, closure: Callable[[], Any]) -> Any:  # type: ignore[override]
        """Run up to ``max_iter`` L-BFGS iterations.

        Parameters
        ----------
        closure : callable
            Clears the gradients, evaluates the model, calls ``backward`` and
            returns the loss; called with gradients enabled, up to
            ``max_eval`` times.

        Returns
        -------
        Any
            The closure's first result (the loss before this step).

        Examples
        --------
        >>> import torch
        >>> import optcore.torch
        >>> w = torch.nn.Parameter(torch.tensor([3.0], dtype=torch.float64))
        >>> opt = optcore.torch.LBFGS([w])
        >>> def closure():
        ...     opt.zero_grad()
        ...     loss = ((w - 1) ** 2).sum()
        ...     loss.backward()
        ...     return loss
        >>> opt.step(closure).item()
        4.0
        >>> round(w.item(), 6)
        1.0
        """
        if len(self.param_groups) != 1:
            raise AssertionError(
                f"Expected exactly one param_group, but got {len(self.param_groups)}")
        group = self.param_groups[0]
        params = group["params"]
        lr = group["lr"]
        if isinstance(lr, torch.Tensor) and lr.dim() != 0:
            lr = lr.squeeze()
        return lbfgs_step(self.state[params[0]], group, lr, _Parameters(params, closure),
                          _OPS)
