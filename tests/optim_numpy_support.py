"""The NumPy optimizer classes as test subjects: the classes, random
constructor options, parameter groups and a replay through the functional
kernels (shared by test_optim_numpy.py and test_optim_numpy_errors.py)."""

import copy

import numpy as np

import optcore
from support import random_array

ALL = [optcore.SGD, optcore.Adam, optcore.AdamW, optcore.RMSprop, optcore.Adagrad,
       optcore.Adadelta, optcore.Adamax, optcore.NAdam, optcore.RAdam, optcore.Rprop,
       optcore.ASGD, optcore.Lion, optcore.LAMB]
IN_TORCH = [c for c in ALL if c not in (optcore.Lion, optcore.LAMB)]
SHAPES = [(7,), (3, 5), (0,), (33,), (2, 2, 9)]


def ids(classes):
    return [c.__name__ for c in classes]


# ---- the contract, restated: options, state and kernel arguments -----------

def random_options(cls, rng):
    """Random torch.optim constructor options for ``cls`` (torch's names)."""
    u = lambda lo, hi: float(rng.uniform(lo, hi))   # noqa: E731
    flag = lambda: bool(rng.integers(2))            # noqa: E731
    betas = (u(0.5, 0.95), u(0.9, 0.999))
    if cls is optcore.SGD:
        momentum = [0.0, u(0.5, 0.95)][rng.integers(2)]
        nesterov = bool(momentum) and flag()
        return dict(lr=u(1e-3, 0.1), momentum=momentum, nesterov=nesterov,
                    dampening=0.0 if nesterov else [0.0, u(0.0, 0.5)][rng.integers(2)],
                    weight_decay=[0.0, u(0, 0.1)][rng.integers(2)], maximize=flag())
    common = dict(weight_decay=[0.0, u(0, 0.1)][rng.integers(2)], maximize=flag())
    if cls is optcore.Adam:
        return dict(common, lr=u(1e-3, 0.05), betas=betas, eps=u(1e-8, 1e-6),
                    amsgrad=flag(), decoupled_weight_decay=flag())
    if cls is optcore.AdamW:
        return dict(common, lr=u(1e-3, 0.05), betas=betas, eps=u(1e-8, 1e-6),
                    amsgrad=flag())
    if cls is optcore.RMSprop:
        return dict(common, lr=u(1e-3, 0.02), alpha=u(0.8, 0.99), eps=u(1e-8, 1e-6),
                    momentum=[0.0, u(0.5, 0.9)][rng.integers(2)], centered=flag())
    if cls is optcore.Adagrad:
        return dict(common, lr=u(1e-3, 0.1), lr_decay=[0.0, u(0, 0.01)][rng.integers(2)],
                    initial_accumulator_value=[0.0, u(0, 0.5)][rng.integers(2)],
                    eps=u(1e-10, 1e-8))
    if cls is optcore.Adadelta:
        return dict(common, lr=u(0.1, 1.0), rho=u(0.8, 0.95), eps=u(1e-6, 1e-5))
    if cls is optcore.Adamax:
        return dict(common, lr=u(1e-3, 0.02), betas=betas, eps=u(1e-8, 1e-6))
    if cls is optcore.NAdam:
        return dict(common, lr=u(1e-3, 0.02), betas=betas, eps=u(1e-8, 1e-6),
                    momentum_decay=u(1e-3, 1e-2), decoupled_weight_decay=flag())
    if cls is optcore.RAdam:
        return dict(common, lr=u(1e-3, 0.02), betas=betas, eps=u(1e-8, 1e-6),
                    decoupled_weight_decay=flag())
    if cls is optcore.Rprop:
        return dict(lr=u(1e-3, 0.05), etas=(u(0.3, 0.7), u(1.1, 1.5)),
                    step_sizes=(u(1e-6, 1e-4), u(1.0, 50.0)), maximize=flag())
    if cls is optcore.ASGD:
        return dict(common, lr=u(1e-3, 0.05), lambd=u(1e-4, 1e-2), alpha=u(0.5, 1.0),
                    t0=float(rng.integers(0, 4)))
    if cls is optcore.Lion:
        return dict(common, lr=u(1e-4, 1e-2), betas=(u(0.8, 0.95), u(0.9, 0.999)))
    if cls is optcore.LAMB:
        return dict(common, lr=u(1e-3, 0.02), betas=betas, eps=u(1e-6, 1e-4))
    raise AssertionError(cls)


def group_options(cls, rng):
    """Hyperparameters for a second group that differ from the first's."""
    opts = {"lr": float(rng.uniform(1e-3, 0.01))}
    if cls is optcore.Rprop:
        return dict(opts, etas=(0.4, 1.3))
    if cls is not optcore.SGD or rng.integers(2):
        opts["weight_decay"] = float(rng.uniform(0.0, 0.05))
    return opts


