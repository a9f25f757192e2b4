"""The optimizer family under test: what each `*_step` takes, how to call it,
and how it maps onto its torch.optim class. Shared by the family test files.

Import as `from family import ...` (tests/ is on pytest's pythonpath)."""

import itertools
from dataclasses import dataclass, field

import numpy as np

import optcore
import optcore.reference as reference
from support import random_array


@dataclass(frozen=True)
class Optimizer:
    name: str                      # optcore.<name>_step
    states: tuple                  # state buffer arguments, in call order
    torch_class: str               # torch.optim.<torch_class>
    grid: dict                     # option -> values; tests cover every combination
    nonnegative: tuple = ()        # states that hold squares or sums (>= 0)
    torch_keys: dict = field(default_factory=dict)  # our state name -> torch's key
    first_step: int = 1            # multi-step tests start here
    scalar_state: str = None       # NAdam's mu_product: passed in, returned

    def __str__(self):
        return self.name

    @property
    def fast(self):
        return getattr(optcore, f"{self.name}_step")

    @property
    def ref(self):
        return getattr(reference, f"{self.name}_step")

    def combos(self):
        keys = list(self.grid)
        return [dict(zip(keys, vals)) for vals in itertools.product(*self.grid.values())]

    def required(self, opts):
        """The states these options use (the others may be None)."""
        if self.name == "rmsprop":
            need = {"square_avg"}
            if opts.get("momentum", 0.0) > 0:
                need.add("momentum_buffer")
            if opts.get("centered", False):
                need.add("grad_avg")
            return [s for s in self.states if s in need]
        return list(self.states)

    def torch_key(self, state):
        return self.torch_keys.get(state, state)


OPTIMIZERS = [
    Optimizer("rmsprop", ("square_avg", "momentum_buffer", "grad_avg"), "RMSprop",
              {"weight_decay": [0.0, 0.1], "momentum": [0.0, 0.9],
               "centered": [False, True], "maximize": [False, True]},
              nonnegative=("square_avg",)),
    Optimizer("adagrad", ("state_sum",), "Adagrad",
              {"lr_decay": [0.0, 0.05], "weight_decay": [0.0, 0.1],
               "maximize": [False, True]},
              nonnegative=("state_sum",), torch_keys={"state_sum": "sum"}),
    Optimizer("adadelta", ("square_avg", "acc_delta"), "Adadelta",
              {"weight_decay": [0.0, 0.1], "maximize": [False, True]},
              nonnegative=("square_avg", "acc_delta")),
    Optimizer("adamax", ("exp_avg", "exp_inf"), "Adamax",
              {"weight_decay": [0.0, 0.1], "maximize": [False, True]},
              nonnegative=("exp_inf",)),
    Optimizer("nadam", ("exp_avg", "exp_avg_sq"), "NAdam",
              {"weight_decay": [0.0, 0.1], "decoupled_weight_decay": [False, True],
               "maximize": [False, True]},
              nonnegative=("exp_avg_sq",), scalar_state="mu_product"),
    # Steps 4..7 cross RAdam's rectification switch (rho_t > 5 from step 6 with
    # the default betas).
    Optimizer("radam", ("exp_avg", "exp_avg_sq"), "RAdam",
              {"weight_decay": [0.0, 0.1], "decoupled_weight_decay": [False, True],
               "maximize": [False, True]},
              nonnegative=("exp_avg_sq",), first_step=4),
]

BY_NAME = {o.name: o for o in OPTIMIZERS}


def all_on(opt):
    """The combination with every option at its last (non-default) value."""
    return {k: v[-1] for k, v in opt.grid.items()}


def random_states(opt, rng, n, dtype, opts=None):
    """Valid random state for `n` elements (never zeros): non-negative where the
    state holds squares; RMSprop's grad_avg small enough that the centered
    variance square_avg - grad_avg**2 stays positive."""
    st = {}
    for s in opt.states:
        if s in opt.nonnegative:
            st[s] = random_array(rng, n, dtype, positive=True)
        else:
            st[s] = random_array(rng, n, dtype, scale=0.5)
    if "grad_avg" in st:
        bound = 0.5 * np.sqrt(st["square_avg"].astype(np.float64))
        st["grad_avg"] = (rng.uniform(-1.0, 1.0, n) * bound).astype(dtype)
    if opts is not None:
        need = opt.required(opts)
        st = {s: (a if s in need else None) for s, a in st.items()}
    return st


def call(fn, opt, param, grad, states, step, opts, scalar=1.0):
    """One step through `fn` (kernel or reference); returns the new scalar
    state (NAdam's mu_product), or `scalar` unchanged for the others."""
    args = [states[s] for s in opt.states]
    if opt.scalar_state:
        return fn(param, grad, *args, step=step, **{opt.scalar_state: scalar}, **opts)
    out = fn(param, grad, *args, step=step, **opts)
    assert out is None
    return scalar


def combo_id(opts):
    return ",".join(f"{k}={v}" for k, v in opts.items())
