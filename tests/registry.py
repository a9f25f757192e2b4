"""The test suite's registry: one entry per public kernel, the only place the
tests learn what a kernel takes.

An entry says how to call the kernel (positional and keyword buffers), each
buffer's role (written / read) and when it is needed, the hyperparameters with
hypothesis strategies of valid values and the float ones also fuzzed with wild
values, which values torch.optim rejects, the option grid the reference tests
cover completely, one random-option sampler (`draw_options`), the reference twin
(`optcore.reference`) and the torch.optim twin (class, state keys, factory).

Written from the contract (docs/contract.md) and torch.optim's documentation,
not from the library: it must never import ``optcore._spec`` (a spec must not
grade itself); tests/test_registry.py checks the two agree.

Import as `from registry import ...` (tests/ is on pytest's pythonpath).
"""

import itertools
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from hypothesis import strategies as st

import optcore
import optcore.reference as reference
from support import random_array

# How a call uses a buffer (mirrors optcore.kernels._buffers' roles).
WRITE = "write"        # updated in place: C-contiguous, writable, owns its bytes
READ = "read"          # only read: any layout, read-only fine, may alias other reads


@dataclass(frozen=True)
class Buf:
    name: str
    role: str
    keyword: bool = False                       # passed as name=... rather than positionally
    needed: Callable[[dict], bool] = lambda hp: True   # with these options (defaults if absent)
    positive: bool = False                      # realistic values are > 0 (squares and sums)
    output: bool = False                        # an optional `out=`: may be None (allocated)


@dataclass(frozen=True, repr=False)
class Entry:
    name: str                                   # optcore.<name>
    buffers: tuple
    hyper: dict                                 # name -> strategy of valid, typical values
    wild: frozenset = frozenset()               # float hyperparameters also fuzzed with wild values
    invalid: Callable[[dict], set] = lambda hp: set()   # names of hyperparameters torch rejects
    multi: bool = True                          # accepts lists of arrays (multi-tensor)
    exact: bool = True                          # bitwise equal to the reference (else: a
                                                # norm is summed in another order: ulps)
    returns: str = "none"                       # "none" | "float" | "array" | "loss_grad"
    reduction: bool = False                     # takes reduction=
    torch_class: str = None                     # the torch.optim twin: torch.optim.<torch_class>
    torch_keys: dict = field(default_factory=dict)  # our state name -> torch's state key
    grid: dict = None                           # option -> values; every combination is tested
    options: tuple = None                       # explicit option sets (instead of the grid)
    first_step: int = 1                         # multi-step tests start here
    scalar_state: str = None                    # NAdam's mu_product: passed in, returned

    def __repr__(self):
        return self.name

    def __str__(self):
        return self.short

    @property
    def short(self):
        """The optimizer's name without ``_step`` ("adam")."""
        return self.name[:-5] if self.name.endswith("_step") else self.name

    @property
    def fast(self):
        return getattr(optcore, self.name)

    @property
    def ref(self):
        return getattr(reference, self.name)

    @property
    def states(self):
        """State buffer arguments, in call order."""
        return tuple(b.name for b in self.buffers if b.role == WRITE and b.name != "param"
                     and not b.output and self.name.endswith("_step"))

    @property
    def positive_states(self):
        return tuple(s for s in self.states if self.buf(s).positive)

    nonnegative = positive_states

    def buf(self, name):
        return next(b for b in self.buffers if b.name == name)

    def call(self, fn, bufs, hp):
        """Call ``fn`` (fast or reference) with buffers ``bufs`` (name -> obj;
        a missing one is passed as None)."""
        args = [bufs.get(b.name) for b in self.buffers if not b.keyword]
        kwargs = {b.name: bufs.get(b.name) for b in self.buffers if b.keyword}
        kwargs.update(hp)
        return fn(*args, **kwargs)

    def run(self, fast, bufs, step, opts):
        """One step of the kernel (``fast``) or its reference twin on ``bufs``."""
        return self.call(self.fast if fast else self.ref, bufs, dict(opts, step=step))

    def used(self, hp):
        """Buffers the call validates and uses with these hyperparameters."""
        return [b for b in self.buffers if b.needed(hp)]

    def needed_states(self, opts):
        """State buffers these options use (the others may be None)."""
        return [s for s in self.states if self.buf(s).needed(opts)]

    required = needed_states

    def torch_key(self, state):
        return self.torch_keys.get(state, state)

    def torch_optimizer(self, torch, params, hp):
        """The torch.optim twin (single-tensor ``foreach=False`` path) over
        ``params`` with the kernel's hyperparameters ``hp``."""
        opts = {k: v for k, v in hp.items() if k not in ("step", self.scalar_state)}
        return getattr(torch.optim, self.torch_class)(params, foreach=False,
                                                      **torch_options(opts))

    def combos(self):
        """Every option set the reference tests cover."""
        if self.options is not None:
            return [dict(o) for o in self.options]
        keys = list(self.grid or {})
        return [dict(zip(keys, vals)) for vals in itertools.product(*self.grid.values())]


