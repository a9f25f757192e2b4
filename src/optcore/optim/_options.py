"""Option rules of both class layers (optcore.optim and optcore.torch), read
from the spec (``optcore._spec``) once per class.

The value checks are ``optcore.kernels._checks`` (the functional kernels'
own), so a bad value gets the same message from ``optcore.adam_step``,
``optcore.Adam`` and ``optcore.torch.Adam``. The rules torch.optim applies
on top (Nesterov, one-element tensor hyperparameters, ``fused``/``foreach``,
NAdam's rounded ``mu_product``) keep torch's wording and live here only.
This module never imports torch.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping

import numpy as np

from optcore._spec import OPTIMIZER, PAIRS, Hyper, OptimizerSpec, Pair, kernel_options
from optcore.kernels._checks import flag, hyper

__all__ = ["Rules", "rules_for", "check_flags", "torch_mu_product", "torch_asgd_scalars",
           "ALL_OPTIONS"]

#: Every option of every optimizer class: a loaded param group carrying one
#: its optimizer lacks comes from another optimizer (other keys, such as a
#: scheduler's ``initial_lr``, are the user's and are kept).
ALL_OPTIONS = frozenset(name for spec in OPTIMIZER.values() for name in spec.options)

# torch.optim.Adam (and AdamW) refuse a betas pair mixing a tensor and a number.
_SAME_KIND_BETAS = frozenset({"Adam", "AdamW"})


def _is_tensor(value: Any) -> bool:
    return callable(getattr(value, "numel", None)) and hasattr(value, "item")


def _plain(value: Any, name: str) -> Any:
    """A torch tensor hyperparameter as its number (torch.optim accepts
    one-element tensors, e.g. a tensor lr); anything else as it is."""
    if _is_tensor(value):
        if value.numel() != 1:
            raise ValueError(f"Tensor {name} must be 1-element")
        return value.item()
    return value


def _nesterov(values: Mapping[str, Any]) -> None:
    if values["nesterov"] and (values["momentum"] <= 0 or values["dampening"] != 0):
        raise ValueError("Nesterov momentum requires a momentum and zero dampening")


#: torch.optim's cross-option rules, by the option that triggers them.
_CROSS_RULES: dict[str, Callable[[Mapping[str, Any]], None]] = {"nesterov": _nesterov}


def check_flags(where: str, flags: Mapping[str, Any], params: str) -> None:
    """torch.optim's implementation switches: ``foreach``/``fused`` are
    accepted and change nothing (every step is one fused multi-tensor call);
    ``capturable=True`` and ``differentiable=True`` cannot be honoured.
    ``where`` names the class, ``params`` what it updates."""
    if flags.get("fused") and flags.get("foreach"):
        raise RuntimeError("`fused` and `foreach` cannot be `True` together.")
    if flags.get("differentiable"):
        raise ValueError(
            f"{where} does not support differentiable=True: its kernels update the "
            f"{params} in place outside autograd (use torch.optim for a "
            f"differentiable optimizer step)")
    if flags.get("capturable"):
        raise ValueError(
            f"{where} does not support capturable=True: CUDA-graph capture does not "
            f"apply to the {params} it updates")


class Rules:
    """The spec of one optimizer class, as its class layers use it.

    ``kernel``: the functional kernel (imported from its module),
    ``state``: its state buffers (``optcore._spec.Buffer``) in torch's key
    order, ``scalars``: per-parameter scalar state and initial values."""

    def __init__(self, spec: OptimizerSpec) -> None:
        self.spec = spec
        kspec = spec.spec
        module = importlib.import_module(f"optcore.kernels.{kspec.module}")
        self.kernel: Callable[..., Any] = getattr(module, kspec.name)
        self.state = kspec.state
        self.state_keys = tuple(b.state_key for b in self.state)
        self.kernel_args = {b.state_key: b.name for b in self.state}
        #: int8 states: the unsigned map (second moments), by state key
        self.unsigned = {b.state_key: b.unsigned for b in self.state}
        #: the kernel takes low-precision buffers (optcore._spec.Kernel.tiled)
        self.tiled = kspec.tiled
        #: the storages its states take (optcore._spec.Kernel.state_dtypes)
        self.state_dtypes = kspec.state_dtypes
        self.kernel_roles = {b.name: b.role for b in kspec.buffers}
        self.scalars = dict(spec.scalars)
        self.eager = spec.eager
        self.flags = spec.flags
        # Options that feed the scalar state only (ASGD's lr): not kernel arguments.
        self.scalar_only = frozenset(spec.scalar_options)
        # The kernel's double arguments: a plan passes them as floats (the
        # wrappers' fast path; the same C value).
        self.double_args = frozenset(h.name for h in kspec.hypers if h.ctype == "double")
        # The kernel takes the group's lr and checks it (ASGD's and Rprop's do
        # not): a step plan may then pass it a scheduler's new lr as it is.
        self.kernel_lr = "lr" in self.double_args and "lr" not in self.scalar_only
        hypers = {h.name: h for h in kspec.hypers}
        hypers.update({h.name: h for h in spec.extra})
        # Options only a state buffer's initial value reads (torch's Adagrad:
        # the constructor's initial_accumulator_value; Rprop: the group's lr,
        # read when a parameter's state is created): a loaded group may lack
        # them, as torch.optim's may.
        self.optional = frozenset(b.init.partition(":")[2] for b in self.state
                                  if b.init.startswith(("fill:", "group:")))
        # (option, its check: a Hyper, or (the Pair, its two Hypers))
        self._checks: list[tuple[str, Any]] = []
        for name in spec.options:
            pair = PAIRS.get(name)
            if pair is not None:
                self._checks.append((name, (pair, tuple(hypers[n] for n in pair.names))))
            else:
                self._checks.append((name, hypers[name]))
        self._cross = [rule for name, rule in _CROSS_RULES.items() if name in spec.options]

    def check(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """The options as checked plain values (floats, bools, ``betas`` a
        pair of floats), in ``spec.options`` order; ValueError/TypeError with
        the kernels' message for a bad one."""
        out: dict[str, Any] = {}
        for name, check in self._checks:
            if name not in options and name in self.optional:
                continue
            value = options[name]
            if isinstance(check, Hyper):
                out[name] = _checked(_plain(value, name), check)
                continue
            out[name] = _checked_pair(value, *check)
            if self.spec.name in _SAME_KIND_BETAS and _is_tensor(value[0]) != _is_tensor(value[1]):
                raise ValueError("betas must be either both floats or both Tensors")
        for rule in self._cross:
            rule(out)
        return out

    def kernel_options(self, checked: Mapping[str, Any]) -> dict[str, Any]:
        """The kernel's keywords from ``check``'s result."""
        return kernel_options(self.spec, checked)

    def needed(self, options: Mapping[str, Any]) -> tuple:
        """The state buffers these (checked) options use."""
        return tuple(b for b in self.state if b.needed is None or b.needed.holds(options))

    @staticmethod
    def fill(buffer: Any, defaults: Mapping[str, Any], group: Mapping[str, Any]) -> float:
        """Initial value of a state buffer: ``"fill:<option>"`` takes the
        constructor's value of that option (``defaults``), as torch.optim's
        Adagrad does for every group, also groups added later;
        ``"group:<option>"`` the group's own value (torch's Rprop: ``lr``)."""
        if buffer.init.startswith("fill:"):
            return defaults[buffer.init[5:]]
        if buffer.init.startswith("group:"):
            name = buffer.init[6:]
            return float(_plain(group[name], name))
        return 0.0

    def initial_scalars(self, group: Mapping[str, Any]) -> dict[str, Any]:
        """The scalar state of a parameter before its first step: the spec's
        values, a string naming the group option it starts at (ASGD's ``eta``
        starts at ``lr``)."""
        return {k: float(_plain(group[v], v)) if isinstance(v, str) else v
                for k, v in self.scalars.items()}


