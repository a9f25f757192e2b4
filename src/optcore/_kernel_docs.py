"""The numpydoc docstrings of the step kernels, rendered from their spec entries.

What each argument means is written once, in ``ARGUMENTS`` (keyed by the
argument's name, shared by every kernel that takes it; ``ARGUMENT_FOR`` holds
the few kernels where a name means something else). Types, defaults, ranges
(the spec's checks) and when an optional buffer is used come from the spec
entry, so a docstring cannot drift from the wrapper it documents.

build_tools/generate.py loads this file by path at build time (it renders the
compiled wrappers' docstrings); ``optcore.reference`` renders its twins'
docstrings from the same functions at run time. Hence no optcore imports: the
spec objects are passed in.
"""

from __future__ import annotations

import textwrap
from typing import Any, Mapping

#: What each kernel argument is (buffers: the noun; the dtype, layout and
#: whether it is updated are added from the spec). The optimizer classes'
#: docstrings (optcore/optim/_docs.py) take their options' prose from here too.
ARGUMENTS: dict[str, str] = {
    "param": "The parameters",
    "grad": "The gradient of the objective with respect to ``param``",
    "exp_avg": "Running average of the gradient (the first moment)",
    "exp_avg_sq": "Running average of the squared gradient (the second moment)",
    "max_exp_avg_sq": "Running maximum of ``exp_avg_sq`` (AMSGrad)",
    "momentum_buffer": "The momentum buffer",
    "square_avg": "Running average of the squared gradient",
    "grad_avg": "Running average of the gradient (centered RMSprop)",
    "state_sum": "Sum of the squared gradients (torch's state ``sum``); fill it with "
                 "``initial_accumulator_value`` before the first step",
    "acc_delta": "Running average of the squared updates",
    "exp_inf": "Exponentially weighted infinity norm of the gradient",
    "step": "The 1-based count of this update.",
    "lr": "Learning rate.",
    "beta1": "Coefficient of the running average of the gradient.",
    "beta2": "Coefficient of the running average of the squared gradient.",
    "eps": "Term added to the denominator for numerical stability.",
    "weight_decay": "Weight decay: an L2 penalty added to the gradient, or decoupled "
                    "with ``decoupled_weight_decay``.",
    "decoupled_weight_decay": "Decay the parameters directly, "
                              "``param *= 1 - lr * weight_decay`` (AdamW's decay), "
                              "instead of adding an L2 penalty to the gradient.",
    "amsgrad": "Use the AMSGrad variant (divide by the running maximum of "
               "``exp_avg_sq``).",
    "maximize": "Maximize the objective instead of minimizing it (the gradient is "
                "negated).",
    "momentum": "Momentum factor.",
    "dampening": "Dampening of the momentum: the gradient enters the buffer with "
                 "weight ``1 - dampening``.",
    "nesterov": "Use Nesterov momentum (needs ``momentum > 0`` and "
                "``dampening == 0``).",
    "alpha": "Smoothing constant of the running average of the squared gradient.",
    "centered": "Divide by the centered second moment (an estimate of the gradient's "
                "variance), keeping a ``grad_avg`` state.",
    "lr_decay": "Learning rate decay: the step size is "
                "``lr / (1 + (step - 1) * lr_decay)``.",
    "rho": "Coefficient of the running averages of the squared gradient and of the "
           "squared update.",
    "momentum_decay": "Decay of NAdam's momentum schedule (its ``psi``).",
    "mu_product": "Product of the momentum coefficients of the earlier steps: 1.0 at "
                  "step 1, then the value the previous call returned.",
    "prev": "The previous step's gradient (zeros before the first step).",
    "step_size": "Per-element step sizes (the learning rate before the first step).",
    "etaminus": "Factor of the step size where the gradient changed sign.",
    "etaplus": "Factor of the step size where the gradient kept its sign.",
    "ax": "Running average of the parameters (zeros before the first step).",
    "master_param": "float32 master copy of a bfloat16 or float16 ``param`` (its "
                    "shape, C-contiguous, updated in place): the step updates it and "
                    "writes ``param`` from it, rounded to nearest, in the same pass.",
    "rounding": "How a bfloat16/float16 ``param`` without ``master_param`` is "
                "rounded on store: ``'nearest'`` (even), ``'stochastic'`` (random "
                "bits from ``seed``, ``step`` and the element's index; "
                "unbiased) or ``'kahan'`` (compensated, with ``compensation``).",
    "compensation": "Kahan compensation buffer of ``param``'s dtype and shape (zeros "
                    "before the first step), with ``rounding='kahan'``; updated in place.",
    "seed": "Seed of stochastic rounding (an int in ``[0, 2**64)``); the rounding is "
            "the same for any thread count.",
    "out": "Where the update direction is written (its old values are not read)",
    "update": "The orthogonalized update (Muon's Newton–Schulz result)",
    "decay": "Factor of the decoupled weight decay, ``1 - lr * weight_decay`` with the "
             "unadjusted learning rate (1.0: none).",
}