# ---- hyperparameter values -------------------------------------------------

NAN, INF = math.nan, math.inf
# Values a careless caller or a broken schedule produces: every one is either
# accepted (and must then match the reference) or rejected with a named error.
WILD = st.sampled_from([NAN, INF, -INF, -1.0, -1e-300, 1e300, 5e-324, 0.0, -0.0, 1.0, 2.0])
STEPS = st.one_of(st.integers(1, 5), st.integers(1, 5), st.integers(-3, 0),
                  st.integers(6, 2**63 - 1))


def lr_ok(x):
    return x >= 0                      # False for NaN


def beta_ok(x):
    return 0 <= x < 1


def _common_invalid(hp, betas=("beta1", "beta2")):
    bad = set()
    if "step" in hp and hp["step"] < 1:
        bad.add("step")
    if "lr" in hp and not lr_ok(hp["lr"]):
        bad.add("lr")
    for name in ("eps", "weight_decay", "momentum", "lr_decay", "momentum_decay"):
        if name in hp and not hp[name] >= 0:
            bad.add(name)
    for name in betas:
        if name in hp and not beta_ok(hp[name]):
            bad.add(name)
    return bad


def _family_invalid(hp):
    bad = _common_invalid(hp)
    if "alpha" in hp and not hp["alpha"] >= 0:
        bad.add("alpha")
    if "rho" in hp and not 0 <= hp["rho"] <= 1:
        bad.add("rho")
    if "norm_type" in hp and not hp["norm_type"] > 0:
        bad.add("norm_type")
    return bad


def _rprop_invalid(hp):
    bad = _common_invalid(hp)
    if "etaminus" in hp and not 0 < hp["etaminus"] < 1:
        bad.add("etaminus")
    if "etaplus" in hp and not hp["etaplus"] > 1:
        bad.add("etaplus")
    return bad


def _sgd_invalid(hp):
    bad = _common_invalid(hp)
    if math.isnan(hp["dampening"]):
        bad.add("dampening")
    if hp["nesterov"] and (not hp["momentum"] > 0 or hp["dampening"] != 0):
        bad |= {"nesterov", "momentum", "dampening"}
    return bad


unit = st.floats(0.0, 0.999)
small_lr = st.floats(0.0, 0.5)
small_pos = st.floats(0.0, 0.1)

# ---- the option sets the reference tests cover completely ------------------

def _grid(**axes):
    keys = list(axes)
    for values in itertools.product(*axes.values()):
        yield dict(zip(keys, values))


def sgd_options():
    """Every valid combination of torch.optim.SGD's options."""
    out = []
    for o in _grid(momentum=(0.0, 0.9), dampening=(0.0, 0.3), nesterov=(False, True),
                   weight_decay=(0.0, 0.05), maximize=(False, True)):
        if o["nesterov"] and (o["momentum"] == 0.0 or o["dampening"] != 0.0):
            continue
        out.append(dict(lr=0.1, **o))
    return tuple(out)


def adam_options(decoupled_axis=True):
    """Every combination of Adam's switches; beta1 = 0.9 and 0.3 take the two
    branches of torch.lerp (weight 1 - beta1 below / at or above 0.5)."""
    axes = dict(weight_decay=(0.0, 0.05), amsgrad=(False, True),
                maximize=(False, True), beta1=(0.9, 0.3))
    if decoupled_axis:
        axes["decoupled_weight_decay"] = (False, True)
    return tuple(dict(lr=0.01, beta2=0.99, eps=1e-8, **o) for o in _grid(**axes))


LION_OPTIONS = (
    dict(),
    dict(lr=0.05, beta1=0.8, beta2=0.95, weight_decay=0.1),
    dict(lr=1e-3, weight_decay=0.5, maximize=True),
    dict(lr=0.01, beta1=0.0, beta2=0.0),
)
RPROP_OPTIONS = (
    dict(),
    dict(etaminus=0.3, etaplus=1.5),
    dict(step_size_min=1e-3, step_size_max=0.02, maximize=True),
    dict(etaminus=0.9, etaplus=3.0, step_size_min=0.0, step_size_max=math.inf),
    dict(step_size_min=0.5, step_size_max=0.1),         # lo > hi: torch's clamp gives hi
)
# ASGD's eta and mu are its scalar state, passed in (mu == 1 copies the parameter).
ASGD_OPTIONS = (
    dict(eta=0.01, mu=1.0),
    dict(eta=0.05, mu=0.5, lambd=0.01, weight_decay=0.1),
    dict(eta=0.01, mu=1.0, weight_decay=0.1, maximize=True),
    dict(eta=0.0, mu=0.25, lambd=0.0, maximize=True),
)
LAMB_OPTIONS = (
    dict(),
    dict(lr=0.05, beta1=0.8, beta2=0.95, eps=1e-3, weight_decay=0.1),
    dict(lr=1e-2, weight_decay=0.01, maximize=True),
    dict(lr=0.01, beta1=0.0, beta2=0.0, eps=0.0),
)


