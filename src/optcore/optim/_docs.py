"""The numpydoc docstrings of the optimizer classes, rendered from the spec.

Both class layers (``optcore.optim`` over NumPy arrays, ``optcore.torch`` over
tensors) take the same options with the same checks, state keys and kernel,
all written once in ``optcore._spec``. ``class_docstring`` renders one class's
docstring from its spec entry and its constructor's signature (names,
defaults and order are the signature's, so the docstring cannot drift from
it); the prose the spec does not hold (what an option means, a class's
peculiarities, the example's inputs and printed result) is in the tables
below. Each base class assigns the result to ``__doc__`` when a subclass is
created. The examples are doctests: both layers take the same steps on the
same problem, so they print the same rounded parameters.
"""

from __future__ import annotations

import inspect
import textwrap
from optcore._kernel_docs import ARGUMENTS
from optcore._spec import OPTIMIZER, PAIRS, REQUIRED, Hyper, OptimizerSpec

__all__ = ["class_docstring"]

#: The summary line of each class (both layers).
_SUMMARY: dict[str, str] = {
    "SGD": "Stochastic gradient descent with momentum, Nesterov momentum and weight decay.",
    "Adam": "Adam, with the AMSGrad variant and optionally AdamW's decoupled weight decay.",
    "AdamW": "AdamW: Adam with decoupled weight decay.",
    "RMSprop": "RMSprop, optionally centered and with momentum.",
    "Adagrad": "Adagrad: per-element step sizes from the sum of squared gradients.",
    "Adadelta": "Adadelta: step sizes from running averages of squared gradients and updates.",
    "Adamax": "Adamax: Adam with the infinity norm in place of the second moment.",
    "NAdam": "NAdam: Adam with Nesterov momentum, optionally with decoupled weight decay.",
    "RAdam": "RAdam: Adam with a rectified adaptive learning rate.",
    "Rprop": "Rprop: resilient backpropagation, a per-element step size adapted to the "
             "gradient's sign.",
    "ASGD": "ASGD: averaged stochastic gradient descent.",
    "Lion": "Lion: the sign of an interpolated momentum, with decoupled weight decay.",
    "LAMB": "LAMB: Adam moments scaled per tensor by a trust ratio.",
}

