"""The optcore.torch optimizers: torch.optim's signatures over optcore kernels.

Each class declares only its constructor, with torch.optim's arguments and
defaults (options passed on in torch.optim's ``defaults`` order, so
param_groups look the same); the kernel, the state tensors (torch.optim's keys)
and the checks are its entry in ``optcore._spec.OPTIMIZERS`` (see _base.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from optcore.optim._options import torch_mu_product
from optcore.torch._base import KernelOptimizer

if TYPE_CHECKING:
    import numpy as np
    from torch import Tensor
    from torch.optim.optimizer import ParamsT

__all__ = ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta", "Adamax",
           "NAdam", "RAdam", "Lion", "LAMB"]


class SGD(KernelOptimizer):
    """torch.optim.SGD on optcore.sgd_step (state: ``momentum_buffer`` when
    momentum != 0, created by the first step from the gradient, as torch does)."""

    _setstate_fills = {"nesterov": False, "maximize": False, "foreach": None,
                       "differentiable": False, "fused": False}

    def __init__(self, params: ParamsT, lr: float | Tensor = 1e-3, momentum: float = 0,
                 dampening: float = 0, weight_decay: float = 0, nesterov: bool = False, *,
                 maximize: bool = False, foreach: bool | None = None,
                 differentiable: bool = False, fused: bool | None = None) -> None:
        super().__init__(params, lr=lr, momentum=momentum, dampening=dampening,
                         weight_decay=weight_decay, nesterov=nesterov, maximize=maximize,
                         foreach=foreach, differentiable=differentiable, fused=fused)


class Adam(KernelOptimizer):
    """torch.optim.Adam on optcore.adam_step (state: ``step``, ``exp_avg``,
    ``exp_avg_sq``, and ``max_exp_avg_sq`` with amsgrad)."""

    _setstate_fills = {"amsgrad": False, "maximize": False, "foreach": None,
                       "capturable": False, "differentiable": False,
                       "decoupled_weight_decay": False, "fused": None}

    def __init__(self, params: ParamsT, lr: float | Tensor = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0, amsgrad: bool = False, *,
                 foreach: bool | None = None, maximize: bool = False, capturable: bool = False,
                 differentiable: bool = False, fused: bool | None = None,
                 decoupled_weight_decay: bool = False) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, maximize=maximize, foreach=foreach,
                         capturable=capturable, differentiable=differentiable,
                         fused=fused, decoupled_weight_decay=decoupled_weight_decay)


class AdamW(Adam):
    """torch.optim.AdamW: Adam with decoupled weight decay (always on, as in
    torch, also for loaded state_dicts)."""

    def __init__(self, params: ParamsT, lr: float | Tensor = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, *, maximize: bool = False,
                 foreach: bool | None = None, capturable: bool = False,
                 differentiable: bool = False, fused: bool | None = None) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach,
                         maximize=maximize, capturable=capturable,
                         differentiable=differentiable, fused=fused,
                         decoupled_weight_decay=True)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True


class RMSprop(KernelOptimizer):
    """torch.optim.RMSprop on optcore.rmsprop_step (state: ``step``,
    ``square_avg``, ``momentum_buffer`` when momentum > 0, ``grad_avg`` when
    centered)."""

    _setstate_fills = {"momentum": 0, "centered": False, "foreach": None,
                       "maximize": False, "differentiable": False, "capturable": False}

    def __init__(self, params: ParamsT, lr: float | Tensor = 1e-2, alpha: float = 0.99,
                 eps: float = 1e-8, weight_decay: float = 0, momentum: float = 0,
                 centered: bool = False, capturable: bool = False, foreach: bool | None = None,
                 maximize: bool = False, differentiable: bool = False) -> None:
        super().__init__(params, lr=lr, momentum=momentum, alpha=alpha, eps=eps,
                         centered=centered, weight_decay=weight_decay,
                         capturable=capturable, foreach=foreach, maximize=maximize,
                         differentiable=differentiable)


class Adagrad(KernelOptimizer):
    """torch.optim.Adagrad on optcore.adagrad_step (state: ``step``, ``sum``,
    filled with the constructor's initial_accumulator_value; created at
    construction, for groups added later at their first step, as torch does).
    Sparse gradients are not supported."""

    _setstate_fills = {"foreach": None, "maximize": False, "differentiable": False,
                       "fused": None}

    def __init__(self, params: ParamsT, lr: float | Tensor = 1e-2, lr_decay: float = 0,
                 weight_decay: float = 0, initial_accumulator_value: float = 0,
                 eps: float = 1e-10, foreach: bool | None = None, *, maximize: bool = False,
                 differentiable: bool = False, fused: bool | None = None) -> None:
        super().__init__(params, lr=lr, lr_decay=lr_decay, eps=eps,
                         weight_decay=weight_decay,
                         initial_accumulator_value=initial_accumulator_value,
                         foreach=foreach, maximize=maximize,
                         differentiable=differentiable, fused=fused)

    def share_memory(self) -> None:
        """Move the ``sum`` state tensors to shared memory (as torch's
        Adagrad.share_memory; the next step picks up the new storage)."""
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p]["sum"].share_memory_()


class Adadelta(KernelOptimizer):
    """torch.optim.Adadelta on optcore.adadelta_step (state: ``step``,
    ``square_avg``, ``acc_delta``)."""

    def __init__(self, params: ParamsT, lr: float | Tensor = 1.0, rho: float = 0.9,
                 eps: float = 1e-6, weight_decay: float = 0, foreach: bool | None = None, *,
                 capturable: bool = False, maximize: bool = False,
                 differentiable: bool = False) -> None:
        super().__init__(params, lr=lr, rho=rho, eps=eps, weight_decay=weight_decay,
                         maximize=maximize, capturable=capturable, foreach=foreach,
                         differentiable=differentiable)


class Adamax(KernelOptimizer):
    """torch.optim.Adamax on optcore.adamax_step (state: ``step``,
    ``exp_avg``, ``exp_inf``)."""

    def __init__(self, params: ParamsT, lr: float | Tensor = 2e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0, foreach: bool | None = None, *,
                 maximize: bool = False, differentiable: bool = False,
                 capturable: bool = False) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         foreach=foreach, maximize=maximize,
                         differentiable=differentiable, capturable=capturable)


class NAdam(KernelOptimizer):
    """torch.optim.NAdam on optcore.nadam_step (state: ``step``,
    ``mu_product``, ``exp_avg``, ``exp_avg_sq``)."""

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
                 differentiable: bool = False) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         momentum_decay=momentum_decay,
                         decoupled_weight_decay=decoupled_weight_decay,
                         maximize=maximize, foreach=foreach, capturable=capturable,
                         differentiable=differentiable)


class RAdam(KernelOptimizer):
    """torch.optim.RAdam on optcore.radam_step (state: ``step``, ``exp_avg``,
    ``exp_avg_sq``)."""

    _setstate_fills = {**KernelOptimizer._setstate_fills, "decoupled_weight_decay": False}

    def __init__(self, params: ParamsT, lr: float | Tensor = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0, decoupled_weight_decay: bool = False, *,
                 foreach: bool | None = None, maximize: bool = False, capturable: bool = False,
                 differentiable: bool = False) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         maximize=maximize, foreach=foreach, capturable=capturable,
                         decoupled_weight_decay=decoupled_weight_decay,
                         differentiable=differentiable)


class Lion(KernelOptimizer):
    """Lion (sign of an interpolated momentum; Chen et al. 2023) on
    optcore.lion_step; not in torch.optim. State: ``step``, ``exp_avg``."""

    def __init__(self, params: ParamsT, lr: float | Tensor = 1e-4,
                 betas: tuple[float, float] = (0.9, 0.99), weight_decay: float = 0.0, *,
                 maximize: bool = False, foreach: bool | None = None, capturable: bool = False,
                 differentiable: bool = False) -> None:
        super().__init__(params, lr=lr, betas=betas, weight_decay=weight_decay,
                         maximize=maximize, foreach=foreach, capturable=capturable,
                         differentiable=differentiable)


class LAMB(KernelOptimizer):
    """LAMB (Adam with a per-tensor trust ratio; You et al. 2019) on
    optcore.lamb_step; not in torch.optim. State: ``step``, ``exp_avg``,
    ``exp_avg_sq``."""

    def __init__(self, params: ParamsT, lr: float | Tensor = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-6,
                 weight_decay: float = 0.0, *, maximize: bool = False,
                 foreach: bool | None = None, capturable: bool = False,
                 differentiable: bool = False) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         maximize=maximize, foreach=foreach, capturable=capturable,
                         differentiable=differentiable)