SGD = Entry(
    name="sgd_step",
    buffers=(Buf("param", WRITE), Buf("grad", READ),
             Buf("momentum_buffer", WRITE, needed=lambda hp: hp.get("momentum", 0.0) != 0)),
    hyper=dict(step=STEPS, lr=small_lr, momentum=st.sampled_from([0.0, 0.0, 0.5, 0.9]),
               dampening=st.sampled_from([0.0, 0.0, 0.1]), nesterov=st.booleans(),
               weight_decay=st.sampled_from([0.0, 0.01]), maximize=st.booleans()),
    wild=frozenset({"lr", "momentum", "dampening", "weight_decay"}),
    invalid=_sgd_invalid,
    torch_class="SGD", options=sgd_options(),
)

_ADAM_HYPER = dict(step=STEPS, lr=small_lr, beta1=unit, beta2=unit,
                   eps=st.sampled_from([1e-8, 1e-3, 0.0]),
                   weight_decay=st.sampled_from([0.0, 0.01]),
                   amsgrad=st.booleans(), maximize=st.booleans())
_ADAM_BUFS = (Buf("param", WRITE), Buf("grad", READ), Buf("exp_avg", WRITE),
              Buf("exp_avg_sq", WRITE, positive=True),
              Buf("max_exp_avg_sq", WRITE, keyword=True, positive=True,
                  needed=lambda hp: hp.get("amsgrad", False)))

ADAM = Entry(
    name="adam_step",
    buffers=_ADAM_BUFS,
    torch_class="Adam", options=adam_options(),
    hyper=dict(_ADAM_HYPER, decoupled_weight_decay=st.booleans()),
    wild=frozenset({"lr", "beta1", "beta2", "eps", "weight_decay"}),
    invalid=_common_invalid,
)

ADAMW = Entry(
    name="adamw_step",
    buffers=_ADAM_BUFS,
    torch_class="AdamW", options=adam_options(False),
    hyper=_ADAM_HYPER,
    wild=frozenset({"lr", "beta1", "beta2", "eps", "weight_decay"}),
    invalid=_common_invalid,
)

_BETAS = dict(beta1=unit, beta2=unit)
_WD = st.sampled_from([0.0, 0.01])
_MOMENT_WILD = frozenset({"lr", "beta1", "beta2", "eps", "weight_decay"})


def _state(name, **kw):
    return Buf(name, WRITE, **kw)


RMSPROP = Entry(
    name="rmsprop_step",
    torch_class="RMSprop",
    grid={"weight_decay": [0.0, 0.1], "momentum": [0.0, 0.9],
          "centered": [False, True], "maximize": [False, True]},
    buffers=(Buf("param", WRITE), Buf("grad", READ), _state("square_avg", positive=True),
             _state("momentum_buffer", needed=lambda hp: hp.get("momentum", 0.0) > 0),
             _state("grad_avg", needed=lambda hp: hp.get("centered", False))),
    hyper=dict(step=STEPS, lr=small_lr, alpha=unit, eps=st.sampled_from([1e-8, 0.1]),
               weight_decay=_WD, momentum=st.sampled_from([0.0, 0.9]),
               centered=st.booleans(), maximize=st.booleans()),
    wild=frozenset({"lr", "alpha", "eps", "weight_decay", "momentum"}),
    invalid=_family_invalid,
)
ADAGRAD = Entry(
    name="adagrad_step",
    torch_class="Adagrad", torch_keys={"state_sum": "sum"},
    grid={"lr_decay": [0.0, 0.05], "weight_decay": [0.0, 0.1], "maximize": [False, True]},
    buffers=(Buf("param", WRITE), Buf("grad", READ), _state("state_sum", positive=True)),
    hyper=dict(step=STEPS, lr=small_lr, lr_decay=st.sampled_from([0.0, 0.01]),
               weight_decay=_WD, eps=st.sampled_from([1e-10, 0.1]), maximize=st.booleans()),
    wild=frozenset({"lr", "lr_decay", "weight_decay", "eps"}),
    invalid=_family_invalid,
)
ADADELTA = Entry(
    name="adadelta_step",
    torch_class="Adadelta",
    grid={"weight_decay": [0.0, 0.1], "maximize": [False, True]},
    buffers=(Buf("param", WRITE), Buf("grad", READ), _state("square_avg", positive=True),
             _state("acc_delta", positive=True)),
    hyper=dict(step=STEPS, lr=st.floats(0.0, 2.0), rho=st.floats(0.0, 1.0),
               eps=st.sampled_from([1e-6, 0.1]), weight_decay=_WD, maximize=st.booleans()),
    wild=frozenset({"lr", "rho", "eps", "weight_decay"}),
    invalid=_family_invalid,
)
ADAMAX = Entry(
    name="adamax_step",
    torch_class="Adamax",
    grid={"weight_decay": [0.0, 0.1], "maximize": [False, True]},
    buffers=(Buf("param", WRITE), Buf("grad", READ), _state("exp_avg"),
             _state("exp_inf", positive=True)),
    hyper=dict(step=STEPS, lr=small_lr, **_BETAS, eps=st.sampled_from([1e-8, 0.1]),
               weight_decay=_WD, maximize=st.booleans()),
    wild=_MOMENT_WILD,
    invalid=_family_invalid,
)
_MOMENTS = (Buf("param", WRITE), Buf("grad", READ), _state("exp_avg"),
            _state("exp_avg_sq", positive=True))