def _checked(value: Any, h: Hyper, name: str | None = None) -> Any:
    """``value`` checked by ``h``'s rule; errors name ``name`` (the option as
    the user passed it, e.g. ``betas[0]``), by default the kernel argument's."""
    if h.ctype == "bint":
        return flag(value, name or h.name)
    return hyper(value, name or h.name, h.check or "", h.what, h.index)


def _checked_pair(value: Any, pair: Pair, checks: tuple[Hyper, Hyper]) -> tuple[Any, Any]:
    """A pair option (``betas``, ``etas``) as two checked values. A pair with
    a ``what`` is checked as a whole, with torch.optim's message for it."""
    name = pair.option
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(f"{name} must be a pair ({pair.names[0]}, {pair.names[1]}), "
                        f"got {value!r}")
    plain = [_plain(v, f"{name}[{i}]") for i, v in enumerate(value)]
    try:
        return tuple(_checked(v, h, f"{name}[{i}]")
                     for i, (v, h) in enumerate(zip(plain, checks)))
    except ValueError:
        if not pair.what:
            raise
        raise ValueError(f"Invalid {pair.what}: {plain[0]}, {plain[1]}") from None


_RULES: dict[str, Rules] = {}


def rules_for(name: str) -> Rules:
    """The Rules of spec entry ``name`` (built once)."""
    rules = _RULES.get(name)
    if rules is None:
        rules = _RULES[name] = Rules(OPTIMIZER[name])
    return rules


def torch_mu_product(mu_product: float, step: float, beta1: float, momentum_decay: float,
                     dtype: Any = np.float32) -> tuple[float, float]:
    """NAdam's ``mu_product`` as torch.optim keeps it: a tensor of torch's
    default dtype (float32 unless changed), updated ``mu_product *= mu`` in
    that dtype, the rounded product used in the step. The kernel multiplies
    in double, so it gets the factor that makes its product torch's. Returns
    (the kernel's ``mu_product`` argument, the value to store)."""
    mu = beta1 * (1.0 - 0.5 * 0.96 ** (step * momentum_decay))
    product = float(dtype(mu_product) * dtype(mu))
    return (product / mu if mu != 0.0 else mu_product), product


def torch_asgd_scalars(scalars: Mapping[str, Any], step: float, options: Mapping[str, Any],
                       dtype: Any = np.float32, read: Any = float
                       ) -> tuple[dict[str, Any], dict[str, Any]]:
    """ASGD's ``eta`` and ``mu`` as torch.optim.ASGD keeps them: read by step
    ``step`` (as ``read`` gives the stored value), then set from it,
    ``eta = lr / (1 + lambd * lr * step) ** alpha`` and
    ``mu = 1 / max(1, step - t0)``, computed in double and rounded to
    ``dtype`` (torch's default dtype, whatever the state tensors' dtype: a
    loaded state_dict casts them to the parameters'). Returns (the kernel's
    ``eta``/``mu`` arguments, the values to store)."""
    lr, lambd = options["lr"], options["lambd"]
    eta = lr / ((1 + lambd * lr * step) ** options["alpha"])
    mu = 1 / max(1, step - options["t0"])
    args = {"eta": float(read(scalars["eta"])), "mu": float(read(scalars["mu"]))}
    return args, {"eta": float(dtype(eta)), "mu": float(dtype(mu))}