#: What each option means (the check and default come from the spec and the
#: signature): the kernels' argument prose, and the class-only options;
#: ``_OPTION_FOR`` holds the classes that mean something else.
_OPTION: dict[str, str] = {
    **{name: ARGUMENTS[name] for name in (
        "lr", "eps", "amsgrad", "maximize", "decoupled_weight_decay", "momentum",
        "dampening", "nesterov", "alpha", "centered", "lr_decay", "rho",
        "momentum_decay")},
    "betas": "Coefficients of the running averages of the gradient (``beta1``) and of "
             "its square (``beta2``).",
    "weight_decay": "Weight decay: an L2 penalty added to the gradient.",
    "initial_accumulator_value": "Initial value of the ``sum`` state.",
    "etas": "Multiplicative decrease and increase factors of the step sizes "
            "``(etaminus, etaplus)``. Must satisfy ``0 < etaminus < 1 < etaplus``.",
    "step_sizes": "Smallest and largest step size ``(step_size_min, step_size_max)``.",
    "lambd": "Decay term.",
    "t0": "The step after which the average starts.",
    "state_dtype": "Storage of the optimizer's states, for every parameter: ``None`` (the "
                   "parameter's dtype; float32 for float16 parameters), ``\"float32\"``, "
                   "``\"bfloat16\"`` or ``\"int8\"`` (block-quantized "
                   "``optcore.QuantizedState``; tensors of fewer than "
                   "``optcore.precision.MIN_QUANTIZED_SIZE`` elements keep float32). "
                   "float64 parameters keep float64 states (any other value raises "
                   "TypeError).",
    "master_weights": "Keep a float32 copy of each bfloat16/float16 parameter (state "
                      "``master_param``), stepped in its place; the parameter is "
                      "rounded to nearest from it.",
    "rounding": "How bfloat16/float16 parameters without master weights are rounded: "
                "``\"nearest\"``, ``\"stochastic\"`` (bfloat16 only) or "
                "``\"kahan\"`` (state ``compensation``).",
    "seed": "Seed of stochastic rounding; each parameter's own is "
            "``optcore.precision.parameter_seed(seed, index)``.",
}
_OPTION_FOR: dict[tuple[str, str], str] = {
    ("Adamax", "betas"): "Coefficients of the running average of the gradient "
                         "(``beta1``) and of the decay of its infinity norm (``beta2``).",
    ("AdamW", "weight_decay"): "Decoupled weight decay: "
                               "``param *= 1 - lr * weight_decay`` before the update.",
    ("Rprop", "lr"): "Learning rate: the initial step size of every element.",
    ("ASGD", "alpha"): "Power of the decay of ``eta``.",
    ("Lion", "weight_decay"): "Decoupled weight decay: "
                              "``param *= 1 - lr * weight_decay`` before the update.",
    ("Lion", "betas"): "``beta1`` interpolates the update direction between the "
                       "momentum and the gradient; ``beta2`` is the momentum's decay.",
    ("LAMB", "weight_decay"): "Weight decay coefficient, added to the Adam update "
                              "before the trust ratio scales it.",
    ("RMSprop", "momentum"): "Momentum factor (``momentum > 0`` keeps a "
                             "``momentum_buffer``).",
}
_DECOUPLABLE = ARGUMENTS["weight_decay"]
#: The low-precision storage options (docs/torch.md, "Low precision").
_STORAGE: dict[str, tuple[str, str]] = {
    "state_dtype": ("{'float32', 'bfloat16', 'int8'} or None",
                    "Dtype of the state tensors: None keeps torch.optim's (the "
                    "parameter's; float32 for float16 parameters); ``'int8'`` "
                    "block-quantizes the states of tensors of at least 4096 elements "
                    "(``optcore.QuantizedState``; float32 below)."),
    "master_weights": ("bool", "Keep a float32 ``master_param`` of each bfloat16/"
                               "float16 parameter (made at its first step); the "
                               "parameter is rounded to nearest from it."),
    "rounding": ("{'nearest', 'stochastic', 'kahan'}",
                 "How bfloat16/float16 parameters without a master copy are rounded: "
                 "``'stochastic'`` (unbiased) or ``'kahan'`` (a ``compensation`` state)."),
    "seed": ("int", "Seed of stochastic rounding; each parameter draws from "
                    "its own seed, mixed from this one and its index."),
}

#: torch.optim's implementation switches, by layer ("numpy" or "torch").
_FLAG: dict[str, str] = {
    "foreach": "Accepted for compatibility with torch.optim; has no effect (every step "
               "is already one fused multi-tensor kernel call).",
    "fused": "Accepted for compatibility with torch.optim; has no effect (every step "
             "is already one fused multi-tensor kernel call).",
    "capturable": "Must be False: CUDA-graph capture does not apply to the {what} "
                  "optcore updates (True raises ValueError).",
    "differentiable": "Must be False: the kernels update the {what} in place outside "
                      "autograd (True raises ValueError).",
}
_FLAG_TYPE = {"foreach": "bool or None", "fused": "bool or None",
              "state_dtype": "str or None", "rounding": "str", "seed": "int",
              "master_weights": "bool"}

_CHECK = {"nonneg": "Must be ``>= 0``.", "beta": "Each must be in ``[0, 1)``.",
          "unit": "Must be in ``[0, 1]``.", "notnan": "Must not be NaN.",
          "open_unit": "Must be in ``(0, 1)``.", "above_one": "Must be ``> 1``."}

#: Class-specific remarks (Notes), both layers.
_NOTES: dict[str, str] = {
    "SGD": "SGD keeps no step count (as torch.optim.SGD): the momentum buffer is set "
           "to the gradient at a parameter's first step.",
    "AdamW": "Decoupled weight decay is always on, whatever a group's "
             "``decoupled_weight_decay`` says (as torch.optim.AdamW forces it).",
    "Adagrad": "The ``sum`` state is filled with the constructor's "
               "``initial_accumulator_value`` (a group's own value is not used, as in "
               "torch). Sparse gradients are not supported.",
    "Rprop": "A NaN gradient element counts as sign 0 (torch's ``sign``): it leaves "
             "its parameter and step size unchanged.",
    "ASGD": "``eta`` and ``mu`` are rounded at each update as torch.optim rounds them, "
            "in torch's default dtype (float32 for the NumPy class), so both take the "
            "same steps.",
    "NAdam": "``mu_product`` is rounded at each update as torch.optim rounds it, in "
             "torch's default dtype (float32 for the NumPy class), so both take the "
             "same steps.",
    "Lion": "Lion is not part of torch.optim (Chen et al. 2023, Algorithm 2; "
            "optax.lion).",
    "LAMB": "LAMB is not part of torch.optim (You et al. 2019, Algorithm 2; "
            "optax.lamb). The trust ratio ``||param|| / ||update||`` is computed per "
            "tensor (1 when either norm is 0).",
}