NADAM = Entry(
    name="nadam_step",
    torch_class="NAdam", scalar_state="mu_product",
    grid={"weight_decay": [0.0, 0.1], "decoupled_weight_decay": [False, True],
          "maximize": [False, True]},
    buffers=_MOMENTS,
    hyper=dict(step=STEPS, mu_product=st.floats(0.0, 1.0), lr=small_lr, **_BETAS,
               eps=st.sampled_from([1e-8, 0.1]), weight_decay=_WD,
               momentum_decay=st.sampled_from([4e-3, 0.0, 0.5]),
               decoupled_weight_decay=st.booleans(), maximize=st.booleans()),
    wild=_MOMENT_WILD | {"momentum_decay", "mu_product"},
    invalid=_family_invalid,
    returns="float",
)
RADAM = Entry(
    name="radam_step",
    torch_class="RAdam",
    grid={"weight_decay": [0.0, 0.1], "decoupled_weight_decay": [False, True],
          "maximize": [False, True]},
    # Steps 4..7 cross RAdam's rectification switch (rho_t > 5 from step 6 with
    # the default betas).
    first_step=4,
    buffers=_MOMENTS,
    hyper=dict(step=STEPS, lr=small_lr, **_BETAS, eps=st.sampled_from([1e-8, 0.1]),
               weight_decay=_WD, decoupled_weight_decay=st.booleans(),
               maximize=st.booleans()),
    wild=_MOMENT_WILD,
    invalid=_family_invalid,
)
LION = Entry(
    name="lion_step", options=LION_OPTIONS,
    buffers=(Buf("param", WRITE), Buf("grad", READ), _state("exp_avg")),
    hyper=dict(step=STEPS, lr=small_lr, **_BETAS, weight_decay=_WD, maximize=st.booleans()),
    wild=frozenset({"lr", "beta1", "beta2", "weight_decay"}),
    invalid=_family_invalid,
)
RPROP = Entry(
    name="rprop_step", options=RPROP_OPTIONS,
    buffers=(Buf("param", WRITE), Buf("grad", READ), _state("prev"),
             _state("step_size", positive=True)),
    hyper=dict(step=STEPS, etaminus=st.floats(0.01, 0.99), etaplus=st.floats(1.01, 3.0),
               step_size_min=st.sampled_from([1e-6, 0.0, 1e-3]),
               step_size_max=st.sampled_from([50.0, 0.05, math.inf]), maximize=st.booleans()),
    wild=frozenset({"etaminus", "etaplus", "step_size_min", "step_size_max"}),
    invalid=_rprop_invalid,
)
ASGD = Entry(
    name="asgd_step", options=ASGD_OPTIONS,
    buffers=(Buf("param", WRITE), Buf("grad", READ), _state("ax")),
    hyper=dict(step=STEPS, eta=small_lr, mu=st.sampled_from([1.0, 0.5]) | st.floats(0.0, 1.0),
               lambd=st.sampled_from([1e-4, 0.0, 0.1]), weight_decay=_WD,
               maximize=st.booleans()),
    wild=frozenset({"eta", "mu", "lambd", "weight_decay"}),
    invalid=_family_invalid,
)
LAMB = Entry(
    name="lamb_step", options=LAMB_OPTIONS,
    buffers=_MOMENTS,
    hyper=dict(step=STEPS, lr=small_lr, **_BETAS, eps=st.sampled_from([1e-6, 0.1]),
               weight_decay=_WD, maximize=st.booleans()),
    wild=_MOMENT_WILD,
    invalid=_family_invalid,
    exact=False,
)

_NORMS = st.sampled_from([2.0, 1.0, 3.5, math.inf, 0.5])
GLOBAL_NORM = Entry(
    name="global_norm", buffers=(Buf("arrays", READ),), hyper=dict(norm_type=_NORMS),
    wild=frozenset({"norm_type"}), invalid=_family_invalid, returns="float", exact=False)
CLIP_GRAD_NORM = Entry(
    name="clip_grad_norm_", buffers=(Buf("grads", WRITE),),
    hyper=dict(max_norm=st.floats(0.0, 10.0), norm_type=_NORMS),
    wild=frozenset({"max_norm", "norm_type"}), invalid=_family_invalid, returns="float",
    exact=False)
CLIP_GRAD_VALUE = Entry(
    name="clip_grad_value_", buffers=(Buf("grads", WRITE),),
    hyper=dict(clip_value=st.floats(0.0, 3.0)), wild=frozenset({"clip_value"}))
ALL_FINITE = Entry(
    name="all_finite", buffers=(Buf("arrays", READ),), hyper={}, returns="float")
