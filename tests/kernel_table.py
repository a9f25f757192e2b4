"""One entry per public buffer kernel: how to call it, which buffers it writes,
which hyperparameters it takes and which values torch.optim rejects.

The reliability tests (fuzzing, determinism, memory, sanitizer smoke) are all
driven by this table, so a new public kernel is covered by adding one entry.
An entry says *what* the kernel takes; the tests decide *how* to break it.
"""

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from hypothesis import strategies as st

import optcore
import optcore.reference as reference

# How a call uses a buffer (mirrors optcore.kernels._buffers' roles).
WRITE = "write"        # updated in place: C-contiguous, writable, owns its bytes
READ = "read"          # only read: any layout, read-only fine, may alias other reads


@dataclass(frozen=True)
class Buf:
    name: str
    role: str
    keyword: bool = False                       # passed as name=... rather than positionally
    needed: Callable[[dict], bool] = lambda hp: True
    positive: bool = False                      # realistic values are > 0 (second moments)
    output: bool = False                        # an optional `out=`: may be None (allocated)


@dataclass(frozen=True, repr=False)
class Entry:
    name: str
    buffers: tuple
    hyper: dict                                 # name -> strategy of valid, typical values
    wild: frozenset = frozenset()               # float hyperparameters also fuzzed with wild values
    invalid: Callable[[dict], set] = lambda hp: set()   # names of hyperparameters torch rejects
    multi: bool = True                          # accepts lists of arrays (multi-tensor)
    returns: str = "none"                       # "none" | "float" | "array" | "loss_grad"
    reduction: bool = False                     # takes reduction=

    def __repr__(self):
        return self.name

    def fast(self):
        return getattr(optcore, self.name)

    def ref(self):
        return getattr(reference, self.name)

    def call(self, fn, bufs, hp):
        """Call ``fn`` (fast or reference) with buffers ``bufs`` (name -> obj)."""
        args = [bufs[b.name] for b in self.buffers if not b.keyword]
        kwargs = {b.name: bufs[b.name] for b in self.buffers if b.keyword}
        kwargs.update(hp)
        return fn(*args, **kwargs)

    def used(self, hp):
        """Buffers the call validates and uses with these hyperparameters."""
        return [b for b in self.buffers if b.needed(hp)]


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
    if hp["step"] < 1:
        bad.add("step")
    if not lr_ok(hp["lr"]):
        bad.add("lr")
    for name in ("eps", "weight_decay", "momentum", "lr_decay", "momentum_decay"):
        if name in hp and not hp[name] >= 0:
            bad.add(name)
    for name in betas:
        if name in hp and not beta_ok(hp[name]):
            bad.add(name)
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

SGD = Entry(
    name="sgd_step",
    buffers=(Buf("param", WRITE), Buf("grad", READ),
             Buf("momentum_buffer", WRITE, needed=lambda hp: hp["momentum"] != 0)),
    hyper=dict(step=STEPS, lr=small_lr, momentum=st.sampled_from([0.0, 0.0, 0.5, 0.9]),
               dampening=st.sampled_from([0.0, 0.0, 0.1]), nesterov=st.booleans(),
               weight_decay=st.sampled_from([0.0, 0.01]), maximize=st.booleans()),
    wild=frozenset({"lr", "momentum", "dampening", "weight_decay"}),
    invalid=_sgd_invalid,
)

_ADAM_HYPER = dict(step=STEPS, lr=small_lr, beta1=unit, beta2=unit,
                   eps=st.sampled_from([1e-8, 1e-3, 0.0]),
                   weight_decay=st.sampled_from([0.0, 0.01]),
                   amsgrad=st.booleans(), maximize=st.booleans())
_ADAM_BUFS = (Buf("param", WRITE), Buf("grad", READ), Buf("exp_avg", WRITE),
              Buf("exp_avg_sq", WRITE, positive=True),
              Buf("max_exp_avg_sq", WRITE, keyword=True, positive=True,
                  needed=lambda hp: hp["amsgrad"]))

ADAM = Entry(
    name="adam_step",
    buffers=_ADAM_BUFS,
    hyper=dict(_ADAM_HYPER, decoupled_weight_decay=st.booleans()),
    wild=frozenset({"lr", "beta1", "beta2", "eps", "weight_decay"}),
    invalid=_common_invalid,
)

ADAMW = Entry(
    name="adamw_step",
    buffers=_ADAM_BUFS,
    hyper=_ADAM_HYPER,
    wild=frozenset({"lr", "beta1", "beta2", "eps", "weight_decay"}),
    invalid=_common_invalid,
)

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

LION = Entry(
    name="lion_step",
    buffers=(Buf("param", WRITE), Buf("grad", READ), Buf("exp_avg", WRITE)),
    hyper=dict(step=STEPS, lr=small_lr, beta1=unit, beta2=unit,
               weight_decay=st.sampled_from([0.0, 0.01]), maximize=st.booleans()),
    wild=frozenset({"lr", "beta1", "beta2", "weight_decay"}),
    invalid=_common_invalid,
)

LAMB = Entry(
    name="lamb_step",
    buffers=(Buf("param", WRITE), Buf("grad", READ), Buf("exp_avg", WRITE),
             Buf("exp_avg_sq", WRITE, positive=True)),
    hyper=dict(step=STEPS, lr=small_lr, beta1=unit, beta2=unit,
               eps=st.sampled_from([1e-6, 1e-3, 0.0]),
               weight_decay=st.sampled_from([0.0, 0.01]), maximize=st.booleans()),
    wild=frozenset({"lr", "beta1", "beta2", "eps", "weight_decay"}),
    invalid=_common_invalid,
)

# Elementwise/reduction kernels over same-sized buffers, fuzzed through the
# generic buffer machinery. linear_mse_grad (matrix shapes) has its own test.
KERNELS = [SGD, ADAM, ADAMW, LION, LAMB, MSE_LOSS, MSE_GRAD, MSE_LOSS_GRAD]
OPTIMIZER_STEPS = [e for e in KERNELS if e.name.endswith("_step")]
LOSSES = [e for e in KERNELS if e.reduction]


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
                amsgrad=True, decoupled_weight_decay=False, reduction="mean")
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
        candidates += [{**base, "momentum": 0.0},
                       {**base, "nesterov": True, "dampening": 0.0}]
    if "weight_decay" in base:
        candidates.append({**base, "weight_decay": 0.0})
    return [hp for hp in candidates if not entry.invalid(hp)]


def run_steps(entry, bufs, hp, steps):
    """Call ``entry`` ``steps`` times (step = 1, 2, ...) on ``bufs``; return the
    results of the calls."""
    out = []
    for s in range(1, steps + 1):
        h = dict(hp)
        if "step" in h:
            h["step"] = s
        out.append(entry.call(entry.fast(), bufs, h))
    return out