_SCALAR_STATE = {"step": "the number of updates taken",
                 "mu_product": "the product of the momentum coefficients so far",
                 "eta": "the step size of the next update",
                 "mu": "the averaging coefficient of the next update"}

#: The examples: constructor arguments, and the parameters printed after three
#: steps from ``[1.0, -2.0]`` on ``sum(w ** 2)`` (float64; the same in both layers).
_EXAMPLE: dict[str, tuple[dict[str, float], str]] = {
    "SGD": ({"lr": 0.1, "momentum": 0.9}, "[ 0.062 -0.124]"),
    "Adam": ({"lr": 0.1}, "[ 0.7016 -1.7006]"),
    "AdamW": ({"lr": 0.1}, "[ 0.6989 -1.6949]"),
    "RMSprop": ({"lr": 0.01}, "[ 0.78   -1.7753]"),
    "Adagrad": ({"lr": 0.1}, "[ 0.7805 -1.7758]"),
    "Adadelta": ({"lr": 1.0}, "[ 0.9903 -1.9903]"),
    "Adamax": ({"lr": 0.1}, "[ 0.7155 -1.7076]"),
    "NAdam": ({"lr": 0.1}, "[ 0.7527 -1.7475]"),
    "RAdam": ({"lr": 0.1}, "[ 0.4623 -0.9246]"),
    "Lion": ({"lr": 0.1}, "[ 0.7 -1.7]"),
    "Rprop": ({"lr": 0.1}, "[ 0.636 -1.636]"),
    "ASGD": ({"lr": 0.1}, "[ 0.512 -1.024]"),
    "LAMB": ({"lr": 0.1}, "[ 0.5702 -1.5675]"),
}


#: state_dtype of a kernel that keeps float32 states only (LAMB)
_FLOAT32_STATES = ("{'float32'} or None",
                   "Dtype of the state tensors: None keeps float32 for float32, "
                   "bfloat16 and float16 parameters (the trust ratio needs the whole "
                   "update's norm first, so the moments are not narrowed) and float64 "
                   "for float64 ones; ``'float32'`` is accepted for the former. Any "
                   "other value raises TypeError.")


def _float32_states(spec: OptimizerSpec, name: str) -> bool:
    return name == "state_dtype" and spec.spec.state_dtypes == ("float32",)


def _option_type(name: str, h: Hyper | None, layer: str) -> str:
    if name in _STORAGE:
        return _STORAGE[name][0]
    if name in PAIRS:
        return "tuple of float"
    if name in _FLAG_TYPE:
        return _FLAG_TYPE[name]
    if h is not None and h.ctype == "bint" or name in _FLAG:
        return "bool"
    if name == "lr" and layer == "torch":
        return "float or Tensor"
    return "float"


def _hypers(spec: OptimizerSpec) -> dict[str, Hyper]:
    hypers = {h.name: h for h in spec.spec.hypers}
    hypers.update({h.name: h for h in spec.extra})
    for pair in PAIRS.values():
        # the pair's check is its first element's (betas); a pair checked as a
        # whole (etas) says so in its text
        hypers[pair.option] = (hypers.get(pair.names[0], Hyper(pair.option))
                               if not pair.what else Hyper(pair.option))
    return hypers