UNSCALE = Entry(
    name="unscale_", buffers=(Buf("grads", WRITE),),
    hyper=dict(inv_scale=st.sampled_from([1.0, 0.5, 2.0**-16, 3.0])),
    wild=frozenset({"inv_scale"}), returns="float")

_REDUCTIONS = st.sampled_from(["mean", "sum", "none"])

MSE_LOSS = Entry(
    name="mse_loss",
    buffers=(Buf("pred", READ), Buf("target", READ)),
    hyper=dict(reduction=_REDUCTIONS),
    invalid=lambda hp: set() if hp["reduction"] in ("mean", "sum", "none") else {"reduction"},
    multi=False, returns="loss", reduction=True,
)
MSE_GRAD = Entry(
    name="mse_grad",
    buffers=(Buf("pred", READ), Buf("target", READ),
             Buf("out", WRITE, keyword=True, output=True)),
    hyper=dict(reduction=_REDUCTIONS),
    invalid=MSE_LOSS.invalid,
    multi=False, returns="array", reduction=True,
)
MSE_LOSS_GRAD = Entry(
    name="mse_loss_grad",
    buffers=MSE_GRAD.buffers,
    hyper=dict(reduction=_REDUCTIONS),
    invalid=MSE_LOSS.invalid,
    multi=False, returns="loss_grad", reduction=True,
)


# Elementwise/reduction kernels over same-sized buffers, fuzzed through the
# generic buffer machinery. linear_mse_grad (matrix shapes) has its own test.
KERNELS = [SGD, ADAM, ADAMW, RMSPROP, ADAGRAD, ADADELTA, ADAMAX, NADAM, RADAM, RPROP, ASGD,
           LION, LAMB,
           GLOBAL_NORM, CLIP_GRAD_NORM, CLIP_GRAD_VALUE, ALL_FINITE, UNSCALE,
           MSE_LOSS, MSE_GRAD, MSE_LOSS_GRAD]
OPTIMIZER_STEPS = [e for e in KERNELS if e.name.endswith("_step")]
BY_NAME = {e.short: e for e in KERNELS}
# Groups whose tests share one way of building options and state: SGD and the
# Adam pair (explicit option lists, optional state buffers); the six torch
# optimizers with a full option grid; Lion and LAMB (no torch twin).
SGD_ADAM = [SGD, ADAM, ADAMW]
FAMILIES = SGD_ADAM
OPTIMIZERS = [RMSPROP, ADAGRAD, ADADELTA, ADAMAX, NADAM, RADAM]
TORCH_TWINS = [e for e in OPTIMIZER_STEPS if e.torch_class is not None]
LOSSES = [e for e in KERNELS if e.reduction]


# Every stateful optimizer class, with options that use all of its state.
OPTIMIZER_CLASSES = [("SGD", dict(lr=0.01, momentum=0.9, nesterov=True)),
           ("Adam", dict(lr=1e-3, amsgrad=True)),
           ("AdamW", dict(lr=1e-3)),
           ("RMSprop", dict(lr=1e-3, momentum=0.5, centered=True)),
           ("Adagrad", dict(lr=0.01, lr_decay=0.01)),
           ("Adadelta", dict(lr=1.0)),
           ("Adamax", dict(lr=2e-3)),
           ("NAdam", dict(lr=2e-3)),
           ("RAdam", dict(lr=1e-3)),
           ("Rprop", dict(lr=1e-2)),
           ("ASGD", dict(lr=1e-2, t0=2)),
           ("Lion", dict(lr=1e-4, weight_decay=0.1)),
           ("LAMB", dict(lr=1e-3, weight_decay=0.01))]


def by_name(name):
    for e in KERNELS:
        if e.name == name:
            return e
    raise KeyError(name)


def typical_hyper(entry, **overrides):
    """A valid, non-trivial set of hyperparameters (every option exercised by
    the callers' overrides)."""
    base = dict(step=3, lr=0.01, momentum=0.9, dampening=0.1, nesterov=False,
                weight_decay=0.01, maximize=False, beta1=0.9, beta2=0.999, eps=1e-8,
                amsgrad=True, decoupled_weight_decay=False, reduction="mean",
                alpha=0.99, centered=True, lr_decay=0.01, rho=0.9, momentum_decay=4e-3,
                mu_product=0.95, norm_type=2.0, max_norm=0.5, clip_value=0.5,
                inv_scale=0.5, etaminus=0.5, etaplus=1.2, step_size_min=1e-6,
                step_size_max=50.0, eta=0.01, mu=0.5, lambd=1e-4)
    hp = {k: base[k] for k in entry.hyper}
    hp.update(overrides)
    return hp


def make_buffers(entry, hp, rng, sizes, dtype, as_list=None):
    """Fresh, never-zero buffers for ``entry`` (a list per argument when
    ``as_list``, one tensor per size), as a dict name -> array or list."""
    as_list = entry.multi and len(sizes) != 1 if as_list is None else as_list
    bufs = {}
    for b in entry.buffers:
        if not b.needed(hp):
            bufs[b.name] = None
            continue
        arrays = []
        for n in sizes:
            if b.positive:
                a = rng.uniform(0.1, 2.0, n)
            else:
                a = rng.standard_normal(n)
                a[a == 0] = 0.5
            arrays.append(a.astype(dtype))
        bufs[b.name] = arrays if as_list else arrays[0]
    return bufs