#: (kernel, argument) -> the meaning where it differs from ``ARGUMENTS``.
ARGUMENT_FOR: dict[tuple[str, str], str] = {
    ("sgd_step", "weight_decay"): "Weight decay: an L2 penalty added to the gradient.",
    ("rmsprop_step", "weight_decay"): "Weight decay: an L2 penalty added to the "
                                      "gradient.",
    ("adagrad_step", "weight_decay"): "Weight decay: an L2 penalty added to the "
                                      "gradient.",
    ("adadelta_step", "weight_decay"): "Weight decay: an L2 penalty added to the "
                                       "gradient.",
    ("adamax_step", "weight_decay"): "Weight decay: an L2 penalty added to the "
                                     "gradient.",
    ("adamax_step", "beta2"): "Decay of the infinity norm of the gradient.",
    ("lion_step", "beta1"): "Interpolation between the momentum and the gradient for "
                            "the update direction.",
    ("lion_step", "beta2"): "Decay of the momentum.",
    ("lion_step", "weight_decay"): "Decoupled weight decay: "
                                   "``param *= 1 - lr * weight_decay``.",
    ("lamb_step", "weight_decay"): "Weight decay coefficient, added to the Adam update "
                                   "before the trust ratio scales it.",
    ("muon_momentum", "nesterov"): "Write the Nesterov update ``lerp(grad, "
                                   "momentum_buffer, momentum)`` to ``out``.",
    ("muon_apply", "lr"): "The adjusted learning rate (Muon's ``adjust_lr_fn`` "
                          "applied).",
}

#: The range each spec check enforces.
RANGES = {"nonneg": "Must be ``>= 0``.", "beta": "Must be in ``[0, 1)``.",
          "unit": "Must be in ``[0, 1]``.", "notnan": "Must not be NaN.",
          "open_unit": "Must be in ``(0, 1)``.", "above_one": "Must be ``> 1``."}
_TYPES = {"double": "float", "bint": "bool", "step": "int"}
_BUFFERS = "numpy.ndarray or list of numpy.ndarray"
#: Hand-written examples (the others are one step on three elements).
EXAMPLES = {"sgd_step": """>>> import numpy as np
>>> import optcore
>>> param = np.array([1.0, -2.0, 0.5], dtype=np.float32)
>>> grad = np.array([0.5, -1.0, 2.0], dtype=np.float32)
>>> optcore.sgd_step(param, grad, step=1, lr=0.1)
>>> param
array([ 0.95, -1.9 ,  0.3 ], dtype=float32)""",
            "muon_momentum": """>>> import numpy as np
>>> import optcore
>>> grad = np.array([1.0, -2.0, 0.5], dtype=np.float32)
>>> buf, out = np.zeros_like(grad), np.empty_like(grad)
>>> optcore.muon_momentum(grad, buf, out, momentum=0.5)
>>> buf, out
(array([ 0.5 , -1.  ,  0.25], dtype=float32), array([ 0.75 , -1.5  ,  0.375], dtype=float32))""",
            "muon_apply": """>>> import numpy as np
>>> import optcore
>>> param = np.array([1.0, -2.0, 0.5], dtype=np.float32)
>>> update = np.array([1.0, 1.0, -1.0], dtype=np.float32)
>>> optcore.muon_apply(param, update, lr=0.5, decay=0.5)
>>> param
array([ 0.  , -1.5 ,  0.75], dtype=float32)"""}
#: Example values of the arguments that have no default.
EXAMPLE_VALUES = {"step": "1", "lr": "0.1", "mu_product": "1.0", "eta": "0.1", "mu": "1.0"}


