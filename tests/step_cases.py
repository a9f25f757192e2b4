"""The SGD / Adam / AdamW step kernels as test subjects: their state buffers,
option grids, buffer factories and a driver that runs a kernel (or its
reference twin) over several consecutive steps.

Shared by the reference, torch, bad-input and determinism tests.
"""

import itertools
from dataclasses import dataclass

import numpy as np
import pytest

import optcore
from optcore import reference
from support import random_array


@dataclass(frozen=True)
class StepFamily:
    name: str
    fast: object                  # optcore.<name>_step
    ref: object                   # optcore.reference.<name>_step
    states: tuple                 # state buffer arguments, in call order
    positive_states: tuple        # states that are sums of squares (>= 0)

    def needed_states(self, opts):
        """State buffers the options use (the others may be None)."""
        if self.name == "sgd":
            return ("momentum_buffer",) if opts.get("momentum", 0.0) != 0.0 else ()
        if opts.get("amsgrad", False):
            return self.states
        return ("exp_avg", "exp_avg_sq")

    def call(self, fast, bufs, step, opts):
        """Run one step of ``fast`` (True: the kernel, False: the reference)."""
        fn = self.fast if fast else self.ref
        args = [bufs["param"], bufs["grad"]]
        kwargs = dict(opts)
        if self.name == "sgd":
            args.append(bufs.get("momentum_buffer"))
        else:
            args += [bufs["exp_avg"], bufs["exp_avg_sq"]]
            kwargs["max_exp_avg_sq"] = bufs.get("max_exp_avg_sq")
        fn(*args, step=step, **kwargs)


SGD = StepFamily("sgd", optcore.sgd_step, reference.sgd_step,
                 ("momentum_buffer",), ())
ADAM = StepFamily("adam", optcore.adam_step, reference.adam_step,
                  ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
                  ("exp_avg_sq", "max_exp_avg_sq"))
ADAMW = StepFamily("adamw", optcore.adamw_step, reference.adamw_step,
                   ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
                   ("exp_avg_sq", "max_exp_avg_sq"))
FAMILIES = [SGD, ADAM, ADAMW]


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
    return out


def adam_options(decoupled_axis=True):
    """Every combination of Adam's switches; beta1 = 0.9 and 0.3 take the two
    branches of torch.lerp (weight 1 - beta1 below / at or above 0.5)."""
    axes = dict(weight_decay=(0.0, 0.05), amsgrad=(False, True),
                maximize=(False, True), beta1=(0.9, 0.3))
    if decoupled_axis:
        axes["decoupled_weight_decay"] = (False, True)
    return [dict(lr=0.01, beta2=0.99, eps=1e-8, **o) for o in _grid(**axes)]


OPTIONS = {"sgd": sgd_options(), "adam": adam_options(), "adamw": adam_options(False)}


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


def family_cases():
    """(family, options) pairs covering every option combination, as pytest params."""
    return [pytest.param(fam, opts, id=f"{fam.name}-{options_id(opts)}")
            for fam in FAMILIES for opts in OPTIONS[fam.name]]


def _one(rng, shape, dtype, positive=False):
    n = int(np.prod(shape))
    return random_array(rng, n, dtype, positive=positive).reshape(shape)


def make_buffers(rng, family, shapes, dtype, multi=None):
    """Fresh random param, grad and every state buffer of ``family``.

    ``shapes`` is one shape (single-tensor call) or a list of shapes
    (multi-tensor call, every argument a list). State buffers start random
    (never zero), as after earlier steps; sums of squares start positive."""
    if multi is None:
        multi = isinstance(shapes, list)
    shape_list = shapes if multi else [shapes]
    bufs = {}
    for name in ("param", "grad") + family.states:
        pos = name in family.positive_states
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


# ---- the same step through torch.optim ------------------------------------