def hyper_variants(entry):
    """Valid hyperparameter sets that between them switch every option of
    ``entry`` on and off (each boolean toggled, every reduction, SGD without
    momentum and with Nesterov)."""
    base = typical_hyper(entry)
    candidates = [base]
    for k, v in base.items():
        if isinstance(v, bool):
            candidates.append({**base, k: not v})
    if "reduction" in base:
        candidates += [{**base, "reduction": r} for r in ("sum", "none")]
    if "momentum" in base:
        candidates.append({**base, "momentum": 0.0})
    if "nesterov" in base:
        candidates.append({**base, "nesterov": True, "dampening": 0.0})
    if "weight_decay" in base:
        candidates.append({**base, "weight_decay": 0.0})
    if "norm_type" in base:
        candidates += [{**base, "norm_type": p} for p in (1.0, math.inf, 3.5)]
    return [hp for hp in candidates if not entry.invalid(hp)]


def run_steps(entry, bufs, hp, steps):
    """Call ``entry`` ``steps`` times (step = 1, 2, ...) on ``bufs``; return the
    results of the calls."""
    out = []
    h = dict(hp)
    for s in range(1, steps + 1):
        if "step" in h:
            h["step"] = s
        out.append(entry.call(entry.fast, bufs, h))
        if "mu_product" in h:
            h["mu_product"] = out[-1]              # NAdam's scalar state carries over
    return out


# ---- option sets, ids ------------------------------------------------------

def all_on(entry):
    """The grid combination with every option at its last (non-default) value."""
    return {k: v[-1] for k, v in entry.grid.items()}


def combo_id(opts):
    return ",".join(f"{k}={v}" for k, v in opts.items())


def options_id(opts):
    short = {"momentum": "mom", "dampening": "damp", "nesterov": "nest",
             "weight_decay": "wd", "maximize": "max", "amsgrad": "ams",
             "decoupled_weight_decay": "dec", "beta1": "b1"}
    parts = []
    for k, v in opts.items():
        if k not in short:
            continue
        if isinstance(v, bool):
            if v:
                parts.append(short[k])
        elif k == "beta1" or v != 0.0:
            parts.append(f"{short[k]}{v:g}")
    return "-".join(parts) or "plain"


def family_cases(entries=SGD_ADAM):
    """(entry, options) pairs covering every option set, as pytest params."""
    import pytest
    return [pytest.param(e, opts, id=f"{e.short}-{options_id(opts)}")
            for e in entries for opts in e.combos()]


# ---- valid-value strategies over the option space (hypothesis) --------------

_unit_open = st.floats(0.0, 0.999, allow_nan=False)


@st.composite
def sgd_opts(draw):
    momentum = draw(st.sampled_from([0.0, 0.9]) | _unit_open)
    nesterov = momentum > 0 and draw(st.booleans())
    dampening = 0.0 if nesterov else draw(st.sampled_from([0.0]) | st.floats(0.0, 1.0))
    return dict(lr=draw(st.floats(0.0, 1.0)), momentum=momentum, dampening=dampening,
                nesterov=nesterov, weight_decay=draw(st.sampled_from([0.0]) | _unit_open),
                maximize=draw(st.booleans()))


@st.composite
def adam_opts(draw, decoupled):
    opts = dict(lr=draw(st.floats(0.0, 1.0)), beta1=draw(_unit_open), beta2=draw(_unit_open),
                eps=draw(st.sampled_from([1e-8, 0.0]) | st.floats(0.0, 1e-2)),
                weight_decay=draw(st.sampled_from([0.0]) | st.floats(0.0, 0.5)),
                amsgrad=draw(st.booleans()), maximize=draw(st.booleans()))
    if decoupled:
        opts["decoupled_weight_decay"] = draw(st.booleans())
    return opts


_unit_closed = st.floats(0.0, 1.0)
# Wide valid values for the six grid optimizers (each takes the names in OPTION_NAMES).
OPTION_VALUES = {
    "lr": st.floats(0.0, 2.0),
    "eps": st.sampled_from([0.0, 1e-10, 1e-8, 1e-6, 1e-3, 0.5]),
    "weight_decay": st.one_of(st.just(0.0), st.floats(0.0, 1.0)),
    "maximize": st.booleans(),
    "alpha": _unit_closed,
    "momentum": st.one_of(st.just(0.0), st.floats(0.0, 0.99)),
    "centered": st.booleans(),
    "lr_decay": st.one_of(st.just(0.0), st.floats(0.0, 1.0)),
    "rho": _unit_closed,
    "beta1": st.floats(0.0, 0.999),
    "beta2": st.floats(0.0, 0.9999),
    "momentum_decay": st.floats(0.0, 0.1),
    "decoupled_weight_decay": st.booleans(),
}
OPTION_NAMES = {
    "rmsprop": ["lr", "alpha", "eps", "weight_decay", "momentum", "centered", "maximize"],
    "adagrad": ["lr", "lr_decay", "weight_decay", "eps", "maximize"],
    "adadelta": ["lr", "rho", "eps", "weight_decay", "maximize"],
    "adamax": ["lr", "beta1", "beta2", "eps", "weight_decay", "maximize"],
    "nadam": ["lr", "beta1", "beta2", "eps", "weight_decay", "momentum_decay",
              "decoupled_weight_decay", "maximize"],
    "radam": ["lr", "beta1", "beta2", "eps", "weight_decay", "decoupled_weight_decay",
              "maximize"],
}


