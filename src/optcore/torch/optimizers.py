"""The optcore.torch optimizers: torch.optim's signatures over optcore kernels.

Each class declares only its constructor, with torch.optim's arguments and
defaults (options passed on in torch.optim's ``defaults`` order, so
param_groups look the same); the kernel, the state tensors (torch.optim's keys)
and the checks are its entry in ``optcore._spec.OPTIMIZERS`` (see _base.py).
The class docstrings are rendered from the spec (``optcore.optim._docs``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from optcore.optim._options import torch_asgd_scalars, torch_mu_product
from optcore.torch._base import KernelOptimizer
from optcore.torch.sparse import SparseGrads

import numpy as np
import torch

if TYPE_CHECKING:
    from torch import Tensor
    from torch.optim.optimizer import ParamsT

__all__ = ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta", "Adamax",
           "NAdam", "RAdam", "Rprop", "ASGD", "Lion", "LAMB"]


class SGD(SparseGrads, KernelOptimizer):
    _setstate_fills = {"nesterov": False, "maximize": False, "foreach": None,
                       "differentiable": False, "fused": False}

    def __init__(self, params: ParamsT, lr: float | Tensor = 1e-3, momentum: float = 0,
                 dampening: float = 0, weight_decay: float = 0, nesterov: bool = False, *,
                 maximize: bool = False, foreach: bool | None = None,
                 differentiable: bool = False, fused: bool | None = None,
                 state_dtype: str | None = None, master_weights: bool = False,
                 rounding: str = "nearest", seed: int = 0) -> None:
        super().__init__(params, lr=lr, momentum=momentum, dampening=dampening,
                         weight_decay=weight_decay, nesterov=nesterov, maximize=maximize,
                         foreach=foreach, differentiable=differentiable, fused=fused,
                         state_dtype=state_dtype, master_weights=master_weights,
                         rounding=rounding, seed=seed)


class Adam(KernelOptimizer):
    _setstate_fills = {"amsgrad": False, "maximize": False, "foreach": None,
                       "capturable": False, "differentiable": False,
                       "decoupled_weight_decay": False, "fused": None}

    def __init__(self, params: ParamsT, lr: float | Tensor = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0, amsgrad: bool = False, *,
                 foreach: bool | None = None, maximize: bool = False, capturable: bool = False,
                 differentiable: bool = False, fused: bool | None = None,
                 decoupled_weight_decay: bool = False,
                 state_dtype: str | None = None, master_weights: bool = False,
                 rounding: str = "nearest", seed: int = 0) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, maximize=maximize, foreach=foreach,
                         capturable=capturable, differentiable=differentiable,
                         fused=fused, decoupled_weight_decay=decoupled_weight_decay,
                         state_dtype=state_dtype, master_weights=master_weights,
                         rounding=rounding, seed=seed)


class AdamW(Adam):
    def __init__(self, params: ParamsT, lr: float | Tensor = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, *, maximize: bool = False,
                 foreach: bool | None = None, capturable: bool = False,
                 differentiable: bool = False, fused: bool | None = None,
                 state_dtype: str | None = None, master_weights: bool = False,
                 rounding: str = "nearest", seed: int = 0) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach,
                         maximize=maximize, capturable=capturable,
                         differentiable=differentiable, fused=fused,
                         decoupled_weight_decay=True,
                         state_dtype=state_dtype, master_weights=master_weights,
                         rounding=rounding, seed=seed)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True


class RMSprop(KernelOptimizer):
    _setstate_fills = {"momentum": 0, "centered": False, "foreach": None,
                       "maximize": False, "differentiable": False, "capturable": False}

    def __init__(self, params: ParamsT, lr: float | Tensor = 1e-2, alpha: float = 0.99,
                 eps: float = 1e-8, weight_decay: float = 0, momentum: float = 0,
                 centered: bool = False, capturable: bool = False, foreach: bool | None = None,
                 maximize: bool = False, differentiable: bool = False, *,
                 state_dtype: str | None = None, master_weights: bool = False,
                 rounding: str = "nearest", seed: int = 0) -> None:
        super().__init__(params, lr=lr, momentum=momentum, alpha=alpha, eps=eps,
                         centered=centered, weight_decay=weight_decay,
                         capturable=capturable, foreach=foreach, maximize=maximize,
                         differentiable=differentiable,
                         state_dtype=state_dtype, master_weights=master_weights,
                         rounding=rounding, seed=seed)


class Adagrad(SparseGrads, KernelOptimizer):
    _setstate_fills = {"foreach": None, "maximize": False, "differentiable": False,
                       "fused": None}

    def __init__(self, params: ParamsT, lr: float | Tensor = 1e-2, lr_decay: float = 0,
                 weight_decay: float = 0, initial_accumulator_value: float = 0,
                 eps: float = 1e-10, foreach: bool | None = None, *, maximize: bool = False,
                 differentiable: bool = False, fused: bool | None = None,
                 state_dtype: str | None = None, master_weights: bool = False,
                 rounding: str = "nearest", seed: int = 0) -> None:
        super().__init__(params, lr=lr, lr_decay=lr_decay, eps=eps,
                         weight_decay=weight_decay,
                         initial_accumulator_value=initial_accumulator_value,
                         foreach=foreach, maximize=maximize,
                         differentiable=differentiable, fused=fused,
                         state_dtype=state_dtype, master_weights=master_weights,
                         rounding=rounding, seed=seed)

    def share_memory(self) -> None:
        """Move the ``sum`` state tensors to shared memory (torch's Adagrad.share_memory).

        The next step picks up the new storage.

        Examples
        --------
        >>> import torch
        >>> import optcore.torch
        >>> w = torch.zeros(2, requires_grad=True)
        >>> opt = optcore.torch.Adagrad([w])
        >>> opt.share_memory()
        >>> opt.state[w]["sum"].is_shared()
        True
        """
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p]["sum"].share_memory_()


class Adadelta(KernelOptimizer):
    def __init__(self, params: ParamsT, lr: float | Tensor = 1.0, rho: float = 0.9,
                 eps: float = 1e-6, weight_decay: float = 0, foreach: bool | None = None, *,
                 capturable: bool = False, maximize: bool = False,
                 differentiable: bool = False,
                 state_dtype: str | None = None, master_weights: bool = False,
                 rounding: str = "nearest", seed: int = 0) -> None:
        super().__init__(params, lr=lr, rho=rho, eps=eps, weight_decay=weight_decay,
                         maximize=maximize, capturable=capturable, foreach=foreach,
                         differentiable=differentiable,
                         state_dtype=state_dtype, master_weights=master_weights,
                         rounding=rounding, seed=seed)


class Adamax(KernelOptimizer):
    def __init__(self, params: ParamsT, lr: float | Tensor = 2e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0, foreach: bool | None = None, *,
                 maximize: bool = False, differentiable: bool = False,
                 capturable: bool = False,
                 state_dtype: str | None = None, master_weights: bool = False,
                 rounding: str = "nearest", seed: int = 0) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         foreach=foreach, maximize=maximize,
                         differentiable=differentiable, capturable=capturable,
                         state_dtype=state_dtype, master_weights=master_weights,
                         rounding=rounding, seed=seed)


class NAdam(KernelOptimizer):
    _setstate_fills = {**KernelOptimizer._setstate_fills, "decoupled_weight_decay": False}

    def _scalar_args(self, scalars: dict[str, Any], step: float, options: dict[str, Any],
                     views: tuple[np.ndarray, ...]) -> tuple[dict[str, Any], dict[str, Any]]:
        # torch updates the mu_product tensor in its own dtype (float32 unless
        # the default dtype is float64), `mu_product *= mu`, and uses the
        # rounded product in this step; the kernel multiplies in double. Hand
        # the kernel the factor that makes its product torch's, so both take
        # the same step (even float64 parameters differ by ~1e-9 otherwise).
        arg, product = torch_mu_product(scalars["mu_product"], step, options["beta1"],
                                        options["momentum_decay"], views[1].dtype.type)
        return {"mu_product": arg}, {"mu_product": product}

    def __init__(self, params: ParamsT, lr: float | Tensor = 2e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0, momentum_decay: float = 4e-3,
                 decoupled_weight_decay: bool = False, *, foreach: bool | None = None,
                 maximize: bool = False, capturable: bool = False,
                 differentiable: bool = False,
                 state_dtype: str | None = None, master_weights: bool = False,
                 rounding: str = "nearest", seed: int = 0) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         momentum_decay=momentum_decay,
                         decoupled_weight_decay=decoupled_weight_decay,
                         maximize=maximize, foreach=foreach, capturable=capturable,
                         differentiable=differentiable,
                         state_dtype=state_dtype, master_weights=master_weights,
                         rounding=rounding, seed=seed)


class RAdam(KernelOptimizer):
    _setstate_fills = {**KernelOptimizer._setstate_fills, "decoupled_weight_decay": False}

    def __init__(self, params: ParamsT, lr: float | Tensor = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0, decoupled_weight_decay: bool = False, *,
                 foreach: bool | None = None, maximize: bool = False, capturable: bool = False,
                 differentiable: bool = False,
                 state_dtype: str | None = None, master_weights: bool = False,
                 rounding: str = "nearest", seed: int = 0) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         maximize=maximize, foreach=foreach, capturable=capturable,
                         decoupled_weight_decay=decoupled_weight_decay,
                         differentiable=differentiable,
                         state_dtype=state_dtype, master_weights=master_weights,
                         rounding=rounding, seed=seed)


class Rprop(KernelOptimizer):
    _setstate_fills = {"foreach": None, "maximize": False, "differentiable": False,
                       "capturable": False}

    def __init__(self, params: ParamsT, lr: float | Tensor = 1e-2,
                 etas: tuple[float, float] = (0.5, 1.2),
                 step_sizes: tuple[float, float] = (1e-6, 50), *, capturable: bool = False,
                 foreach: bool | None = None, maximize: bool = False,
                 differentiable: bool = False,
                 state_dtype: str | None = None, master_weights: bool = False,
                 rounding: str = "nearest", seed: int = 0) -> None:
        super().__init__(params, lr=lr, etas=etas, step_sizes=step_sizes, foreach=foreach,
                         maximize=maximize, differentiable=differentiable,
                         capturable=capturable,
                         state_dtype=state_dtype, master_weights=master_weights,
                         rounding=rounding, seed=seed)


class ASGD(KernelOptimizer):
    _setstate_fills = {"foreach": None, "maximize": False, "differentiable": False,
                       "capturable": False}

    def _scalar_args(self, scalars: dict[str, Any], step: float, options: dict[str, Any],
                     views: tuple[np.ndarray, ...]) -> tuple[dict[str, Any], dict[str, Any]]:
        # torch sets eta and mu from Python floats made tensors of its default
        # dtype (float32 unless changed), also into the float64 tensors a
        # loaded state_dict holds; the step reads their stored values.
        dtype = np.float64 if torch.get_default_dtype() == torch.float64 else np.float32
        return torch_asgd_scalars(scalars, step, options, dtype)

    def __init__(self, params: ParamsT, lr: float | Tensor = 1e-2, lambd: float = 1e-4,
                 alpha: float = 0.75, t0: float = 1e6, weight_decay: float = 0,
                 foreach: bool | None = None, maximize: bool = False,
                 differentiable: bool = False, capturable: bool = False, *,
                 state_dtype: str | None = None, master_weights: bool = False,
                 rounding: str = "nearest", seed: int = 0) -> None:
        super().__init__(params, lr=lr, lambd=lambd, alpha=alpha, t0=t0,
                         weight_decay=weight_decay, foreach=foreach, maximize=maximize,
                         differentiable=differentiable, capturable=capturable,
                         state_dtype=state_dtype, master_weights=master_weights,
                         rounding=rounding, seed=seed)


class Lion(KernelOptimizer):
    def __init__(self, params: ParamsT, lr: float | Tensor = 1e-4,
                 betas: tuple[float, float] = (0.9, 0.99), weight_decay: float = 0.0, *,
                 maximize: bool = False, foreach: bool | None = None, capturable: bool = False,
                 differentiable: bool = False,
                 state_dtype: str | None = None, master_weights: bool = False,
                 rounding: str = "nearest", seed: int = 0) -> None:
        super().__init__(params, lr=lr, betas=betas, weight_decay=weight_decay,
                         maximize=maximize, foreach=foreach, capturable=capturable,
                         differentiable=differentiable,
                         state_dtype=state_dtype, master_weights=master_weights,
                         rounding=rounding, seed=seed)


class LAMB(KernelOptimizer):
    def __init__(self, params: ParamsT, lr: float | Tensor = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-6,
                 weight_decay: float = 0.0, *, maximize: bool = False,
                 foreach: bool | None = None, capturable: bool = False,
                 differentiable: bool = False,
                 state_dtype: str | None = None, master_weights: bool = False,
                 rounding: str = "nearest", seed: int = 0) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         maximize=maximize, foreach=foreach, capturable=capturable,
                         differentiable=differentiable,
                         state_dtype=state_dtype, master_weights=master_weights,
                         rounding=rounding, seed=seed)
