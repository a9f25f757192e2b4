"""Golden outputs: a fingerprint (SHA-256) of every output of every public
kernel on fixed random inputs, per dtype, single and multi-tensor, over three
consecutive steps and the options that change the code path.

``python tests/golden_outputs.py --write`` records them in
``tests/data/golden_outputs.json``; ``test_golden.py`` checks that the build
under test reproduces them bit for bit (a refactoring must not change one bit;
a deliberate numerical change re-records them in the same commit).
"""

import hashlib
import json
import os
import sys

import numpy as np

import optcore

PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "golden_outputs.json")
SIZES = (1, 17, 40000)          # below the SIMD width, odd, above the parallel threshold

# name -> (state buffer names, option sets); state is positional after param, grad.
CASES = {
    "sgd_step": (("momentum_buffer",), [
        dict(lr=0.1), dict(lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01),
        dict(lr=0.1, momentum=0.9, nesterov=True, maximize=True)]),
    "adam_step": (("exp_avg", "exp_avg_sq", "max_exp_avg_sq"), [
        dict(lr=1e-2), dict(lr=1e-2, weight_decay=0.1, amsgrad=True),
        dict(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True, maximize=True),
        dict(lr=1e-2, beta1=0.3)]),
    "adamw_step": (("exp_avg", "exp_avg_sq", "max_exp_avg_sq"), [
        dict(lr=1e-2), dict(lr=1e-2, amsgrad=True)]),
    "rmsprop_step": (("square_avg", "momentum_buffer", "grad_avg"), [
        dict(lr=1e-2), dict(lr=1e-2, momentum=0.9, centered=True, weight_decay=0.1),
        dict(lr=1e-2, centered=True, maximize=True)]),
    "adagrad_step": (("state_sum",), [
        dict(lr=1e-2), dict(lr=1e-2, lr_decay=0.01, weight_decay=0.1, maximize=True)]),
    "adadelta_step": (("square_avg", "acc_delta"), [
        dict(lr=1.0), dict(lr=0.5, rho=0.5, weight_decay=0.1, maximize=True)]),
    "adamax_step": (("exp_avg", "exp_inf"), [
        dict(lr=2e-3), dict(lr=2e-3, weight_decay=0.1, maximize=True)]),
    "nadam_step": (("exp_avg", "exp_avg_sq"), [
        dict(lr=2e-3), dict(lr=2e-3, weight_decay=0.1, decoupled_weight_decay=True),
        dict(lr=2e-3, weight_decay=0.1, maximize=True)]),
    "radam_step": (("exp_avg", "exp_avg_sq"), [
        dict(lr=1e-3), dict(lr=1e-3, weight_decay=0.1, decoupled_weight_decay=True),
        dict(lr=1e-3, weight_decay=0.1, maximize=True)]),
    "rprop_step": (("prev", "step_size"), [
        dict(), dict(etaminus=0.3, etaplus=1.5, step_size_min=1e-3, step_size_max=0.5,
                     maximize=True)]),
    "asgd_step": (("ax",), [
        dict(eta=0.01, mu=1.0), dict(eta=0.01, mu=0.5, lambd=0.01, weight_decay=0.1,
                                     maximize=True)]),
    "lion_step": (("exp_avg",), [
        dict(lr=1e-4), dict(lr=1e-4, weight_decay=0.1, maximize=True)]),
    "lamb_step": (("exp_avg", "exp_avg_sq"), [
        dict(lr=1e-3), dict(lr=1e-3, weight_decay=0.1, maximize=True)]),
}


def _digest(arrays):
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:32]


def _fresh(rng, dtype, n, positive=False):
    x = rng.standard_normal(n).astype(dtype)
    return np.abs(x) + dtype(0.1) if positive else x