def _need(need: Any) -> str:
    return {"true": "``{}``", "nonzero": "``{} != 0``", "positive": "``{} > 0``"}[
        need.test].format(need.option)


def _describe(kernel: Any, arg: Any) -> str:
    """What ``arg`` (a spec Buffer or Hyper) is: ``ARGUMENT_FOR``, else
    ``ARGUMENTS``, else the spec entry's own ``doc``; a buffer's as a noun
    phrase, a scalar's as a sentence."""
    text = (ARGUMENT_FOR.get((kernel.name, arg.name)) or ARGUMENTS.get(arg.name)
            or arg.doc)
    if not text:
        raise KeyError(f"argument {arg.name!r} of {kernel.name} has no description: "
                       "add it to ARGUMENTS in optcore/_kernel_docs.py")
    text = text[0].upper() + text[1:]
    if hasattr(arg, "role"):
        return text.rstrip(".")
    return text if text.endswith(".") else text + "."


#: The result of the kernels that return one (the others return None).
RESULTS = {"nadam_step": "The new ``mu_product`` (``mu_product * mu_t``), in double "
                         "precision: pass it to the next call."}


def _buffer(kernel: Any, b: Any) -> list[str]:
    text = _describe(kernel, b)
    first = kernel.buffers[0].name          # param, for the optimizer steps
    low = kernel.tiled and first == "param"
    if b.name == first and b.role == "write":
        text += (": float32 or float64" + (", bfloat16 or float16" if low else "")
                 + ", C-contiguous and writable; updated in place (never copied).")
    elif b.name == first:
        text += ": float32 or float64; read only (another layout is read through a copy)."
    elif b.role == "read":
        text += (f": the size of ``{first}``, its dtype" + (
            " (or, with a float32, bfloat16 or float16 param, any of those)"
            if low else "") + "; read only (another layout is read through a copy).")
    else:
        text += (f": the dtype and size of ``{first}``" + (
            " (with a float32, bfloat16 or float16 param: float32, bfloat16 or an "
            "int8 :class:`optcore.QuantizedState`)" if low else "")
            + ", C-contiguous and writable; "
            + ("updated in place." if b.is_state or b.name == "param" else "written."))
    if b.needed is not None:
        text += (f" Used only when {_need(b.needed)}; otherwise it may be None and is "
                 "not touched.")
    head = f"{b.name} : {_BUFFERS}" + (" or None, optional" if b.needed else "")
    return [head, "    " + text]


def _hyper(kernel: Any, h: Any, default: Any) -> list[str]:
    head = f"{h.name} : {_TYPES[h.ctype]}"
    if repr(default) != "REQUIRED":
        head += f", default {default!r}"
    text = _describe(kernel, h)
    if h.ctype == "step":
        text += " Must be ``>= 1``."
    elif h.check:
        text += " " + RANGES[h.check]
    return [head, "    " + text]