def _describe(spec: OptimizerSpec, name: str, layer: str) -> str:
    if _float32_states(spec, name):
        return _FLOAT32_STATES[1]
    if name in _STORAGE:
        return _STORAGE[name][1]
    if name in _FLAG:
        return _FLAG[name].format(what="NumPy arrays" if layer == "numpy" else "tensors")
    text = _OPTION_FOR.get((spec.name, name))
    if text is None:
        if name == "weight_decay" and "decoupled_weight_decay" in spec.options:
            text = _DECOUPLABLE
        else:
            text = _OPTION.get(name) or _hypers(spec)[name].doc or name
    if name in _STORAGE:
        return text
    check = _hypers(spec)[name].check
    return f"{text} {_CHECK[check]}" if check else text


def _parameters(cls: type, spec: OptimizerSpec, layer: str) -> list[str]:
    if layer == "numpy":
        dtypes = ("float32, float64, bfloat16 (``ml_dtypes.bfloat16``) or float16"
                  if spec.spec.tiled else "float32 or float64")
        lines = ["params : iterable of numpy.ndarray or of dict",
                 f"    The parameters to optimize: {dtypes} arrays, updated "
                 "in place (never copied); or parameter groups, dicts with a "
                 "``\"params\"`` list and any of the options below (a group's own "
                 "values override the defaults)."]
    else:
        lines = ["params : iterable of torch.Tensor or of dict",
                 "    The parameters to optimize: CPU, dense, C-contiguous float32 or "
                 "float64 tensors, updated in place (never copied); or parameter "
                 "groups, dicts with ``\"params\"`` and any of the options below, as "
                 "in torch.optim."]
    hypers = _hypers(spec)
    for name, prm in inspect.signature(getattr(cls, "__init__")).parameters.items():
        if name in ("self", "params"):
            continue
        default = prm.default
        kind = (_FLOAT32_STATES[0] if _float32_states(spec, name)
                else _option_type(name, hypers.get(name), layer))
        head = f"{name} : {kind}"
        if default is not inspect.Parameter.empty and default is not REQUIRED:
            head += f", default {default!r}"
        lines += [head, "    " + _describe(spec, name, layer)]
    return lines


def _state_notes(spec: OptimizerSpec, layer: str) -> str:
    kernel = spec.spec
    parts = [f"``{k}`` ({_SCALAR_STATE.get(k, 'a scalar')})" for k in spec.scalars]
    for b in kernel.state:
        part = f"``{b.state_key}``"
        if b.needed is not None:
            test = {"true": "``{}``", "nonzero": "``{} != 0``",
                    "positive": "``{} > 0``"}[b.needed.test]
            part += " (only with " + test.format(b.needed.option) + ")"
        parts.append(part)
    scalar = "Python numbers" if layer == "numpy" else "one-element tensors"
    index = "``optimizer.state[i]``, ``i`` the parameter's index over all groups" \
        if layer == "numpy" else "``optimizer.state[param]``"
    when = ("created when the optimizer is constructed (for groups added later, at "
            "their first step)") if spec.eager else "created at a parameter's first step"
    text = (f"State ({index}), under torch.optim's keys: {', '.join(parts)}; "
            f"{when}.")
    if spec.scalars:
        text += f" Scalar state entries are {scalar}."
    return text


def _kernel_name(spec: OptimizerSpec) -> str:
    alias = f"{spec.name.lower()}_step"
    return alias if alias in spec.spec.aliases else spec.kernel


def _example(spec: OptimizerSpec, cls: type, layer: str) -> list[str]:
    arguments, printed = _EXAMPLE[spec.name]
    kwargs = ", ".join(f"{k}={v!r}" for k, v in arguments.items())
    signature = inspect.signature(getattr(cls, "__init__"))
    options = {n: p.default for n, p in signature.parameters.items()}
    options.update(arguments)
    keys = list(spec.scalars) + [b.state_key for b in spec.spec.state
                                 if b.needed is None or b.needed.holds(options)]
    name = spec.name
    lines = ["Minimize ``sum(w ** 2)`` from ``[1.0, -2.0]`` for three steps:", ""]
    if layer == "numpy":
        lines += [">>> import numpy as np",
                  ">>> import optcore",
                  ">>> w = np.array([1.0, -2.0])",
                  f">>> opt = optcore.{name}([w], {kwargs})",
                  ">>> for _ in range(3):",
                  "...     opt.step([2 * w])   # the gradient, one array per parameter",
                  ">>> print(w.round(4))",
                  printed,
                  ">>> sorted(opt.state[0])"]
    else:
        lines += [">>> import torch",
                  ">>> import optcore.torch",
                  ">>> w = torch.tensor([1.0, -2.0], dtype=torch.float64, "
                  "requires_grad=True)",
                  f">>> opt = optcore.torch.{name}([w], {kwargs})",
                  ">>> for _ in range(3):",
                  "...     opt.zero_grad()",
                  "...     (w ** 2).sum().backward()",
                  "...     opt.step()",
                  ">>> print(w.detach().numpy().round(4))",
                  printed,
                  ">>> sorted(opt.state[w])"]
    lines.append(repr(sorted(k for k in keys if k is not None)))
    return lines


