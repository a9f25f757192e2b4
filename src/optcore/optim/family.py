"""The optimizer classes: torch.optim's constructors, defaults and state keys
over NumPy parameters, each stepping through its functional kernel
(``optcore.<name>_step``) with one multi-tensor call per parameter group.

Each class only declares its constructor (torch.optim's signature; ``betas``
becomes the kernels' ``beta1``/``beta2``), the state its options need, and
how its kernel is called when that differs from the common form; the rest is
``optcore.optim.base.Optimizer``. ``foreach`` and ``fused`` are accepted for
compatibility and ignored (every step is one fused multi-tensor call);
``capturable``/``differentiable`` cannot apply to NumPy arrays and raise.
"""

from optcore.optim.base import Optimizer, _unsupported_torch_flags

__all__ = ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta", "Adamax",
           "NAdam", "RAdam", "Lion", "LAMB"]


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, dampening, Nesterov and
    weight decay (torch.optim.SGD). State: ``momentum_buffer`` when
    ``momentum > 0``, set to the gradient on the parameter's first step; no
    step count (as in torch)."""

    _kernel = "sgd_step"
    _kinds = ("momentum_buffer",)
    _scalars = {}

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0,
                 nesterov=False, *, maximize=False, foreach=None, differentiable=False,
                 fused=None):
        _unsupported_torch_flags("SGD", differentiable=differentiable)
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov,
                                      maximize=maximize))

    def _check_group(self, group):
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")

    def _buffers(self, group):
        return ("momentum_buffer",) if group["momentum"] != 0 else ()

    def _call(self, fn, params, grads, buffers, scalars, fresh, hyper):
        # The kernel initialises the buffer from the gradient when step == 1.
        fn(params, grads, **buffers, step=1 if fresh else 2, **hyper)
        return None


class Adam(Optimizer):
    """Adam (torch.optim.Adam), with ``amsgrad`` and, with
    ``decoupled_weight_decay=True``, AdamW's weight decay. State: ``step``,
    ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq`` (amsgrad)."""

    _kernel = "adam_step"
    _kinds = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 amsgrad=False, *, foreach=None, maximize=False, capturable=False,
                 differentiable=False, fused=None, decoupled_weight_decay=False):
        _unsupported_torch_flags(type(self).__name__, capturable, differentiable)
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps,
                                      weight_decay=weight_decay, amsgrad=amsgrad,
                                      maximize=maximize,
                                      decoupled_weight_decay=decoupled_weight_decay))

    def _buffers(self, group):
        return self._kinds if group["amsgrad"] else self._kinds[:2]


class AdamW(Adam):
    """AdamW (torch.optim.AdamW): Adam with decoupled weight decay, whatever a
    group's ``decoupled_weight_decay`` says (as torch forces it)."""

    _kernel = "adamw_step"
    _not_kernel = ("decoupled_weight_decay",)

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, maximize=False, foreach=None, capturable=False,
                 differentiable=False, fused=None):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize,
                         capturable=capturable, differentiable=differentiable,
                         decoupled_weight_decay=True)


class RMSprop(Optimizer):
    """RMSprop (torch.optim.RMSprop). State: ``step``, ``square_avg``,
    ``momentum_buffer`` (momentum > 0), ``grad_avg`` (centered)."""

    _kernel = "rmsprop_step"
    _kinds = ("square_avg", "momentum_buffer", "grad_avg")

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0,
                 centered=False, capturable=False, foreach=None, maximize=False,
                 differentiable=False):
        _unsupported_torch_flags("RMSprop", capturable, differentiable)
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps,
                                      weight_decay=weight_decay, momentum=momentum,
                                      centered=centered, maximize=maximize))

    def _buffers(self, group):
        kinds = ("square_avg",)
        if group["momentum"] > 0:
            kinds += ("momentum_buffer",)
        if group["centered"]:
            kinds += ("grad_avg",)
        return kinds