def _parameters(kernel: Any, fixed: Mapping[str, Any],
                defaults: Mapping[str, Any]) -> list[str]:
    # The wrapper's order: positional buffers, then the keyword-only scalars,
    # a keyword buffer right after its option.
    lines = []
    for b in kernel.buffers:
        if not b.keyword:
            lines += _buffer(kernel, b)
    for h in kernel.hypers:
        if h.python and h.name not in fixed:
            lines += _hyper(kernel, h, defaults.get(h.name, h.default))
        for b in kernel.buffers:
            if b.keyword and b.needed and b.needed.option == h.name:
                lines += _buffer(kernel, b)
    for name, default in kernel.precision_args.items():
        kind = {"rounding": "{'nearest', 'stochastic', 'kahan'}", "seed": "int"}.get(
            name, "array or list of arrays, optional")
        head = f"{name} : {kind}" + ("" if default is None else f", default {default!r}")
        lines += [head, "    " + ARGUMENTS[name]]
    return lines


def _returns(kernel: Any) -> list[str]:
    if kernel.returns == "double":
        return ["float", "    " + RESULTS.get(kernel.name, "The step's result.")]
    return ["None", "    The buffers are updated in place."]


_RAISES = [
    "TypeError",
    "    If a buffer is not a float32 or float64 array (or a list of them), the "
    "buffers' dtypes differ, or a scalar has the wrong type (a real number; a bool "
    "for a flag; an integer for ``step``).",
    "ValueError",
    "    If an updated buffer is not C-contiguous or is read-only, the buffers' sizes "
    "or list lengths differ, a buffer the options need is None, ``step < 1``, or a "
    "scalar is out of its range (torch.optim's message, e.g. ``Invalid learning "
    "rate: -1.0``).",
]


def example(kernel: Any, name: str, module: str = "optcore") -> str:
    """A doctest of one step of ``name`` on three float32 elements, the
    states the defaults need starting at zero (at the option's example value
    for a state that starts at a group option, ``init="group:<option>"``)."""
    states = [b.name for b in kernel.buffers
              if b.name not in ("param", "grad") and b.needed is None]
    starts = {b.name: EXAMPLE_VALUES.get(b.init[len("group:"):], "0.1")
              for b in kernel.buffers if b.init.startswith("group:")}
    required = ", ".join(
        f"{h.name}={EXAMPLE_VALUES.get(h.name, '1' if h.ctype == 'step' else '0.1')}"
        for h in kernel.hypers if h.python and repr(h.default) == "REQUIRED")
    state_lines = "".join(f"\n>>> {s} = np.full_like(param, {starts[s]})" if s in starts
                          else f"\n>>> {s} = np.zeros_like(param)" for s in states)
    has_grad = any(b.name == "grad" for b in kernel.buffers)
    args = ", ".join(["param", *(["grad"] if has_grad else []), *states])
    grad_line = ("\n>>> grad = np.array([0.5, -1.0, 2.0], dtype=np.float32)"
                 if has_grad else "")
    return f""">>> import numpy as np
>>> import {module}
>>> param = np.array([1.0, -2.0, 0.5], dtype=np.float32){grad_line}{state_lines}
>>> before = param.copy()
>>> _ = {module}.{name}({args}, {required})
>>> bool(np.all(param != before))     # updated in place
True"""


def kernel_docstring(kernel: Any, name: str, doc: str, fixed: Mapping[str, Any],
                     defaults: Mapping[str, Any], examples: str | None = None) -> str:
    """The numpydoc docstring of wrapper ``name`` of spec entry ``kernel``.

    Parameters
    ----------
    kernel : optcore._spec.Kernel
        The spec entry.
    name : str
        The wrapper's name: the kernel's or one of its aliases.
    doc : str
        Summary line and extended description.
    fixed : mapping
        Arguments the wrapper fixes (left out of Parameters).
    defaults : mapping
        Defaults the wrapper overrides.
    examples : str, optional
        The Examples section's body (default: one step on three elements).

    Returns
    -------
    str
        Summary, description, Parameters, Returns, Raises, See Also, Examples.
    """
    out = [*doc.strip().splitlines(), "", "Parameters", "----------",
           *_parameters(kernel, fixed, defaults), "",
           "Returns", "-------", *_returns(kernel), "",
           "Raises", "------", *_RAISES, "",
           "See Also", "--------",
           f"optcore.reference.{name} : The NumPy twin (the same update in NumPy)."]
    text = [_wrap(line) for line in out]
    text += ["", "Examples", "--------",
             examples or EXAMPLES.get(name) or example(kernel, name)]
    return "\n".join(text)