# state key -> kernel argument, for the state each group's options need
def state_args(cls, group):
    if cls is optcore.SGD:
        return {"momentum_buffer": "momentum_buffer"} if group["momentum"] else {}
    if cls in (optcore.Adam, optcore.AdamW):
        keys = ["exp_avg", "exp_avg_sq"] + (["max_exp_avg_sq"] if group["amsgrad"] else [])
    elif cls is optcore.RMSprop:
        keys = ["square_avg"] + (["momentum_buffer"] if group["momentum"] else []) \
            + (["grad_avg"] if group["centered"] else [])
    elif cls is optcore.Adagrad:
        return {"sum": "state_sum"}
    elif cls is optcore.Adadelta:
        keys = ["square_avg", "acc_delta"]
    elif cls is optcore.Adamax:
        keys = ["exp_avg", "exp_inf"]
    elif cls is optcore.Lion:
        keys = ["exp_avg"]
    elif cls is optcore.Rprop:
        keys = ["prev", "step_size"]
    elif cls is optcore.ASGD:
        keys = ["ax"]
    else:
        keys = ["exp_avg", "exp_avg_sq"]
    return {k: k for k in keys}


def kernel_hyper(cls, group):
    out = {}
    for k, v in group.items():
        if k == "params" or k == "initial_accumulator_value":
            continue
        if k == "decoupled_weight_decay" and cls is optcore.AdamW:
            continue
        if k == "betas":
            out["beta1"], out["beta2"] = v
        elif k == "etas":
            out["etaminus"], out["etaplus"] = v
        elif k == "step_sizes":
            out["step_size_min"], out["step_size_max"] = v
        elif cls is optcore.Rprop and k == "lr":
            continue                              # the initial step size only
        elif cls is optcore.ASGD and k in ("lr", "alpha", "t0"):
            continue                              # they set eta and mu
        else:
            out[k] = v
    return out


class Replay:
    """The same training run driven through the functional kernels directly:
    separate state arrays per parameter, one multi-tensor call per group."""

    def __init__(self, cls, groups):
        self.cls = cls
        self.fn = getattr(optcore, cls.__name__.lower() + "_step")
        self.groups = [dict(g, params=[p.copy() for p in g["params"]]) for g in groups]
        self.state = []
        for g in self.groups:
            fill = g.get("initial_accumulator_value", 0.0)
            self.state.append({arg: [np.full_like(p, g["lr"] if arg == "step_size" else fill)
                                     for p in g["params"]]
                               for arg in state_args(cls, g).values()})
        self.t = 0
        self.mu = [1.0] * len(self.groups)
        # ASGD's eta and mu, float32 as torch.optim.ASGD keeps them by default
        self.eta_mu = [(float(np.float32(g["lr"])), 1.0) for g in self.groups]

    def step(self, grads_per_group):
        self.t += 1
        for i, (g, gs) in enumerate(zip(self.groups, grads_per_group)):
            kw = dict(kernel_hyper(self.cls, g), step=self.t, **self.state[i])
            if self.cls is optcore.NAdam:
                # torch.optim.NAdam's mu_product: `mu_product *= mu` rounded to
                # float32 (torch's default dtype); the kernel multiplies in
                # double, so it gets the factor that gives the rounded product.
                mu = kw["beta1"] * (1.0 - 0.5 * 0.96 ** (self.t * kw["momentum_decay"]))
                product = float(np.float32(self.mu[i]) * np.float32(mu))
                self.fn(g["params"], gs, mu_product=product / mu, **kw)
                self.mu[i] = product
            elif self.cls is optcore.ASGD:
                eta, mu = self.eta_mu[i]
                self.fn(g["params"], gs, eta=eta, mu=mu, **kw)
                lr = g["lr"]
                self.eta_mu[i] = (
                    float(np.float32(lr / (1 + g["lambd"] * lr * self.t) ** g["alpha"])),
                    float(np.float32(1 / max(1, self.t - g["t0"]))))
            else:
                self.fn(g["params"], gs, **kw)


def make_groups(cls, rng, dtype, nparams=(3, 2)):
    """Two groups of fresh random parameters; the second with its own
    hyperparameters. Returns (constructor options, groups)."""
    opts = random_options(cls, rng)
    shapes = iter(SHAPES * 3)
    groups = []
    for i, n in enumerate(nparams):
        params = [random_array(rng, int(np.prod(s)), dtype).reshape(s)
                  for s in [next(shapes) for _ in range(n)]]
        groups.append(dict({"params": params}, **(group_options(cls, rng) if i else {})))
    return opts, groups


def grads_like(rng, groups):
    return [[random_array(rng, p.size, p.dtype).reshape(p.shape) for p in g["params"]]
            for g in groups]


def all_params(opt):
    return [p for g in opt.param_groups for p in g["params"]]


# ---- an optimizer's groups and state, before and after a refused call ----

def snapshot(opt):
    return (copy.deepcopy([{k: v for k, v in g.items() if k != "params"}
                           for g in opt.param_groups]),
            {i: {k: (v.copy() if isinstance(v, np.ndarray) else v)
                 for k, v in st.items()} for i, st in opt.state.items()},
            {i: {k: v for k, v in st.items()} for i, st in opt.state.items()})


def assert_unchanged(opt, snap):
    groups, values, objects = snap
    assert [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups] == groups
    assert sorted(opt.state) == sorted(values)
    for i, st in opt.state.items():
        assert sorted(st) == sorted(values[i])
        for k, v in st.items():
            assert v is objects[i][k]                      # the same views, still live
            np.testing.assert_array_equal(v, values[i][k])