def run_step_kernel(name, dtype, sizes, options):
    """Three steps of ``name`` over tensors of ``sizes`` (a list: one
    multi-tensor call per step); returns the fingerprint of every buffer and
    returned value after each step."""
    state_names, _ = CASES[name]
    rng = np.random.default_rng([len(name), sum(sizes), np.dtype(dtype).itemsize])
    params = [_fresh(rng, dtype, n) for n in sizes]
    states = {s: [_fresh(rng, dtype, n, positive=True) for n in sizes] for s in state_names}
    out = []
    mu_product = 1.0
    for step in (1, 2, 3):
        grads = [_fresh(rng, dtype, n) for n in sizes]
        kwargs = dict(options, step=step)
        if name == "nadam_step":
            kwargs["mu_product"] = mu_product
        args = [params, grads] + [states[s] for s in state_names
                                  if s not in ("max_exp_avg_sq",)]
        if "max_exp_avg_sq" in states:
            kwargs["max_exp_avg_sq"] = states["max_exp_avg_sq"]
        if name == "sgd_step":
            args = [params, grads, states["momentum_buffer"]]
        if name == "rmsprop_step":
            args = [params, grads, states["square_avg"]]
            kwargs["momentum_buffer"] = states["momentum_buffer"]
            kwargs["grad_avg"] = states["grad_avg"]
        if len(sizes) == 1:
            args = [a[0] for a in args]
            kwargs = {k: (v[0] if isinstance(v, list) else v) for k, v in kwargs.items()}
        ret = getattr(optcore, name)(*args, **kwargs)
        if name == "nadam_step":
            mu_product = ret
            out.append(repr(float(ret)))
        out.append(_digest(params + [a for s in state_names for a in states[s]]))
    return out


def run_others(dtype):
    rng = np.random.default_rng(99)
    res = {}
    for n in SIZES:
        pred, target = _fresh(rng, dtype, n), _fresh(rng, dtype, n)
        for red in ("mean", "sum", "none"):
            loss, grad = optcore.mse_loss_grad(pred, target, reduction=red)
            res[f"mse_loss_grad/{red}/{n}"] = [_digest([np.asarray(loss), grad])]
            res[f"mse_loss/{red}/{n}"] = [_digest([np.asarray(optcore.mse_loss(pred, target, red))])]
        gs = [_fresh(rng, dtype, n), _fresh(rng, dtype, 3 * n)]
        for p in (2.0, 1.0, 3.0, float("inf")):
            res[f"global_norm/{p}/{n}"] = [repr(float(optcore.global_norm(gs, p)))]
        g2 = [g.copy() for g in gs]
        norm = optcore.clip_grad_norm_(g2, 0.5)
        res[f"clip_grad_norm_/{n}"] = [repr(float(norm)), _digest(g2)]
        g3 = [g.copy() for g in gs]
        optcore.clip_grad_value_(g3, 0.5)
        res[f"clip_grad_value_/{n}"] = [_digest(g3)]
        g4 = [g.copy() for g in gs]
        found = optcore.unscale_(g4, 0.125)
        res[f"unscale_/{n}"] = [repr(bool(found)), _digest(g4)]
    return res


def compute():
    result = {}
    for dtype in (np.float32, np.float64):
        dname = np.dtype(dtype).name
        for name, (_, option_sets) in CASES.items():
            for k, options in enumerate(option_sets):
                for sizes in ([SIZES[0]], [SIZES[1]], [SIZES[2]], list(SIZES)):
                    key = f"{dname}/{name}/{k}/{'x'.join(map(str, sizes))}"
                    result[key] = run_step_kernel(name, dtype, sizes, options)
        for key, value in run_others(dtype).items():
            result[f"{dname}/{key}"] = value
    return result


if __name__ == "__main__":
    got = compute()
    if "--write" in sys.argv:
        with open(PATH, "w") as f:
            json.dump(got, f, indent=0, sort_keys=True)
        print(f"wrote {len(got)} fingerprints to {PATH}")
    else:
        with open(PATH) as f:
            want = json.load(f)
        bad = [k for k in want if want[k] != got.get(k)]
        print(f"{len(want) - len(bad)} of {len(want)} fingerprints equal")
        for k in bad[:20]:
            print("differs:", k)
        sys.exit(1 if bad else 0)
