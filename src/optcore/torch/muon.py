"""optcore.torch.Muon: torch.optim.Muon's class, with optcore's Muon rules
(``optcore.optim._muon``, shared with the NumPy ``optcore.Muon``): the matrix
products are torch's bfloat16 BLAS calls, the elementwise parts optcore's
one-pass kernels (``muon_momentum``, ``muon_apply``) over NumPy views of the
CPU tensors, with torch's bits. A parameter, gradient or buffer the kernels
cannot view in place (not C-contiguous, not float32/float64) is stepped
with torch's tensor operations, as torch.optim.Muon steps it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

import numpy as np

from optcore.optim._muon import adjust_lr, apply_update, check_ns_options, check_options
from optcore.kernels.muon import muon_momentum

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from torch import Tensor
    from torch.optim.optimizer import ParamsT

__all__ = ["Muon"]


def _orthogonalize(update: Tensor, ns_coefficients: Sequence[float], ns_steps: int,
                   eps: float) -> Tensor:
    """``ns_steps`` quintic Newton–Schulz iterations on a bfloat16 copy of
    ``update`` (torch's precision), on its wide orientation; returns bfloat16."""
    a, b, c = ns_coefficients
    x = update.bfloat16()
    tall = update.size(0) > update.size(1)
    if tall:
        x = x.T
    x.div_(x.norm().clamp(min=eps))
    for _ in range(ns_steps):
        gram = x @ x.T
        poly = torch.addmm(gram, gram, gram, beta=b, alpha=c)
        x = torch.addmm(x, poly, x, beta=a)
    return x.T if tall else x


def _views(p: Tensor, grad: Tensor, buf: Tensor) -> tuple[Any, Any, Any] | None:
    """NumPy views sharing the memory of p, its gradient and its momentum
    buffer, when the kernels can update them in place (CPU, C-contiguous,
    float32/float64, one dtype); else None."""
    for t in (p, grad, buf):
        if (t.device.type != "cpu" or t.layout is not torch.strided
                or t.dtype not in (torch.float32, torch.float64) or t.dtype != p.dtype
                or not t.is_contiguous() or t.is_conj() or t.is_neg()):
            return None
    return p.detach().numpy(), grad.detach().numpy(), buf.detach().numpy()


class Muon(torch.optim.Optimizer):
    """Muon with torch.optim.Muon's arguments, defaults, errors and state.

    For 2-D parameters (hidden layers' weight matrices). Each step, per
    parameter with a gradient: the momentum buffer becomes ``lerp(buf, grad,
    1 - momentum)``; the update is ``lerp(grad, buf, momentum)`` with
    Nesterov, else the buffer; ``ns_steps`` Newton–Schulz iterations with
    ``ns_coefficients`` orthogonalize it in bfloat16, as torch does; the
    parameter decays by ``1 - lr * weight_decay`` and moves by the
    orthogonalized update times the adjusted learning rate
    (``adjust_lr_fn``). The state key is torch's ``momentum_buffer``, so
    state_dicts load both ways. It is not a kernel optimizer: it takes what
    torch.optim.Muon takes (non-contiguous parameters included).

    Parameters
    ----------
    params : iterable of torch.Tensor or dict
        The 2-D parameters, or parameter groups.
    lr : float or torch.Tensor, default 1e-3
        The learning rate before adjustment.
    weight_decay : float, default 0.1
        Decoupled weight decay.
    momentum : float, default 0.95
        The momentum factor.
    nesterov : bool, default True
        Nesterov momentum.
    ns_coefficients : tuple of 3 floats, default (3.4445, -4.775, 2.0315)
        The quintic's coefficients ``(a, b, c)``.
    eps : float, default 1e-7
        The smallest norm the update is divided by.
    ns_steps : int, default 5
        Newton–Schulz iterations (fewer than 100).
    adjust_lr_fn : {None, "original", "match_rms_adamw"}, default None
        The learning-rate adjustment (None is ``"original"``).

    Raises
    ------
    ValueError
        With torch's messages: a tensor ``lr`` of more than one element, a
        negative ``lr``, ``momentum`` or ``weight_decay``, an unknown
        ``adjust_lr_fn``, a parameter that is not 2-D.

    See Also
    --------
    optcore.Muon : The same optimizer over NumPy arrays.

    Examples
    --------
    >>> import torch
    >>> import optcore.torch
    >>> w = torch.nn.Parameter(torch.zeros(2, 3))
    >>> opt = optcore.torch.Muon([w], lr=0.1, weight_decay=0.0)
    >>> w.grad = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    >>> opt.step()
    >>> [[round(v, 1) for v in row] for row in w.tolist()]
    [[-0.1, 0.0, 0.0], [0.0, -0.1, 0.0]]
    """

    def __init__(self, params: ParamsT, lr: float | Tensor = 1e-3, weight_decay: float = 0.1,
                 momentum: float = 0.95, nesterov: bool = True,
                 ns_coefficients: tuple[float, float, float] = (3.4445, -4.7750, 2.0315),
                 eps: float = 1e-7, ns_steps: int = 5,
                 adjust_lr_fn: str | None = None) -> None:
        check_options(lr, weight_decay, momentum, adjust_lr_fn,
                      lr.numel() if isinstance(lr, torch.Tensor) else None)
        defaults = {"lr": lr, "weight_decay": weight_decay, "momentum": momentum,
                    "nesterov": nesterov, "ns_coefficients": ns_coefficients, "eps": eps,
                    "ns_steps": ns_steps, "adjust_lr_fn": adjust_lr_fn}
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                if p.ndim != 2:
                    raise ValueError("Muon only supports 2D parameters whereas we found a "
                                     f"parameter with size: {p.size()}")

    def _with_grads(self, group: dict[str, Any]) -> list[Tensor]:
        """The group's parameters with a gradient, checked, their momentum
        buffers created (before any parameter of the group is written)."""
        params = []
        for p in group["params"]:
            if p.grad is None:
                continue
            if torch.is_complex(p):
                raise RuntimeError("Muon does not support complex parameters")
            if p.grad.is_sparse:
                raise RuntimeError("Muon does not support sparse gradients")
            if p.grad.ndim != 2:
                raise ValueError("Param gradient must be a 2D matrix")
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(
                    p.grad, memory_format=torch.preserve_format)
            params.append(p)
        return params

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Take one Muon step for every parameter with a gradient.

        Parameters
        ----------
        closure : callable, optional
            Re-evaluates the model and returns the loss (called with
            gradients enabled).

        Returns
        -------
        Any
            The closure's loss, or None.

        Raises
        ------
        RuntimeError
            With torch's messages: a complex parameter or a sparse gradient.
        ValueError
            With torch's messages: ``ns_steps`` of 100 or more, or
            ``ns_coefficients`` without exactly 3 values.

        Examples
        --------
        >>> import torch
        >>> import optcore.torch
        >>> w = torch.nn.Parameter(torch.ones(2, 2, dtype=torch.float64))
        >>> opt = optcore.torch.Muon([w], lr=0.5, weight_decay=0.0)
        >>> w.grad = torch.ones(2, 2, dtype=torch.float64)
        >>> opt.step()
        >>> opt.state[w]["momentum_buffer"].round(decimals=2).tolist()
        [[0.05, 0.05], [0.05, 0.05]]
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = self._with_grads(group)
            if not params:
                continue
            check_ns_options(group["ns_coefficients"], group["ns_steps"])
            lr = group["lr"]
            if isinstance(lr, torch.Tensor) and lr.dim() != 0:
                lr = lr.squeeze()
            momentum = group["momentum"]
            for p in params:
                grad, buf = p.grad, self.state[p]["momentum_buffer"]
                assert grad is not None                   # (_with_grads kept these)
                decay = 1 - lr * group["weight_decay"]
                step_lr = adjust_lr(lr, group["adjust_lr_fn"], p.shape)
                views = _views(p, grad, buf)
                if views is None:                         # torch.optim.Muon's operations
                    buf.lerp_(grad, 1 - momentum)
                    update = grad.lerp(buf, momentum) if group["nesterov"] else buf
                    ortho = _orthogonalize(update, group["ns_coefficients"],
                                           group["ns_steps"], group["eps"])
                    p.mul_(decay)
                    p.add_(ortho, alpha=-step_lr)
                    continue
                p_np, g_np, b_np = views
                out = np.empty(b_np.shape, b_np.dtype) if group["nesterov"] else None
                muon_momentum(g_np, b_np, out, momentum=momentum,
                              nesterov=group["nesterov"])
                update = buf if out is None else torch.from_numpy(out)
                ortho = _orthogonalize(update, group["ns_coefficients"], group["ns_steps"],
                                       group["eps"])
                wide = torch.empty(p.shape, dtype=p.dtype)
                wide.copy_(ortho)                         # bfloat16 -> p's dtype, p's order
                apply_update(p_np, wide.numpy(), float(step_lr), float(decay))
        return loss
