"""The optimizer classes: torch.optim's constructors, defaults and state keys
over NumPy parameters, each stepping through its functional kernel
(``optcore.<name>_step``) with one multi-tensor call per parameter group.

Each class only declares its constructor (torch.optim's signature; ``betas``
becomes the kernels' ``beta1``/``beta2``); its kernel, state and checks are its
entry in ``optcore._spec.OPTIMIZERS``, and the rest is
``optcore.optim.base.Optimizer``. ``foreach`` and ``fused`` are accepted for
compatibility and ignored (every step is one fused multi-tensor call);
``capturable``/``differentiable`` cannot apply to NumPy arrays and raise.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from optcore.optim._options import torch_mu_product
from optcore.optim.base import Optimizer

__all__ = ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta", "Adamax",
           "NAdam", "RAdam", "Lion", "LAMB"]


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, dampening, Nesterov and
    weight decay (torch.optim.SGD). State: ``momentum_buffer`` when
    ``momentum > 0``, set to the gradient on the parameter's first step; no
    step count (as in torch)."""

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, momentum: float = 0,
                 dampening: float = 0, weight_decay: float = 0, nesterov: bool = False, *,
                 maximize: bool = False, foreach: bool | None = None,
                 differentiable: bool = False, fused: bool | None = None) -> None:
        super().__init__(params, locals())


class Adam(Optimizer):
    """Adam (torch.optim.Adam), with ``amsgrad`` and, with
    ``decoupled_weight_decay=True``, AdamW's weight decay. State: ``step``,
    ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq`` (amsgrad)."""

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0, amsgrad: bool = False, *,
                 foreach: bool | None = None, maximize: bool = False, capturable: bool = False,
                 differentiable: bool = False, fused: bool | None = None,
                 decoupled_weight_decay: bool = False) -> None:
        super().__init__(params, locals())


class AdamW(Adam):
    """AdamW (torch.optim.AdamW): Adam with decoupled weight decay, whatever a
    group's ``decoupled_weight_decay`` says (as torch forces it)."""

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, *, maximize: bool = False,
                 foreach: bool | None = None, capturable: bool = False,
                 differentiable: bool = False, fused: bool | None = None) -> None:
        Optimizer.__init__(self, params, locals())


class RMSprop(Optimizer):
    """RMSprop (torch.optim.RMSprop). State: ``step``, ``square_avg``,
    ``momentum_buffer`` (momentum > 0), ``grad_avg`` (centered)."""

    def __init__(self, params: Iterable[Any], lr: float = 1e-2, alpha: float = 0.99,
                 eps: float = 1e-8, weight_decay: float = 0, momentum: float = 0,
                 centered: bool = False, capturable: bool = False, foreach: bool | None = None,
                 maximize: bool = False, differentiable: bool = False) -> None:
        super().__init__(params, locals())


class Adagrad(Optimizer):
    """Adagrad (torch.optim.Adagrad). State: ``step`` and ``sum``, filled with
    the constructor's ``initial_accumulator_value`` (a group's own value is not
    used, as in torch); created at construction for the constructor's groups,
    at the first step for groups added later, as torch does."""

    def __init__(self, params: Iterable[Any], lr: float = 1e-2, lr_decay: float = 0,
                 weight_decay: float = 0, initial_accumulator_value: float = 0,
                 eps: float = 1e-10, foreach: bool | None = None, *, maximize: bool = False,
                 differentiable: bool = False, fused: bool | None = None) -> None:
        super().__init__(params, locals())


class Adadelta(Optimizer):
    """Adadelta (torch.optim.Adadelta). State: ``step``, ``square_avg``,
    ``acc_delta``."""

    def __init__(self, params: Iterable[Any], lr: float = 1.0, rho: float = 0.9,
                 eps: float = 1e-6, weight_decay: float = 0, foreach: bool | None = None, *,
                 capturable: bool = False, maximize: bool = False,
                 differentiable: bool = False) -> None:
        super().__init__(params, locals())


class Adamax(Optimizer):
    """Adamax (torch.optim.Adamax). State: ``step``, ``exp_avg``,
    ``exp_inf``."""

    def __init__(self, params: Iterable[Any], lr: float = 2e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0, foreach: bool | None = None, *,
                 maximize: bool = False, differentiable: bool = False,
                 capturable: bool = False) -> None:
        super().__init__(params, locals())


class NAdam(Optimizer):
    """NAdam (torch.optim.NAdam), optionally with decoupled weight decay.
    State: ``step``, ``mu_product`` (a float, rounded to float32 at each
    update as torch.optim rounds it with its default dtype), ``exp_avg``,
    ``exp_avg_sq``."""

    def __init__(self, params: Iterable[Any], lr: float = 2e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0, momentum_decay: float = 4e-3,
                 decoupled_weight_decay: bool = False, *, foreach: bool | None = None,
                 maximize: bool = False, capturable: bool = False,
                 differentiable: bool = False) -> None:
        super().__init__(params, locals())

    def _scalar_args(self, scalars: dict[str, Any], step: int, hyper: dict[str, Any]
                     ) -> tuple[dict[str, Any], dict[str, Any]]:
        # torch rounds `mu_product *= mu` in its default dtype, float32 unless
        # changed; NumPy has no default dtype, so this class always rounds as
        # torch does by default (the saved mu_product is a Python float).
        arg, product = torch_mu_product(scalars["mu_product"], step, hyper["beta1"],
                                        hyper["momentum_decay"], np.float32)
        return {"mu_product": arg}, {"mu_product": product}


class RAdam(Optimizer):
    """RAdam (torch.optim.RAdam), optionally with decoupled weight decay.
    State: ``step``, ``exp_avg``, ``exp_avg_sq``."""

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0, decoupled_weight_decay: bool = False, *,
                 foreach: bool | None = None, maximize: bool = False, capturable: bool = False,
                 differentiable: bool = False) -> None:
        super().__init__(params, locals())


class Lion(Optimizer):
    """Lion (sign of an interpolated momentum, decoupled weight decay; Chen et
    al. 2023; not in torch.optim). State: ``step``, ``exp_avg``."""

    def __init__(self, params: Iterable[Any], lr: float = 1e-4,
                 betas: tuple[float, float] = (0.9, 0.99), weight_decay: float = 0.0, *,
                 maximize: bool = False, foreach: bool | None = None, capturable: bool = False,
                 differentiable: bool = False) -> None:
        super().__init__(params, locals())


class LAMB(Optimizer):
    """LAMB (Adam moments scaled per parameter by a trust ratio ||p|| / ||u||;
    You et al. 2020; not in torch.optim). State: ``step``, ``exp_avg``,
    ``exp_avg_sq``."""

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-6,
                 weight_decay: float = 0.0, *, maximize: bool = False,
                 foreach: bool | None = None, capturable: bool = False,
                 differentiable: bool = False) -> None:
        super().__init__(params, locals())