# ---- the random-option sampler (NumPy generator; valid for torch.optim too) ----

def draw_options(entry, rng, lerp_branch=None):
    """Random options for ``entry`` around each optimizer's useful range, every
    flag random. ``lerp_branch`` ("low"/"high") pins Adam's beta1 to one side
    of 0.5 (torch.lerp's weight 1 - beta1 takes two code paths)."""
    coin = lambda: bool(rng.integers(2))
    name = entry.short
    if name == "sgd":
        momentum = float(rng.uniform(0.1, 0.99)) if coin() else 0.0
        nesterov = momentum > 0 and coin()
        dampening = 0.0 if (nesterov or coin()) else float(rng.uniform(0.0, 0.9))
        return dict(lr=float(rng.uniform(1e-3, 0.1)), momentum=momentum,
                    dampening=dampening, nesterov=nesterov,
                    weight_decay=float(rng.uniform(0.0, 0.1)) if coin() else 0.0,
                    maximize=coin())
    if name in ("adam", "adamw"):
        if lerp_branch is None:
            lerp_branch = "low" if coin() else "high"
        beta1 = float(rng.uniform(0.5, 0.99) if lerp_branch == "low"
                      else rng.uniform(0.0, 0.5))
        opts = dict(lr=float(rng.uniform(1e-4, 0.05)), beta1=beta1,
                    beta2=float(rng.uniform(0.9, 0.9999)),
                    eps=1e-8 if coin() else float(10 ** rng.uniform(-10, -6)),
                    weight_decay=float(rng.uniform(0.0, 0.1)) if coin() else 0.0,
                    amsgrad=coin(), maximize=coin())
        if name == "adam":
            opts["decoupled_weight_decay"] = coin()
        return opts
    if name == "rprop":
        return dict(etaminus=float(rng.uniform(0.2, 0.8)), etaplus=float(rng.uniform(1.1, 2.0)),
                    step_size_min=float(rng.choice([1e-6, 1e-3])),
                    step_size_max=float(rng.choice([50.0, 0.1])), maximize=coin())
    if name == "asgd":
        return dict(eta=float(10 ** rng.uniform(-4, -1.5)), mu=float(rng.choice([1.0, 0.5])),
                    lambd=float(rng.choice([1e-4, 1e-2])),
                    weight_decay=float(rng.choice([0.0, 10 ** rng.uniform(-3, -1)])),
                    maximize=coin())
    o = {"lr": float(10 ** rng.uniform(-4, -1.5)),
         "weight_decay": float(rng.choice([0.0, 10 ** rng.uniform(-3, -1)])),
         "maximize": bool(rng.integers(2))}
    if name == "rmsprop":
        o.update(alpha=float(rng.uniform(0.8, 0.999)),
                 momentum=float(rng.choice([0.0, rng.uniform(0.5, 0.95)])),
                 centered=bool(rng.integers(2)),
                 eps=float(10 ** rng.uniform(-8, -4)))
    elif name == "adagrad":
        o.update(lr_decay=float(rng.choice([0.0, 10 ** rng.uniform(-3, -1)])),
                 eps=float(10 ** rng.uniform(-10, -6)))
    elif name == "adadelta":
        o.update(lr=float(rng.uniform(0.1, 1.0)), rho=float(rng.uniform(0.8, 0.99)),
                 eps=float(10 ** rng.uniform(-7, -5)))
    else:
        o.update(beta1=float(rng.uniform(0.5, 0.95)),
                 beta2=float(rng.uniform(0.9, 0.9999)))
        if name != "lion":
            o["eps"] = float(10 ** rng.uniform(-9, -6))
        if name in ("nadam", "radam"):
            o["decoupled_weight_decay"] = bool(rng.integers(2))
        if name == "nadam":
            o["momentum_decay"] = float(10 ** rng.uniform(-3, -2))
    return o


def torch_options(opts):
    """Our option names as torch.optim's (beta1, beta2 -> betas)."""
    t = dict(opts)
    if "beta1" in t or "beta2" in t:
        t["betas"] = (t.pop("beta1", 0.9), t.pop("beta2", 0.999))   # torch's defaults
    return t


# ---- buffers -----------------------------------------------------------------