def zero_state(bufs):
    """State as torch.optim starts it (zeros; SGD's buffer is set at step 1)."""
    for k, v in bufs.items():
        if k in ("param", "grad") or v is None:
            continue
        for a in (v if isinstance(v, list) else [v]):
            a[...] = 0


class TorchTwin:
    """torch.optim.SGD / Adam / AdamW (single-tensor ``foreach=False`` path) over
    copies of the parameters of ``bufs``, stepped with the same gradients."""

    def __init__(self, torch, family, bufs, opts):
        self.torch = torch
        params = bufs["param"] if isinstance(bufs["param"], list) else [bufs["param"]]
        self.params = [torch.from_numpy(p.copy()) for p in params]
        o = dict(opts)
        if family.name == "sgd":
            self.opt = torch.optim.SGD(self.params, foreach=False, **o)
        else:
            betas = (o.pop("beta1", 0.9), o.pop("beta2", 0.999))
            cls = torch.optim.Adam if family.name == "adam" else torch.optim.AdamW
            self.opt = cls(self.params, betas=betas, foreach=False, **o)

    def step(self, grad):
        grads = grad if isinstance(grad, list) else [grad]
        for p, g in zip(self.params, grads):
            p.grad = self.torch.from_numpy(g.copy())
        self.opt.step()

    def state(self, name):
        """A state buffer of every parameter, as NumPy arrays."""
        return [self.opt.state[p][name].numpy() for p in self.params]


def draw_options(rng, family, lerp_branch=None):
    """Random options for ``family`` (valid for torch.optim too).
    ``lerp_branch`` ("low"/"high") pins beta1 to one side of 0.5."""
    coin = lambda: bool(rng.integers(2))
    if family.name == "sgd":
        momentum = float(rng.uniform(0.1, 0.99)) if coin() else 0.0
        nesterov = momentum > 0 and coin()
        dampening = 0.0 if (nesterov or coin()) else float(rng.uniform(0.0, 0.9))
        return dict(lr=float(rng.uniform(1e-3, 0.1)), momentum=momentum,
                    dampening=dampening, nesterov=nesterov,
                    weight_decay=float(rng.uniform(0.0, 0.1)) if coin() else 0.0,
                    maximize=coin())
    if lerp_branch is None:
        lerp_branch = "low" if coin() else "high"
    # torch.lerp's weight is 1 - beta1: below 0.5 for beta1 > 0.5.
    beta1 = float(rng.uniform(0.5, 0.99) if lerp_branch == "low" else rng.uniform(0.0, 0.5))
    opts = dict(lr=float(rng.uniform(1e-4, 0.05)), beta1=beta1,
                beta2=float(rng.uniform(0.9, 0.9999)),
                eps=1e-8 if coin() else float(10 ** rng.uniform(-10, -6)),
                weight_decay=float(rng.uniform(0.0, 0.1)) if coin() else 0.0,
                amsgrad=coin(), maximize=coin())
    if family.name == "adam":
        opts["decoupled_weight_decay"] = coin()
    return opts


def torch_trajectory(torch, family, opts, dtype, shapes, steps, rng):
    """Run optcore and torch.optim side by side from the same start for
    ``steps`` steps with the same random gradients. Yields (step, bufs, twin)
    after each step; deviation() measures them."""
    bufs = make_buffers(rng, family, shapes, dtype)
    zero_state(bufs)
    twin = TorchTwin(torch, family, bufs, opts)
    for step in range(1, steps + 1):
        new_grads(rng, bufs)
        family.call(True, bufs, step, opts)
        twin.step(bufs["grad"])
        yield step, bufs, twin


def deviation(mine, theirs):
    """max |mine - theirs| relative to the largest |theirs| (the scale of the
    buffer), over lists of arrays."""
    num = max((float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))
               for a, b in zip(mine, theirs) if a.size), default=0.0)
    scale = max((float(np.max(np.abs(b))) for b in theirs if b.size), default=0.0)
    return num / scale if scale else num
