"""The optimizer classes: torch.optim's constructors, defaults and state keys
over NumPy parameters, each stepping through its functional kernel
(``optcore.<name>_step``) with one multi-tensor call per parameter group.

Each class only declares its constructor (torch.optim's signature; ``betas``
becomes the kernels' ``beta1``/``beta2``); its kernel, state and checks are its
entry in ``optcore._spec.OPTIMIZERS``, and the rest is
``optcore.optim.base.Optimizer``. ``foreach`` and ``fused`` are accepted for
compatibility and ignored (every step is one fused multi-tensor call);
``capturable``/``differentiable`` cannot apply to NumPy arrays and raise.
The class docstrings are rendered from the spec (``optcore.optim._docs``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from optcore.optim._options import torch_asgd_scalars, torch_mu_product
from optcore.optim.base import Optimizer

__all__ = ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta", "Adamax",
           "NAdam", "RAdam", "Rprop", "ASGD", "Lion", "LAMB"]


class SGD(Optimizer):
    def __init__(self, params: Iterable[Any], lr: float = 1e-3, momentum: float = 0,
                 dampening: float = 0, weight_decay: float = 0, nesterov: bool = False, *,
                 maximize: bool = False, foreach: bool | None = None,
                 differentiable: bool = False, fused: bool | None = None,
                 state_dtype: str | None = None, master_weights: bool = False,
                 rounding: str = "nearest", seed: int = 0) -> None:
        super().__init__(params, locals())


class Adam(Optimizer):
    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0, amsgrad: bool = False, *,
                 foreach: bool | None = None, maximize: bool = False, capturable: bool = False,
                 differentiable: bool = False, fused: bool | None = None,
                 decoupled_weight_decay: bool = False,
                 state_dtype: str | None = None, master_weights: bool = False,
                 rounding: str = "nearest", seed: int = 0) -> None:
        super().__init__(params, locals())


class AdamW(Adam):
    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, *, maximize: bool = False,
                 foreach: bool | None = None, capturable: bool = False,
                 differentiable: bool = False, fused: bool | None = None,
                 state_dtype: str | None = None, master_weights: bool = False,
                 rounding: str = "nearest", seed: int = 0) -> None:
        Optimizer.__init__(self, params, locals())


class RMSprop(Optimizer):
    def __init__(self, params: Iterable[Any], lr: float = 1e-2, alpha: float = 0.99,
                 eps: float = 1e-8, weight_decay: float = 0, momentum: float = 0,
                 centered: bool = False, capturable: bool = False, foreach: bool | None = None,
                 maximize: bool = False, differentiable: bool = False, *,
                 state_dtype: str | None = None, master_weights: bool = False,
                 rounding: str = "nearest", seed: int = 0) -> None:
        super().__init__(params, locals())


class Adagrad(Optimizer):
    def __init__(self, params: Iterable[Any], lr: float = 1e-2, lr_decay: float = 0,
                 weight_decay: float = 0, initial_accumulator_value: float = 0,
                 eps: float = 1e-10, foreach: bool | None = None, *, maximize: bool = False,
                 differentiable: bool = False, fused: bool | None = None,
                 state_dtype: str | None = None, master_weights: bool = False,
                 rounding: str = "nearest", seed: int = 0) -> None:
        super().__init__(params, locals())


class Adadelta(Optimizer):
    def __init__(self, params: Iterable[Any], lr: float = 1.0, rho: float = 0.9,
                 eps: float = 1e-6, weight_decay: float = 0, foreach: bool | None = None, *,
                 capturable: bool = False, maximize: bool = False,
                 differentiable: bool = False,
                 state_dtype: str | None = None, master_weights: bool = False,
                 rounding: str = "nearest", seed: int = 0) -> None:
        super().__init__(params, locals())


class Adamax(Optimizer):
    def __init__(self, params: Iterable[Any], lr: float = 2e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0, foreach: bool | None = None, *,
                 maximize: bool = False, differentiable: bool = False,
                 capturable: bool = False,
                 state_dtype: str | None = None, master_weights: bool = False,
                 rounding: str = "nearest", seed: int = 0) -> None:
        super().__init__(params, locals())


class NAdam(Optimizer):
    def __init__(self, params: Iterable[Any], lr: float = 2e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0, momentum_decay: float = 4e-3,
                 decoupled_weight_decay: bool = False, *, foreach: bool | None = None,
                 maximize: bool = False, capturable: bool = False,
                 differentiable: bool = False,
                 state_dtype: str | None = None, master_weights: bool = False,
                 rounding: str = "nearest", seed: int = 0) -> None:
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
    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0, decoupled_weight_decay: bool = False, *,
                 foreach: bool | None = None, maximize: bool = False, capturable: bool = False,
                 differentiable: bool = False,
                 state_dtype: str | None = None, master_weights: bool = False,
                 rounding: str = "nearest", seed: int = 0) -> None:
        super().__init__(params, locals())


class Rprop(Optimizer):
    def __init__(self, params: Iterable[Any], lr: float = 1e-2,
                 etas: tuple[float, float] = (0.5, 1.2),
                 step_sizes: tuple[float, float] = (1e-6, 50), *, capturable: bool = False,
                 foreach: bool | None = None, maximize: bool = False,
                 differentiable: bool = False,
                 state_dtype: str | None = None, master_weights: bool = False,
                 rounding: str = "nearest", seed: int = 0) -> None:
        super().__init__(params, locals())


class ASGD(Optimizer):
    def __init__(self, params: Iterable[Any], lr: float = 1e-2, lambd: float = 1e-4,
                 alpha: float = 0.75, t0: float = 1e6, weight_decay: float = 0,
                 foreach: bool | None = None, maximize: bool = False,
                 differentiable: bool = False, capturable: bool = False, *,
                 state_dtype: str | None = None, master_weights: bool = False,
                 rounding: str = "nearest", seed: int = 0) -> None:
        super().__init__(params, locals())

    def _scalar_args(self, scalars: dict[str, Any], step: int, hyper: dict[str, Any]
                     ) -> tuple[dict[str, Any], dict[str, Any]]:
        # eta and mu as torch.optim.ASGD keeps them by default: float32, from
        # the initial eta (lr) on (the saved values are Python floats).
        return torch_asgd_scalars(scalars, step, hyper, np.float32, np.float32)


class Lion(Optimizer):
    def __init__(self, params: Iterable[Any], lr: float = 1e-4,
                 betas: tuple[float, float] = (0.9, 0.99), weight_decay: float = 0.0, *,
                 maximize: bool = False, foreach: bool | None = None, capturable: bool = False,
                 differentiable: bool = False,
                 state_dtype: str | None = None, master_weights: bool = False,
                 rounding: str = "nearest", seed: int = 0) -> None:
        super().__init__(params, locals())


class LAMB(Optimizer):
    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-6,
                 weight_decay: float = 0.0, *, maximize: bool = False,
                 foreach: bool | None = None, capturable: bool = False,
                 differentiable: bool = False,
                 state_dtype: str | None = None, master_weights: bool = False,
                 rounding: str = "nearest", seed: int = 0) -> None:
        super().__init__(params, locals())
