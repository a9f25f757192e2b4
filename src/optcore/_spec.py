"""The kernel spec: one entry per native kernel, one per optimizer class.

Everything mechanical about a kernel is derived from its entry here: the
per-dtype C API and ``.pxd`` (``<name>_f32/_f64`` and ``<name>_multi_f32/_f64``),
the per-dtype segment entry points, the Python ``def`` wrapper (argument checks,
buffer roles), ``optcore/kernels/__init__.pxd``, the numba signature table and
the ``.pyi`` stubs (``build_tools/generate.py`` renders them at build time), and
the tables of both class layers (``optcore.optim``, ``optcore.torch``) and of the
bench. The math itself (the element update) stays hand-written in the kernel's
``.pyx``, beside its NumPy twin in ``optcore/reference.py``.

This module is plain data with no imports from optcore, so that the build can
load it before anything is compiled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

#: Element types of the float kernels: (C-name suffix, C type, NumPy name).
DTYPES: tuple[tuple[str, str, str], ...] = (
    ("f32", "float", "float32"),
    ("f64", "double", "float64"),
)


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


#: Default of an argument that has none (keyword-only and required).
REQUIRED: Any = _Required()


@dataclass(frozen=True)
class Need:
    """When a buffer is used: ``option`` is true (``"true"``), non-zero
    (``"nonzero"``) or positive (``"positive"``)."""

    option: str
    test: str = "true"

    def holds(self, options: Mapping[str, Any]) -> bool:
        value = options[self.option]
        if self.test == "true":
            return bool(value)
        if self.test == "nonzero":
            return value != 0
        if self.test == "positive":
            return value > 0
        raise ValueError(f"unknown test {self.test!r}")

    def cython(self, prefix: str = "") -> str:
        """The condition as a Cython expression over the C arguments (named
        ``prefix + option``)."""
        return {"true": "{}", "nonzero": "{} != 0.0", "positive": "{} > 0.0"}[
            self.test].format(prefix + self.option)


@dataclass(frozen=True)
class Buffer:
    """A buffer argument of a kernel.

    ``role``: "write" (updated in place: contiguous, writable, never copied)
    or "read". ``needed``: None when always used, else the condition under
    which it is (otherwise ``None`` is accepted and it is not touched).
    ``state_key``: torch.optim's state key for an optimizer-state buffer
    (None for the parameter, the gradient and any other input, and for an
    output: a "write" buffer the kernel overwrites without reading, such as
    ``muon_momentum``'s ``out``). ``init``: how a class layer creates
    the state: "zeros", "grad" (the kernel sets it from the gradient at step 1)
    "fill:<option>" (filled with that constructor option, as torch's Adagrad)
    or "group:<option>" (with the parameter group's value, as torch's Rprop
    fills ``step_size`` with the group's ``lr``). ``keyword``: a
    ``needed`` buffer the Python wrapper takes as a keyword-only argument right
    after its option (Adam's ``max_exp_avg_sq`` after ``amsgrad``) instead of
    positionally after the other buffers. ``unsigned``: a state that is never
    negative (second moments), quantized with the unsigned int8 map."""

    name: str
    role: str = "write"
    needed: Need | None = None
    state_key: str | None = None
    init: str = "zeros"
    doc: str = ""
    keyword: bool = False
    #: int8 quantization: the unsigned map (a state that is never negative)
    unsigned: bool = False

    @property
    def is_state(self) -> bool:
        return self.state_key is not None


@dataclass(frozen=True)
class Hyper:
    """A scalar argument of a kernel, in C-API order.

    ``ctype``: "double", "bint" (a flag) or "step" (the 1-based update count,
    ``long long``). ``check``: the constraint, one of CHECKS (None: any value).
    ``what``: the noun of torch.optim's message for a bad value ("learning
    rate" gives "Invalid learning rate: ..."). ``index``: for betas, the index
    torch's message names. ``python``: False for a C-only argument that the
    Python wrapper passes as its default (no entry uses it yet; aliases fix
    arguments per wrapper instead, e.g. ``adamw_step``)."""

    name: str
    ctype: str = "double"
    default: Any = REQUIRED
    check: str | None = None
    what: str = ""
    index: int = -1
    doc: str = ""
    python: bool = True


#: Constraints on double hyperparameters: name -> the test a valid ``x`` passes,
#: as C text. The generated wrappers inline it for plain floats; every other value,
#: and every failure, goes to optcore.kernels._checks.hyper, which applies the
#: same test and words the error (tests/test_checks.py holds the two together).
CHECKS: dict[str, str] = {
    "nonneg": "0 <= x",
    "beta": "0 <= x < 1",
    "unit": "0 <= x <= 1",
    "notnan": "x == x",
    "open_unit": "0 < x < 1",
    "above_one": "1 < x",
}


@dataclass(frozen=True)
class Pair:
    """A param-group option holding two kernel arguments (torch's ``betas``:
    ``beta1``/``beta2``). ``what``: when set, torch.optim checks the pair as a
    whole with the message ``"Invalid <what>: <first>, <second>"`` (Rprop's
    ``etas``); otherwise each element is checked with its own message."""

    option: str
    names: tuple[str, str]
    what: str = ""


#: Every pair option, by its name in the param groups.
PAIRS: dict[str, Pair] = {p.option: p for p in (
    Pair("betas", ("beta1", "beta2")),
    Pair("etas", ("etaminus", "etaplus"), "eta values"),
    Pair("step_sizes", ("step_size_min", "step_size_max")),
)}


@dataclass(frozen=True)
class Kernel:
    """One native kernel family entry point (``optcore.<name>``).

    ``doc`` is the first line of the Python docstring and ``details`` the rest
    (also in the ``.pyi`` stubs); ``alias_docs`` the docstrings of the
    ``aliases``. ``c_notes``: contract lines of the C API beyond the common
    ones (comment text of the generated ``.pxd``). ``multi_returns``: the C
    return type of the ``*_multi_*`` forms when it differs from ``returns``.
    ``run``: "generated" (``_run`` sets the buffers, NULL where not ``needed``,
    calls the ``.pyx``'s ``_prepare(&c, <hyperparameters>)``, which returns
    the result if any, and runs the segments) or "hand" (the ``.pyx`` writes
    ``_run``). ``low_precision``: a "hand" ``_run`` that takes the tiled
    call's storage too (see ``tiled``). ``state_dtypes``: the storages its
    states take with float32/bfloat16/float16 params (STATE_DTYPES; LAMB's
    second pass recomputes the update from the stored moments, which must
    then be the first pass's exactly: float32). ``tiled_skips``: buffers the
    float32 segment does not read (passed to it as NULL, not widened)."""

    name: str
    module: str
    buffers: tuple[Buffer, ...]
    hypers: tuple[Hyper, ...]
    doc: str
    returns: str = "void"          # C return type: "void" or "double"
    multi: bool = True             # has the *_multi_* forms
    wrapper: str = "generated"     # or "hand": the .pyx writes its own def
    run: str = "generated"         # or "hand": the .pyx writes its own _run
    #: Python-only variants of the def wrapper: name -> {C argument: fixed value}
    #: plus {"defaults": {...}} overrides (e.g. adamw_step).
    aliases: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    details: str = ""
    alias_docs: Mapping[str, str] = field(default_factory=dict)
    c_notes: str = ""
    multi_returns: str | None = None
    low_precision: bool = False
    state_dtypes: tuple[str, ...] = ("float32", "bfloat16", "int8")
    tiled_skips: tuple[str, ...] = ()

    @property
    def state(self) -> tuple[Buffer, ...]:
        return tuple(b for b in self.buffers if b.is_state)

    @property
    def tiled(self) -> bool:
        """Whether the kernel takes low-precision buffers (PRECISION_ARGS):
        every elementwise optimizer step (a ``param`` and a ``step``), whose
        generated ``_run`` can feed its float32 segment through tiles, and a
        hand-written ``_run`` that says so (``low_precision``)."""
        return ((self.run == "generated" or self.low_precision)
                and self.buffers[0].name == "param"
                and any(h.name == "step" for h in self.hypers))

    @property
    def precision_args(self) -> Mapping[str, Any]:
        """PRECISION_ARGS for a tiled kernel, else none."""
        return PRECISION_ARGS if self.tiled else {}

    def hyper(self, name: str) -> Hyper:
        for h in self.hypers:
            if h.name == name:
                return h
        raise KeyError(name)


# -- shared argument descriptions ---------------------------------------------

def _param() -> Buffer:
    return Buffer("param", "write", doc="parameters, updated in place")


def _grad() -> Buffer:
    return Buffer("grad", "read", doc="gradient, read")


def _state(name: str, key: str | None = None, needed: Need | None = None,
           init: str = "zeros", keyword: bool = False, unsigned: bool = False) -> Buffer:
    return Buffer(name, "write", needed, key or name, init, keyword=keyword,
                  unsigned=unsigned)


#: The keyword arguments of every tiled kernel (Kernel.tiled) for
#: low-precision parameters, after the kernel's own: name -> default. Which
#: combinations run is optcore/kernels/_precision.pyx's rule.
PRECISION_ARGS: dict[str, Any] = {
    "master_param": None,
    "rounding": "nearest",
    "compensation": None,
    "seed": 0,
}
#: The optimizer classes' storage options: state dtypes and roundings.
STATE_DTYPES = ("float32", "bfloat16", "int8")
ROUNDINGS = ("nearest", "stochastic", "kahan")


STEP = Hyper("step", "step", doc="1-based count of this update")
MAXIMIZE = Hyper("maximize", "bint", False, doc="maximize the objective")


def _lr(default: float) -> Hyper:
    return Hyper("lr", "double", default, "nonneg", "learning rate")


def _eps(default: float) -> Hyper:
    return Hyper("eps", "double", default, "nonneg", "epsilon value")


def _beta(i: int, default: float) -> Hyper:
    return Hyper(f"beta{i + 1}", "double", default, "beta", "beta parameter", index=i)


def _weight_decay(default: float = 0.0) -> Hyper:
    return Hyper("weight_decay", "double", default, "nonneg", "weight_decay value")


def _flag(name: str, default: bool = False, doc: str = "") -> Hyper:
    return Hyper(name, "bint", default, doc=doc)


# -- the kernels --------------------------------------------------------------

KERNELS: tuple[Kernel, ...] = (
    Kernel(
        "sgd_step", "sgd",
        (_param(), _grad(),
         _state("momentum_buffer", needed=Need("momentum", "nonzero"), init="grad")),
        (STEP, _lr(REQUIRED),
         Hyper("momentum", "double", 0.0, "nonneg", "momentum value"),
         Hyper("dampening", "double", 0.0, "notnan", "dampening value"),
         _flag("nesterov"), _weight_decay(), MAXIMIZE),
        "One SGD step in place (torch.optim.SGD's update).",
        wrapper="hand",
        details="""With ``momentum > 0`` the ``momentum_buffer`` is required and updated; at
``step == 1`` it is set to the (decayed, maximized) gradient. Each buffer
argument is one array or a list of arrays (one native call for the list).""",
        c_notes="""at step 1 the momentum buffer is set to the (decayed, maximized) gradient,
as torch.optim.SGD does. The update is torch.optim.SGD's."""),
    Kernel(
        "adam_step", "adam",
        (_param(), _grad(), _state("exp_avg"), _state("exp_avg_sq", unsigned=True),
         _state("max_exp_avg_sq", needed=Need("amsgrad"), keyword=True, unsigned=True)),
        (STEP, _lr(1e-3), _beta(0, 0.9), _beta(1, 0.999), _eps(1e-8),
         _weight_decay(), _flag("decoupled_weight_decay"), _flag("amsgrad"), MAXIMIZE),
        "One Adam step in place (torch.optim.Adam's update).",
        aliases={"adamw_step": {"decoupled_weight_decay": True,
                                "defaults": {"weight_decay": 1e-2}}},
        alias_docs={"adamw_step": """One AdamW step in place: ``adam_step`` with decoupled weight decay
(torch.optim.AdamW's update and defaults)."""},
        details="""``param``, ``exp_avg``, ``exp_avg_sq`` (and ``max_exp_avg_sq`` with
``amsgrad``) are updated in place; ``grad`` is read. Each buffer argument is
one array or a list of arrays (one native call for the whole list). ``step``
is the 1-based count of this update. With ``decoupled_weight_decay`` the
decay is AdamW's (``param *= 1 - lr * weight_decay``), else L2 added to the
gradient.""",
        c_notes="""the bias corrections 1 - beta1**step and 1 - beta2**step are computed
inside. The update is torch.optim.Adam's (AdamW: decoupled_weight_decay=1),
except that sqrt(v) is multiplied by 1 / sqrt(1 - beta2**step), computed once per
step, where torch divides by sqrt(1 - beta2**step)."""),
    Kernel(
        "rmsprop_step", "rmsprop",
        (_param(), _grad(), _state("square_avg", unsigned=True),
         _state("momentum_buffer", needed=Need("momentum", "positive")),
         _state("grad_avg", needed=Need("centered"))),
        (STEP, _lr(1e-2), Hyper("alpha", "double", 0.99, "nonneg", "alpha value"),
         _eps(1e-8), _weight_decay(),
         Hyper("momentum", "double", 0.0, "nonneg", "momentum value"),
         _flag("centered"), MAXIMIZE),
        "One RMSprop step in place (torch.optim.RMSprop's update).",
        details="""``param`` and ``square_avg`` are updated in place, ``grad`` is read.
``momentum_buffer`` is required (and updated) when ``momentum > 0``,
``grad_avg`` when ``centered``; otherwise they are ignored. Each buffer
argument is one array or a list of arrays (one native call for the list).
``step`` is the 1-based count of this update (RMSprop's rule does not
depend on it; it is checked for consistency with the other steps).""",
        c_notes="""the states are torch.optim.RMSprop's (zero-initialised by the caller);
RMSprop's rule does not use `step` (it is part of the signature so that every
optimizer's call looks alike). The update is torch.optim.RMSprop's (weight
decay added to the gradient)."""),
    Kernel(
        "adagrad_step", "adagrad",
        (_param(), _grad(),
         _state("state_sum", "sum", init="fill:initial_accumulator_value",
                unsigned=True)),
        (STEP, _lr(1e-2), Hyper("lr_decay", "double", 0.0, "nonneg", "lr_decay value"),
         _weight_decay(), _eps(1e-10), MAXIMIZE),
        "One Adagrad step in place (torch.optim.Adagrad's update).",
        details="""The update is torch.optim.Adagrad's dense one. ``param`` and
``state_sum`` (torch's state key ``sum``) are updated in place, ``grad`` is
read. torch's ``initial_accumulator_value`` is the caller's: fill
``state_sum`` with it before the first step. The step size is
``lr / (1 + (step - 1) * lr_decay)``. Each buffer argument is one array or a
list of arrays (one native call for the list).""",
        c_notes="""state_sum is torch.optim.Adagrad's state "sum": the caller fills it with
initial_accumulator_value before the first step; the step size
lr / (1 + (step - 1) * lr_decay) is computed inside. The update is
torch.optim.Adagrad's dense one (weight decay added to the gradient)."""),
    Kernel(
        "adadelta_step", "adadelta",
        (_param(), _grad(), _state("square_avg", unsigned=True),
         _state("acc_delta", unsigned=True)),
        (STEP, _lr(1.0), Hyper("rho", "double", 0.9, "unit", "rho value"),
         _eps(1e-6), _weight_decay(), MAXIMIZE),
        "One Adadelta step in place (torch.optim.Adadelta's update).",
        details="""``param``, ``square_avg`` and ``acc_delta`` are updated in place, ``grad``
is read. Each buffer argument is one array or a list of arrays (one native
call for the list). ``step`` is the 1-based count of this update
(Adadelta's rule does not depend on it; it is checked for consistency with
the other steps).""",
        c_notes="""both states start at zero (torch.optim.Adadelta's state keys); Adadelta's
rule does not use `step` (it is part of the signature so that every
optimizer's call looks alike). The update is torch.optim.Adadelta's (weight
decay added to the gradient)."""),
    Kernel(
        "adamax_step", "adamax",
        (_param(), _grad(), _state("exp_avg"), _state("exp_inf", unsigned=True)),
        (STEP, _lr(2e-3), _beta(0, 0.9), _beta(1, 0.999), _eps(1e-8),
         _weight_decay(), MAXIMIZE),
        "One Adamax step in place (torch.optim.Adamax's update).",
        details="""``param``, ``exp_avg`` and ``exp_inf`` are updated in place, ``grad`` is
read. Each buffer argument is one array or a list of arrays (one native
call for the list). ``step`` is the 1-based count of this update (it sets
the bias correction ``1 - beta1**step``).""",
        c_notes="""both states start at zero (torch.optim.Adamax's state keys); the bias
correction 1 - beta1**step is computed inside. The update is
torch.optim.Adamax's (weight decay added to the gradient)."""),
    Kernel(
        "nadam_step", "nadam",
        (_param(), _grad(), _state("exp_avg"), _state("exp_avg_sq", unsigned=True)),
        (STEP, Hyper("mu_product", "double", REQUIRED,
                     doc="product of the momentum coefficients of earlier steps"),
         _lr(2e-3), _beta(0, 0.9), _beta(1, 0.999), _eps(1e-8), _weight_decay(),
         Hyper("momentum_decay", "double", 4e-3, "nonneg", "momentum_decay value"),
         _flag("decoupled_weight_decay"), MAXIMIZE),
        "One NAdam step in place (torch.optim.NAdam's update); returns the new "
        "``mu_product``.",
        returns="double",
        details="""``param``, ``exp_avg`` and ``exp_avg_sq`` are updated in place, ``grad`` is
read. ``mu_product`` is NAdam's scalar state (torch's state key of that
name): pass 1.0 at step 1, then the value the previous call returned. It is
kept in double precision whatever the buffers' dtype. Each buffer argument
is one array or a list of arrays (one native call for the list; they share
one ``mu_product``). ``step`` is the 1-based count of this update. With
``decoupled_weight_decay`` the decay is ``param *= 1 - lr * weight_decay``
(NAdamW), else L2 added to the gradient.""",
        c_notes="""both states start at zero (torch.optim.NAdam's state keys); mu_t, mu_{t+1}
and the bias correction 1 - beta2**step are computed inside. NAdam's scalar
state `mu_product` goes in by value and its new value (mu_product * mu_t) is
the return value: pass 1.0 at step 1, then what the previous call returned
(kept in double for every buffer dtype). A multi-tensor call shares one
mu_product across its tensors. The update is torch.optim.NAdam's
(decoupled_weight_decay: NAdamW's decay)."""),
    Kernel(
        "radam_step", "radam",
        (_param(), _grad(), _state("exp_avg"), _state("exp_avg_sq", unsigned=True)),
        (STEP, _lr(1e-3), _beta(0, 0.9), _beta(1, 0.999), _eps(1e-8),
         _weight_decay(), _flag("decoupled_weight_decay"), MAXIMIZE),
        "One RAdam step in place (torch.optim.RAdam's update).",
        details="""``param``, ``exp_avg`` and ``exp_avg_sq`` are updated in place, ``grad`` is
read. Each buffer argument is one array or a list of arrays (one native
call for the list). ``step`` is the 1-based count of this update: it sets
the bias corrections and the length of the approximated SMA, ``rho_t``;
the rectified adaptive step applies when ``rho_t > 5`` (from step 6 with
the default betas), plain bias-corrected momentum before. With
``decoupled_weight_decay`` the decay is ``param *= 1 - lr * weight_decay``,
else L2 added to the gradient.""",
        c_notes="""both states start at zero (torch.optim.RAdam's state keys); the bias
corrections, rho_t and the rectification term are computed inside (rectified
when rho_t > 5, as torch.optim.RAdam). The update is torch.optim.RAdam's
(decoupled_weight_decay: RAdamW's decay)."""),
    Kernel(
        "rprop_step", "rprop",
        (_param(), _grad(), _state("prev"),
         _state("step_size", init="group:lr", unsigned=True)),
        (STEP, Hyper("etaminus", "double", 0.5, "open_unit", "etaminus value"),
         Hyper("etaplus", "double", 1.2, "above_one", "etaplus value"),
         Hyper("step_size_min", "double", 1e-6, doc="smallest step size"),
         Hyper("step_size_max", "double", 50.0, doc="largest step size"), MAXIMIZE),
        "One Rprop step in place (torch.optim.Rprop's update).",
        details="""Per element, with ``s = sign(grad * prev)``: ``step_size`` is multiplied by
``etaplus`` where ``s > 0``, by ``etaminus`` where ``s < 0`` (and the
gradient is taken as 0 there), then clipped to
``[step_size_min, step_size_max]``; ``param -= sign(grad) * step_size`` and
``prev = grad`` (``grad`` negated when ``maximize``). A NaN gradient counts
as sign 0, as torch's ``sign`` does. ``param``, ``prev`` (zeros before the
first step) and ``step_size`` (filled with the learning rate before the
first step) are updated in place, ``grad`` is read. Each buffer argument is
one array or a list of arrays (one native call for the list). ``step`` is
the 1-based count of this update (Rprop's rule does not depend on it; it is
checked for consistency with the other steps).""",
        c_notes="""prev starts at zero and step_size at the learning rate (torch.optim.Rprop's
state keys); Rprop's rule does not use `step`. The update is
torch.optim.Rprop's (NaN gradients count as sign 0, as torch.sign)."""),
    Kernel(
        "asgd_step", "asgd",
        (_param(), _grad(), _state("ax")),
        (STEP, Hyper("eta", "double", REQUIRED, doc="step size of this update (ASGD's eta)"),
         Hyper("mu", "double", REQUIRED, doc="averaging coefficient of this update (ASGD's mu)"),
         Hyper("lambd", "double", 1e-4, doc="decay term"),
         _weight_decay(), MAXIMIZE),
        "One ASGD step in place (torch.optim.ASGD's update).",
        details="""``param *= 1 - lambd * eta``; ``param -= eta * g`` with ``g`` the gradient
(negated when ``maximize``, plus ``weight_decay * param``); then the
average ``ax = param`` when ``mu == 1``, else ``ax += (param - ax) * mu``.
``eta`` and ``mu`` are ASGD's scalar state (torch's state keys of those
names): pass ``lr`` and 1.0 at step 1, then, after step ``t``,
``eta = lr / (1 + lambd * lr * t) ** alpha`` and
``mu = 1 / max(1, t - t0)`` (torch.optim.ASGD keeps both in float32).
``param`` and ``ax`` are updated in place, ``grad`` is read. Each buffer
argument is one array or a list of arrays (one native call for the list;
they share one ``eta`` and ``mu``). ``step`` is the 1-based count of this
update (checked; the rule reads ``eta`` and ``mu``).""",
        c_notes="""ax starts at zero (torch.optim.ASGD's state key); eta and mu are ASGD's
scalar state, passed by value (the caller updates them after the step, as
torch.optim.ASGD does). The update is torch.optim.ASGD's (weight decay added
to the gradient)."""),
    Kernel(
        "lion_step", "lion",
        (_param(), _grad(), _state("exp_avg")),
        (STEP, _lr(1e-4), _beta(0, 0.9), _beta(1, 0.99), _weight_decay(), MAXIMIZE),
        "One Lion step in place (Chen et al. 2023, Algorithm 2; optax.lion).",
        details="""``c = beta1 * exp_avg + (1 - beta1) * grad``;
``param *= 1 - lr * weight_decay``; ``param -= lr * sign(c)``;
``exp_avg = beta2 * exp_avg + (1 - beta2) * grad`` (``grad`` negated when
``maximize``). sign(0) is 0 and NaN propagates. ``param`` and ``exp_avg``
are updated in place, ``grad`` is read; each is one array or a list of
arrays (one native call). Lion has no bias correction: ``step`` (the
1-based count of this update) is checked but does not change the update.""",
        c_notes="""`step` is accepted for a uniform signature; Lion has no bias correction.
The update is Lion's (Chen et al. 2023; optax.lion), see lion.pyx."""),
    Kernel(
        "lamb_step", "lamb",
        (_param(), _grad(), _state("exp_avg"), _state("exp_avg_sq", unsigned=True)),
        (STEP, _lr(1e-3), _beta(0, 0.9), _beta(1, 0.999), _eps(1e-6),
         _weight_decay(), MAXIMIZE),
        "One LAMB step in place (You et al. 2019, Algorithm 2; optax.lamb).",
        multi_returns="int", run="hand", low_precision=True, state_dtypes=("float32",),
        tiled_skips=("grad",),
        details="""Adam moments with bias correction,
``u = exp_avg_hat / (sqrt(exp_avg_sq_hat) + eps) + weight_decay * param``
(``x_hat = x * (1 / (1 - beta**step))``), then ``param -= lr * r * u`` with the trust ratio
``r = ||param|| / ||u||`` of each tensor (1 when either norm is 0). The
moments are ``exp_avg = beta1 * exp_avg + (1 - beta1) * grad`` and
``exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * grad**2`` (``grad``
negated when ``maximize``). Each buffer argument is one array or a list of
arrays (one native call; one trust ratio per tensor of the list). The
norms are accumulated in double and have the same bits for any thread count.""",
        c_notes="""the bias corrections are computed inside. The trust ratio is computed per
tensor (each tensor of a multi call has its own). The multi-tensor forms
return 0 (the int result is kept for compatibility: they once reported an
allocation failure; they allocate nothing now). The update is LAMB's (You et
al. 2019; optax.lamb), see lamb.pyx."""),
    # Muon's elementwise parts, around the Newton–Schulz matrix products (which
    # stay BLAS calls: optcore.optim._muon); not optimizer steps (no ``_step``).
    Kernel(
        "muon_momentum", "muon",
        (Buffer("grad", "read", doc="gradient, read"),
         _state("momentum_buffer"),
         Buffer("out", "write", Need("nesterov"), doc="the update direction, written")),
        (Hyper("momentum", "double", 0.95, "nonneg", "momentum value"),
         _flag("nesterov", True)),
        "Muon's momentum step in one pass (torch.optim.Muon's): the buffer "
        "updated, the update direction written.",
        details="""``momentum_buffer = lerp(momentum_buffer, grad, 1 - momentum)``; with
``nesterov``, ``out = lerp(grad, momentum_buffer, momentum)`` (the update to
orthogonalize; else it is the buffer and ``out`` is not touched). torch.lerp's
formula and fma: ``fma(w, end - start, start)`` if ``|w| < 0.5``, else
``fma(w - 1, end - start, end)``, in the buffers' dtype (torch's bits). Each
buffer argument is one array or a list of arrays (one native call).""",
        c_notes="""out is written, not read (not touched unless nesterov). The lerps are
torch.lerp's with its fused multiply-adds (C fma/fmaf), as torch.optim.Muon."""),
    Kernel(
        "muon_apply", "muon_apply",
        (_param(), Buffer("update", "read", doc="orthogonalized update, read")),
        (Hyper("lr", "double", REQUIRED, "nonneg", "learning rate"),
         Hyper("decay", "double", 1.0, "notnan", "decay value")),
        "Muon's parameter update in one pass (torch.optim.Muon's): "
        "``param = param * decay - lr * update``.",
        details="""In torch's order (``mul_(decay)``, ``add_(update, alpha=-lr)``):
``param * decay`` rounded, then ``fma(update, -lr, .)``. ``lr`` is the adjusted
learning rate, ``decay`` = ``1 - lr * weight_decay`` with the unadjusted one
(the caller's, as torch computes them). Each buffer argument is one array or a
list of arrays (one native call; they share ``lr`` and ``decay``).""",
        c_notes="""decay is 1 - lr * weight_decay (unadjusted lr) and lr the adjusted learning
rate, both from the caller; param * decay is rounded, then fma(update, -lr, .)
(torch's mul_ then add_)."""),
)

KERNEL: dict[str, Kernel] = {k.name: k for k in KERNELS}


# -- the optimizer classes ----------------------------------------------------

#: torch.optim flags optcore accepts: ``foreach`` and ``fused`` have no effect
#: (every step is one fused multi-tensor call); ``capturable=True`` and
#: ``differentiable=True`` cannot apply and raise.
TORCH_FLAGS = ("foreach", "capturable", "differentiable", "fused")


@dataclass(frozen=True)
class OptimizerSpec:
    """An optimizer class of optcore.optim and optcore.torch.

    ``options``: the param-group options under torch.optim's names (a pair
    option of PAIRS, e.g. ``betas``, is two kernel arguments, ``beta1`` and
    ``beta2``); the torch-layer
    constructors pass them on in torch's own ``defaults`` order.
    ``flags``: the torch.optim flags its constructor takes. ``fixed``: kernel
    arguments the class forces. ``scalars``: per-parameter scalar state and
    its initial value (``step`` counts updates; a string names the group
    option it starts at, ASGD's ``eta`` starts at ``lr``). ``eager``: state is created
    at construction (torch's Adagrad). ``extra``: options the kernel does not
    take, with their checks (e.g. Adagrad's ``initial_accumulator_value``).
    ``scalar_options``: options that only set the scalar state (ASGD's
    ``lr``, ``alpha``, ``t0``): handed to the class's scalar-state rule with
    the kernel's options, never to the kernel."""

    name: str
    kernel: str
    options: tuple[str, ...]
    flags: tuple[str, ...] = ()
    fixed: Mapping[str, Any] = field(default_factory=dict)
    scalars: Mapping[str, float | str] = field(default_factory=lambda: {"step": 0})
    eager: bool = False
    in_torch: bool = True
    extra: tuple[Hyper, ...] = ()
    scalar_options: tuple[str, ...] = ()

    @property
    def spec(self) -> Kernel:
        return KERNEL[self.kernel]


OPTIMIZERS: tuple[OptimizerSpec, ...] = (
    OptimizerSpec("SGD", "sgd_step",
                  ("lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize"),
                  ("foreach", "differentiable", "fused"), scalars={}),
    OptimizerSpec("Adam", "adam_step",
                  ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize",
                   "decoupled_weight_decay"), TORCH_FLAGS),
    OptimizerSpec("AdamW", "adam_step",
                  ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize"),
                  TORCH_FLAGS, fixed={"decoupled_weight_decay": True}),
    OptimizerSpec("RMSprop", "rmsprop_step",
                  ("lr", "alpha", "eps", "weight_decay", "momentum", "centered",
                   "maximize"), ("capturable", "foreach", "differentiable")),
    OptimizerSpec("Adagrad", "adagrad_step",
                  ("lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps",
                   "maximize"), ("foreach", "differentiable", "fused"), eager=True,
                  extra=(Hyper("initial_accumulator_value", "double", 0.0, "nonneg",
                               "initial_accumulator_value value"),)),
    OptimizerSpec("Adadelta", "adadelta_step",
                  ("lr", "rho", "eps", "weight_decay", "maximize"),
                  ("foreach", "capturable", "differentiable")),
    OptimizerSpec("Adamax", "adamax_step",
                  ("lr", "betas", "eps", "weight_decay", "maximize"),
                  ("foreach", "differentiable", "capturable")),
    OptimizerSpec("NAdam", "nadam_step",
                  ("lr", "betas", "eps", "weight_decay", "momentum_decay",
                   "decoupled_weight_decay", "maximize"),
                  ("foreach", "capturable", "differentiable"),
                  scalars={"step": 0, "mu_product": 1.0}),
    OptimizerSpec("RAdam", "radam_step",
                  ("lr", "betas", "eps", "weight_decay", "decoupled_weight_decay",
                   "maximize"), ("foreach", "capturable", "differentiable")),
    OptimizerSpec("Rprop", "rprop_step", ("lr", "etas", "step_sizes", "maximize"),
                  ("foreach", "differentiable", "capturable"),
                  extra=(_lr(1e-2),)),
    OptimizerSpec("ASGD", "asgd_step",
                  ("lr", "lambd", "alpha", "t0", "weight_decay", "maximize"),
                  ("foreach", "differentiable", "capturable"),
                  scalars={"step": 0, "eta": "lr", "mu": 1.0},
                  extra=(_lr(1e-2), Hyper("alpha", "double", 0.75, what="alpha value"),
                         Hyper("t0", "double", 1e6, what="t0 value")),
                  scalar_options=("lr", "alpha", "t0")),
    OptimizerSpec("Lion", "lion_step", ("lr", "betas", "weight_decay", "maximize"),
                  ("foreach", "capturable", "differentiable"), in_torch=False),
    OptimizerSpec("LAMB", "lamb_step", ("lr", "betas", "eps", "weight_decay", "maximize"),
                  ("foreach", "capturable", "differentiable"), in_torch=False),
)

OPTIMIZER: dict[str, OptimizerSpec] = {o.name: o for o in OPTIMIZERS}


def kernel_options(opt: OptimizerSpec, group: Mapping[str, Any]) -> dict[str, Any]:
    """The kernel's keyword arguments from a param group's options (a pair
    option such as ``betas`` split into its two arguments, ``beta1``/``beta2``;
    ``fixed`` applied; options the kernel does not take, e.g.
    ``initial_accumulator_value``, left out, except the ``scalar_options``)."""
    spec = opt.spec
    names = {h.name for h in spec.hypers if h.python and h.name != "step"}
    names.update(opt.scalar_options)
    out: dict[str, Any] = {}
    for key in opt.options:
        pair = PAIRS.get(key)
        if pair is not None:
            out[pair.names[0]], out[pair.names[1]] = group[key]
        elif key in names:
            out[key] = group[key]
    out.update(opt.fixed)
    return out