class Adagrad(Optimizer):
    """Adagrad (torch.optim.Adagrad). State: ``step`` and ``sum`` (filled
    with ``initial_accumulator_value``), created at construction as torch
    does."""

    _kernel = "adagrad_step"
    _kinds = ("sum",)
    _kernel_args = {"sum": "state_sum"}
    _not_kernel = ("initial_accumulator_value",)
    _eager = True

    def __init__(self, params, lr=1e-2, lr_decay=0, weight_decay=0,
                 initial_accumulator_value=0, eps=1e-10, foreach=None, *, maximize=False,
                 differentiable=False, fused=None):
        _unsupported_torch_flags("Adagrad", differentiable=differentiable)
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value,
                                      eps=eps, maximize=maximize))

    def _fill(self, kind, group):
        return group["initial_accumulator_value"]


class Adadelta(Optimizer):
    """Adadelta (torch.optim.Adadelta). State: ``step``, ``square_avg``,
    ``acc_delta``."""

    _kernel = "adadelta_step"
    _kinds = ("square_avg", "acc_delta")

    def __init__(self, params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0, foreach=None,
                 *, capturable=False, maximize=False, differentiable=False):
        _unsupported_torch_flags("Adadelta", capturable, differentiable)
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay,
                                      maximize=maximize))


class Adamax(Optimizer):
    """Adamax (torch.optim.Adamax). State: ``step``, ``exp_avg``,
    ``exp_inf``."""

    _kernel = "adamax_step"
    _kinds = ("exp_avg", "exp_inf")

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 foreach=None, *, maximize=False, differentiable=False, capturable=False):
        _unsupported_torch_flags("Adamax", capturable, differentiable)
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps,
                                      weight_decay=weight_decay, maximize=maximize))


class NAdam(Optimizer):
    """NAdam (torch.optim.NAdam), optionally with decoupled weight decay.
    State: ``step``, ``mu_product`` (a float), ``exp_avg``, ``exp_avg_sq``."""

    _kernel = "nadam_step"
    _kinds = ("exp_avg", "exp_avg_sq")
    _scalars = {"step": 0, "mu_product": 1.0}

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 momentum_decay=4e-3, decoupled_weight_decay=False, *, foreach=None,
                 maximize=False, capturable=False, differentiable=False):
        _unsupported_torch_flags("NAdam", capturable, differentiable)
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps,
                                      weight_decay=weight_decay,
                                      momentum_decay=momentum_decay,
                                      decoupled_weight_decay=decoupled_weight_decay,
                                      maximize=maximize))

    def _call(self, fn, params, grads, buffers, scalars, fresh, hyper):
        step = scalars["step"] + 1
        mu_product = fn(params, grads, **buffers, step=step,
                        mu_product=scalars["mu_product"], **hyper)
        return {"step": step, "mu_product": float(mu_product)}


class RAdam(Optimizer):
    """RAdam (torch.optim.RAdam), optionally with decoupled weight decay.
    State: ``step``, ``exp_avg``, ``exp_avg_sq``."""

    _kernel = "radam_step"
    _kinds = ("exp_avg", "exp_avg_sq")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 decoupled_weight_decay=False, *, foreach=None, maximize=False,
                 capturable=False, differentiable=False):
        _unsupported_torch_flags("RAdam", capturable, differentiable)
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps,
                                      weight_decay=weight_decay,
                                      decoupled_weight_decay=decoupled_weight_decay,
                                      maximize=maximize))


class Lion(Optimizer):
    """Lion (sign of an interpolated momentum, decoupled weight decay; Chen et
    al. 2023; not in torch.optim). State: ``step``, ``exp_avg``."""

    _kernel = "lion_step"
    _kinds = ("exp_avg",)

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, *,
                 maximize=False):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay,
                                      maximize=maximize))


class LAMB(Optimizer):
    """LAMB (Adam moments scaled per parameter by a trust ratio ||p|| / ||u||;
    You et al. 2020; not in torch.optim). State: ``step``, ``exp_avg``,
    ``exp_avg_sq``."""

    _kernel = "lamb_step"
    _kinds = ("exp_avg", "exp_avg_sq")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0, *,
                 maximize=False):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps,
                                      weight_decay=weight_decay, maximize=maximize))