def random_states(entry, rng, n, dtype, opts=None):
    """Valid random state for `n` elements (never zeros): non-negative where the
    state holds squares; RMSprop's grad_avg small enough that the centered
    variance square_avg - grad_avg**2 stays positive."""
    state = {}
    for s in entry.states:
        if s in entry.nonnegative:
            state[s] = random_array(rng, n, dtype, positive=True)
        else:
            state[s] = random_array(rng, n, dtype, scale=0.5)
    if "grad_avg" in state:
        bound = 0.5 * np.sqrt(state["square_avg"].astype(np.float64))
        state["grad_avg"] = (rng.uniform(-1.0, 1.0, n) * bound).astype(dtype)
    if opts is not None:
        need = entry.required(opts)
        state = {s: (a if s in need else None) for s, a in state.items()}
    return state


def call_with_states(fn, entry, param, grad, states, step, opts, scalar=1.0):
    """One step through `fn` (kernel or reference); returns the new scalar
    state (NAdam's mu_product), or `scalar` unchanged for the others."""
    args = [states[s] for s in entry.states]
    if entry.scalar_state:
        return fn(param, grad, *args, step=step, **{entry.scalar_state: scalar}, **opts)
    out = fn(param, grad, *args, step=step, **opts)
    assert out is None
    return scalar


def _one(rng, shape, dtype, positive=False):
    n = int(np.prod(shape))
    return random_array(rng, n, dtype, positive=positive).reshape(shape)


def shaped_buffers(rng, entry, shapes, dtype, multi=None):
    """Fresh random param, grad and every state buffer of ``entry``.

    ``shapes`` is one shape (single-tensor call) or a list of shapes
    (multi-tensor call, every argument a list). State buffers start random
    (never zero), as after earlier steps; sums of squares start positive."""
    if multi is None:
        multi = isinstance(shapes, list)
    shape_list = shapes if multi else [shapes]
    bufs = {}
    for name in ("param", "grad") + entry.states:
        pos = name in entry.positive_states
        arrays = [_one(rng, s, dtype, positive=pos) for s in shape_list]
        bufs[name] = arrays if multi else arrays[0]
    return bufs


def new_grads(rng, bufs):
    """Replace the gradient(s) with fresh random values of the same shapes."""
    g = bufs["grad"]
    if isinstance(g, list):
        bufs["grad"] = [random_array(rng, a.size, a.dtype).reshape(a.shape) for a in g]
    else:
        bufs["grad"] = random_array(rng, g.size, g.dtype).reshape(g.shape)


def copy_buffers(bufs):
    return {k: ([a.copy() for a in v] if isinstance(v, list) else
                (None if v is None else v.copy()))
            for k, v in bufs.items()}


def flat_arrays(bufs, names=None):
    """(label, array) for every array in ``bufs`` (lists expanded)."""
    out = []
    for k, v in bufs.items():
        if names is not None and k not in names:
            continue
        if isinstance(v, list):
            out += [(f"{k}[{i}]", a) for i, a in enumerate(v)]
        elif v is not None:
            out.append((k, v))
    return out


# ---- the same steps through torch.optim ------------------------------------

def zero_state(bufs):
    """State as torch.optim starts it (zeros; SGD's buffer is set at step 1)."""
    for k, v in bufs.items():
        if k in ("param", "grad") or v is None:
            continue
        for a in (v if isinstance(v, list) else [v]):
            a[...] = 0


class TorchTwin:
    """``entry``'s torch.optim class (single-tensor ``foreach=False`` path) over
    copies of the parameters of ``bufs``, stepped with the same gradients."""

    def __init__(self, torch, entry, bufs, opts):
        self.torch = torch
        self.entry = entry
        params = bufs["param"] if isinstance(bufs["param"], list) else [bufs["param"]]
        self.params = [torch.from_numpy(p.copy()) for p in params]
        self.opt = entry.torch_optimizer(torch, self.params, opts)

    def step(self, grad):
        grads = grad if isinstance(grad, list) else [grad]
        for p, g in zip(self.params, grads):
            p.grad = self.torch.from_numpy(g.copy())
        self.opt.step()

    def state(self, name):
        """A state buffer of every parameter, as NumPy arrays."""
        key = self.entry.torch_key(name)
        return [self.opt.state[p][key].numpy() for p in self.params]


def torch_trajectory(torch, entry, opts, dtype, shapes, steps, rng):
    """Run optcore and torch.optim side by side from the same start for
    ``steps`` steps with the same random gradients. Yields (step, bufs, twin)
    after each step; deviation() measures them."""
    bufs = shaped_buffers(rng, entry, shapes, dtype)
    zero_state(bufs)
    twin = TorchTwin(torch, entry, bufs, opts)
    for step in range(1, steps + 1):
        new_grads(rng, bufs)
        entry.run(True, bufs, step, opts)
        twin.step(bufs["grad"])
        yield step, bufs, twin


def deviation(mine, theirs):
    """max |mine - theirs| relative to the largest |theirs| (the scale of the
    buffer), over lists of arrays."""
    num = max((float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))
               for a, b in zip(mine, theirs) if a.size), default=0.0)
    scale = max((float(np.max(np.abs(b))) for b in theirs if b.size), default=0.0)
    return num / scale if scale else num