def class_docstring(cls: type, layer: str) -> str:
    """The numpydoc docstring of optimizer class ``cls``.

    Parameters
    ----------
    cls : type
        A class named after an entry of ``optcore._spec.OPTIMIZERS``, with its
        constructor defined.
    layer : {"numpy", "torch"}
        ``"numpy"`` for ``optcore.optim``, ``"torch"`` for ``optcore.torch``.

    Returns
    -------
    str
        The docstring: summary, Parameters, Attributes, Raises, See Also,
        Notes (the state keys), Examples.
    """
    spec = OPTIMIZER[cls.__name__]
    name = spec.name
    kernel = _kernel_name(spec)
    what = "NumPy arrays" if layer == "numpy" else "torch tensors"
    refused = [f for f in ("capturable", "differentiable") if f in spec.flags]
    if layer == "numpy":
        intro = (f"torch.optim's arguments, defaults and state keys over {what}. "
                 if spec.in_torch else f"torch.optim-style optimizer over {what}. ")
    else:
        intro = (f"A drop-in for ``torch.optim.{name}`` (a ``torch.optim.Optimizer``). "
                 if spec.in_torch else "A ``torch.optim.Optimizer``. ")
    out = [_SUMMARY[name], "",
           intro + f"Each step is one multi-tensor call of ``optcore.{kernel}`` per "
                   "parameter group, in place.", "",
           "Parameters", "----------", *_parameters(cls, spec, layer), "",
           "Attributes", "----------",
           "param_groups : list of dict",
           "    The parameter groups: ``\"params\"`` and every option.",
           "defaults : dict",
           "    The constructor's options, used by groups that omit one.",
           "state : mapping",
           "    The per-parameter state (see Notes).", "",
           "Raises", "------",
           "ValueError",
           "    If an option is out of range (torch.optim's message, e.g. ``Invalid "
           "learning rate: -1.0``), the parameter list is empty, "
           + " or ".join(f"``{f}=True``" for f in refused)
           + (" is given, or ``nesterov`` is set without momentum or with dampening."
              if "nesterov" in spec.options else " is given."),
           "TypeError",
           "    If an option has the wrong type (a real number, a bool for flags"
           + "".join(f", a pair for ``{name}``" for name in spec.options if name in PAIRS)
           + "), or ``params`` is not an iterable of "
           + ("arrays or dicts." if layer == "numpy" else
              "tensors or dicts, or a parameter's dtype is not float32/float64."),
           ]
    if "fused" in spec.flags and "foreach" in spec.flags:
        out += ["RuntimeError", "    If ``fused`` and ``foreach`` are both True."]
    out += ["", "See Also", "--------",
            f"optcore.{kernel} : The functional kernel of each step."]
    if layer == "numpy":
        out.append(f"optcore.torch.{name} : The same optimizer for torch tensors.")
    else:
        out.append(f"optcore.{name} : The same optimizer for NumPy arrays.")
    if spec.in_torch:
        out.append(f"torch.optim.{name} : The update and state layout it reproduces.")
    out += ["", "Notes", "-----", _state_notes(spec, layer)]
    if name in _NOTES:
        out += ["", _NOTES[name]]
    text = [_wrap(line) for line in out]
    text += ["", "Examples", "--------", *_example(spec, cls, layer)]
    return "\n".join(text) + "\n"


def _wrap(line: str) -> str:
    """A long prose line filled to 79 columns, keeping its indent."""
    indent = line[:len(line) - len(line.lstrip())]
    return textwrap.fill(line, 79, subsequent_indent=indent, break_long_words=False,
                         break_on_hyphens=False)