def wrapper_docstrings(kernel: Any) -> list[dict[str, Any]]:
    """The Python wrappers of spec entry ``kernel``, its own and its aliases'.

    Parameters
    ----------
    kernel : optcore._spec.Kernel
        The spec entry.

    Returns
    -------
    list of dict
        One per wrapper: ``name``, ``fixed`` and ``defaults`` (the alias's
        options) and ``doc`` (its numpydoc docstring).
    """
    own = kernel.doc + ("\n\n" + kernel.details if kernel.details else "")
    out = [{"name": kernel.name, "fixed": {}, "defaults": {}, "doc": own}]
    for alias, options in kernel.aliases.items():
        options = dict(options)
        out.append({"name": alias, "defaults": options.pop("defaults", {}),
                    "fixed": options, "doc": kernel.alias_docs[alias]})
    for w in out:
        w["doc"] = kernel_docstring(kernel, w["name"], w["doc"], w["fixed"],
                                    w["defaults"])
    return out


def c_docstring(kernel: Any, suffix: str, dtype: str, ctype: str) -> str:
    """The docstring of ``optcore.numba.<kernel>_<suffix>``, the C function as
    a ctypes object.

    Parameters
    ----------
    kernel : optcore._spec.Kernel
        The spec entry.
    suffix : str
        ``"f32"`` or ``"f64"``.
    dtype : str
        The NumPy name of the element type.
    ctype : str
        The ctypes name of the element type.

    Returns
    -------
    str
        Summary, description, Parameters, Returns, See Also, Examples.
    """
    name = f"{kernel.name}_{suffix}"
    out = [f"``optcore.{kernel.name}`` on {dtype} buffers: the C function, for "
           "numba-jitted code.", "",
           f"``optcore.kernels.{kernel.module}.{name}`` as a ctypes function object; "
           "numba's nopython mode calls it with ``array.ctypes`` for each pointer. "
           "Nothing is checked: pass contiguous arrays of the right dtype and size, "
           "the written ones overlapping no other buffer.", "",
           "Parameters", "----------"]
    for b in kernel.buffers:
        text = (f"{_describe(kernel, b)}: ``n`` contiguous {dtype} elements; "
                + ("read." if b.role == "read" else "updated in place."
                   if b.is_state or b.name == "param" else "written."))
        if b.needed is not None:
            text += f" Not touched unless {_need(b.needed)} (any pointer then)."
        out += [f"{b.name} : ctypes.POINTER(ctypes.{ctype})", "    " + text]
    out += ["n : int", "    The number of elements of each buffer."]
    for h in kernel.hypers:
        kind = {"double": "float", "bint": "int", "step": "int"}[h.ctype]
        text = _describe(kernel, h)
        if h.ctype == "bint":
            text += " 0 or 1."
        elif h.ctype == "step":
            text += " Must be ``>= 1`` (not checked)."
        elif h.check:
            text += " " + RANGES[h.check][:-1] + " (not checked)."
        out += [f"{h.name} : {kind}", "    " + text]
    out += ["num_threads : int",
            "    1 runs on the calling thread (inside your own parallel loop), 0 uses "
            "optcore's process setting.", "",
            "Returns", "-------", *_returns(kernel), "",
            "See Also", "--------",
            f"optcore.{kernel.name} : The checked Python function."]
    pointer = f"ctypes.POINTER(ctypes.{ctype})"
    buffers = [b.name for b in kernel.buffers]
    target = next(b.name for b in kernel.buffers if b.role == "write")   # param, mostly
    values = [EXAMPLE_VALUES.get(h.name, "1" if h.ctype == "step" else "0")
              if repr(h.default) == "REQUIRED" else
              (str(int(h.default)) if h.ctype == "bint" else repr(h.default))
              for h in kernel.hypers]
    call = f">>> _ = optcore.numba.{name}(" + ", ".join(
        [f"ptr({b})" for b in buffers]
        + ["param.size", *values, "1"]) + ")"
    examples = [">>> import ctypes",
                ">>> import numpy as np",
                ">>> import optcore.numba",
                f">>> param = np.array([1.0, -2.0, 0.5], dtype=np.{dtype})",
                f">>> grad = np.array([0.5, -1.0, 2.0], dtype=np.{dtype})",
                # the other inputs at 1, the states at 0
                *[f">>> {b.name} = np.{'ones' if b.role == 'read' else 'zeros'}_like(param)"
                  for b in kernel.buffers if b.name not in ("param", "grad")],
                f">>> def ptr(a): return a.ctypes.data_as({pointer})",
                f">>> before = {target}.copy()",
                call,
                f">>> bool(np.all({target} != before))",
                "True"]
    lines = [_wrap(line) for line in out]
    return "\n".join(lines + ["", "Examples", "--------", *examples])


