"""optcore.torch.Adafactor: torch.optim.Adafactor's class over
``optcore.adafactor_step`` (the rules shared with the NumPy class:
``optcore.optim._adafactor``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from optcore.kernels.adafactor import adafactor_step_at
from optcore.optim._adafactor import check_options, kernel_options, state_shapes

if TYPE_CHECKING:
    from collections.abc import Callable

    import numpy as np
    from torch import Tensor
    from torch.optim.optimizer import ParamsT

__all__ = ["Adafactor"]

_NEED = "optcore updates CPU, dense, contiguous float32/float64 tensors"


def _array(t: Tensor) -> np.ndarray:
    return t.detach().numpy()


class Adafactor(torch.optim.Optimizer):
    """Adafactor with torch.optim.Adafactor's arguments, defaults, errors and state.

    Each step, per parameter with a gradient: the step size is
    ``min(lr, 1 / sqrt(step)) * max(eps2, RMS(param))``; a parameter of 2 or
    more dimensions keeps factored second moments of its last two dimensions
    (``row_var``, shape ``p.shape[:-1] + (1,)``, and ``col_var``, shape
    ``p.shape[:-2] + (1, p.shape[-1])``), a 0-D or 1-D one a full
    ``variance``; the update ``grad / sqrt(V)`` is scaled down to an RMS of
    at most ``d``; the weight decay is decoupled. The state keys (``step``, a
    float32 tensor, ``row_var``, ``col_var``, ``variance``) and state_dict
    layout are torch's, so state_dicts load both ways. The parameters are
    updated in place, zero-copy, one ``optcore.adafactor_step`` call per
    group (and step count). ``foreach`` has no effect.

    Parameters
    ----------
    params : iterable of torch.Tensor or dict
        The parameters (CPU, dense, contiguous float32/float64), or groups.
    lr : float or torch.Tensor, default 1e-2
        The learning rate (the cap of the relative step size).
    beta2_decay : float, default -0.8
        The second moments' weight at step t is ``t ** beta2_decay``.
    eps : tuple, default (None, 1e-3)
        ``(eps1, eps2)``: the variance estimate's denominator bound (None:
        the machine epsilon of the group's first parameter's dtype) and the
        lower bound of the parameter RMS in the step size.
    d : float, default 1.0
        Clipping threshold of the update's RMS.
    weight_decay : float, default 0.0
        Decoupled weight decay.
    foreach : bool or None, default None
        Accepted; no effect.
    maximize : bool, default False
        Ascend instead of descend.

    Raises
    ------
    ValueError
        With torch's messages: a tensor ``lr`` of more than one element, or an
        option out of range.

    See Also
    --------
    optcore.Adafactor : The same optimizer over NumPy arrays.
    optcore.adafactor_step : The function of one step.

    Examples
    --------
    >>> import torch
    >>> import optcore.torch
    >>> w = torch.nn.Parameter(torch.ones(2, 3))
    >>> opt = optcore.torch.Adafactor([w])
    >>> w.grad = torch.full((2, 3), 0.5)
    >>> opt.step()
    >>> [round(v, 4) for v in w[0].tolist()]
    [0.99, 0.99, 0.99]
    >>> sorted(opt.state[w])
    ['col_var', 'row_var', 'step']
    """

    def __init__(self, params: ParamsT, lr: float | Tensor = 1e-2, beta2_decay: float = -0.8,
                 eps: tuple[float | None, float] = (None, 1e-3), d: float = 1.0,
                 weight_decay: float = 0.0, *, foreach: bool | None = None,
                 maximize: bool = False) -> None:
        check_options(lr, beta2_decay, eps, d, weight_decay,
                      lr.numel() if isinstance(lr, torch.Tensor) else None)
        defaults = {"lr": lr, "beta2_decay": beta2_decay, "eps": eps, "d": d,
                    "weight_decay": weight_decay, "foreach": foreach, "maximize": maximize}
        super().__init__(params, defaults)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("foreach", None)
            for p in group["params"]:
                p_state = self.state.get(p, [])
                if len(p_state) != 0 and not torch.is_tensor(p_state["step"]):
                    p_state["step"] = torch.tensor(float(p_state["step"]),
                                                   dtype=torch.float32)

    def _with_grads(self, gi: int, group: dict[str, Any]) -> list[Tensor]:
        """The group's parameters with a gradient, checked (torch's errors
        first), their state created; nothing is written to a parameter."""
        params = []
        for j, p in enumerate(group["params"]):
            if p.grad is None:
                continue
            if torch.is_complex(p):
                raise RuntimeError("Adafactor does not support complex parameters")
            if p.grad.is_sparse:
                raise RuntimeError("Adafactor does not support sparse gradients")
            where = f"optcore.torch.Adafactor: param_groups[{gi}]['params'][{j}]"
            if p.device.type != "cpu" or p.layout is not torch.strided:
                raise ValueError(f"{where} is a {p.layout} tensor on {p.device}; {_NEED}")
            if p.dtype not in (torch.float32, torch.float64):
                raise TypeError(f"{where} has dtype {p.dtype}; {_NEED}")
            if not p.is_contiguous():
                raise ValueError(f"{where} is not contiguous (strides {p.stride()}); "
                                 f"{_NEED}")
            if p.numel() == 0:
                # torch.optim.Adafactor divides the norm by numel ** 0.5
                raise ZeroDivisionError("float division by zero")
            state = self.state[p]
            if len(state) == 0:
                state["step"] = torch.tensor(0.0, dtype=torch.float32)
                for key, shape in state_shapes(p.grad.shape).items():
                    state[key] = p.grad.new_zeros(shape)
            params.append(p)
        return params

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Take one Adafactor step for every parameter with a gradient.

        Every parameter and gradient of the step is checked before the first
        write.

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
            A parameter optcore cannot update in place (not CPU, dense and
            contiguous), or state of the wrong shape or dtype.
        TypeError
            A parameter that is not float32/float64.

        Examples
        --------
        >>> import torch
        >>> import optcore.torch
        >>> b = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
        >>> opt = optcore.torch.Adafactor([b], lr=0.1)
        >>> b.grad = torch.ones(2, dtype=torch.float64)
        >>> opt.step()
        >>> opt.state[b]["step"].item(), opt.state[b]["variance"].tolist()
        (1.0, [1.0, 1.0])
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        calls = []
        for gi, group in enumerate(self.param_groups):
            params = self._with_grads(gi, group)
            if not params:
                continue
            eps1 = group["eps"][0]
            if eps1 is None:            # torch: the first parameter's dtype
                eps1 = torch.finfo(params[0].dtype).eps
            by_step: dict[int, list[Tensor]] = {}
            for p in params:
                by_step.setdefault(int(self.state[p]["step"].item()) + 1, []).append(p)
            options = kernel_options(group, eps1)
            lr = group["lr"]
            # torch keeps a tensor lr a tensor: the step's scalars in its dtype
            lr_f32 = isinstance(lr, torch.Tensor) and lr.dtype == torch.float32
            for step, ps in by_step.items():
                arrays: dict[str, list[Any]] = {"row_var": [], "col_var": [], "variance": []}
                for p in ps:
                    st = self.state[p]
                    for key in arrays:
                        arrays[key].append(_array(st[key]) if key in st else None)
                grads = [_array(p.grad.contiguous()) for p in ps]     # type: ignore[union-attr]
                calls.append(([_array(p) for p in ps], grads, arrays, step, options, ps,
                              lr_f32))
        for ps_np, grads, arrays, step, options, ps, lr_f32 in calls:
            o = options
            adafactor_step_at(ps_np, grads, arrays["row_var"], arrays["col_var"],
                              arrays["variance"], step, o["lr"], o["beta2_decay"], o["eps1"],
                              o["eps2"], o["d"], o["weight_decay"], o["maximize"], lr_f32)
            for p in ps:
                self.state[p]["step"] += 1
        return loss