def twin_docstring(doc: str, name: str, notes: str | None = None) -> str:
    """The docstring of ``optcore.reference.<name>`` from ``optcore.<name>``'s:
    a new summary, the same Parameters and Returns, no Raises (the twin checks
    less), the examples run on the twin.

    Parameters
    ----------
    doc : str
        The docstring of ``optcore.<name>`` (numpydoc).
    name : str
        The function's name.
    notes : str, optional
        Remarks on the twin itself, kept as its Notes section.

    Returns
    -------
    str
        The twin's docstring.
    """
    sections = _sections(inspect_clean(doc))
    out = [f"The NumPy twin of ``optcore.{name}``: the same result, in plain NumPy.", "",
           "Written from the documented rule, one NumPy operation per step, to hold "
           f"``optcore.{name}`` to; it checks less of its input.", ""]
    for title in ("Parameters", "Returns"):
        if title in sections:
            out += [title, "-" * len(title), *sections[title], ""]
    out += ["See Also", "--------", f"optcore.{name} : The fast implementation.", ""]
    if notes:
        out += ["Notes", "-----", *inspect_clean(notes).splitlines(), ""]
    body = "\n".join(sections.get("Examples", []))
    body = body.replace(f"optcore.{name}(", f"optcore.reference.{name}(")
    body = body.replace(">>> import optcore\n", ">>> import optcore.reference\n")
    out += ["Examples", "--------", body]
    return "\n".join(_wrap(line) for line in out)


def inspect_clean(doc: str) -> str:
    """``doc`` with the common indentation of its lines after the first removed."""
    first, _, rest = doc.strip("\n").partition("\n")
    return (first.strip() + "\n" + textwrap.dedent(rest)).strip()


def _sections(doc: str) -> dict[str, list[str]]:
    lines = doc.splitlines()
    out: dict[str, list[str]] = {}
    current = ""
    for i, line in enumerate(lines):
        if i + 1 < len(lines) and set(lines[i + 1].strip()) == {"-"} and line.strip():
            current = line.strip()
            out[current] = []
        elif current and not set(line.strip()) == {"-"}:
            out[current].append(line)
    return {k: _strip_blank(v) for k, v in out.items()}


def _strip_blank(lines: list[str]) -> list[str]:
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def _wrap(line: str) -> str:
    """A long prose line filled to 79 columns, keeping its indent."""
    if len(line) <= 79 or line.lstrip().startswith(">>>"):
        return line
    indent = line[:len(line) - len(line.lstrip())]
    return textwrap.fill(line, 79, subsequent_indent=indent, break_long_words=False,
                         break_on_hyphens=False)
