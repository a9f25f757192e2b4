"""How far optcore's optimizer steps drift from torch.optim's.

For each optimizer and dtype: random options (as in tests/test_family_torch.py),
a random parameter, fresh random gradients each step, N steps through
torch.optim.<Class>(foreach=False) and through optcore.<name>_step side by side.
Prints the largest deviation over the seeds, relative to the parameter scale
(max|ours - torch| / max|torch|) and elementwise (max |ours_i - torch_i| / |torch_i|,
large only where a parameter passes near zero).

    PYTHONPATH=$PWD python benchmarks/torch_deviation.py [--steps 100] [--seeds 10]
"""

import argparse

import numpy as np
import torch

import optcore

OPTIMIZERS = {   # name: (torch class, state buffers, torch state keys)
    "rmsprop": ("RMSprop", ["square_avg", "momentum_buffer", "grad_avg"], None),
    "adagrad": ("Adagrad", ["state_sum"], ["sum"]),
    "adadelta": ("Adadelta", ["square_avg", "acc_delta"], None),
    "adamax": ("Adamax", ["exp_avg", "exp_inf"], None),
    "nadam": ("NAdam", ["exp_avg", "exp_avg_sq"], None),
    "radam": ("RAdam", ["exp_avg", "exp_avg_sq"], None),
}


def random_options(name, rng):
    o = {"lr": float(10 ** rng.uniform(-4, -1.5)),
         "weight_decay": float(rng.choice([0.0, 10 ** rng.uniform(-3, -1)])),
         "maximize": bool(rng.integers(2))}
    if name == "rmsprop":
        o.update(alpha=float(rng.uniform(0.8, 0.999)),
                 momentum=float(rng.choice([0.0, rng.uniform(0.5, 0.95)])),
                 centered=bool(rng.integers(2)), eps=float(10 ** rng.uniform(-8, -4)))
    elif name == "adagrad":
        o.update(lr_decay=float(rng.choice([0.0, 10 ** rng.uniform(-3, -1)])),
                 eps=float(10 ** rng.uniform(-10, -6)))
    elif name == "adadelta":
        o.update(lr=float(rng.uniform(0.1, 1.0)), rho=float(rng.uniform(0.8, 0.99)),
                 eps=float(10 ** rng.uniform(-7, -5)))
    else:
        o.update(beta1=float(rng.uniform(0.5, 0.95)), beta2=float(rng.uniform(0.9, 0.9999)),
                 eps=float(10 ** rng.uniform(-9, -6)))
        if name in ("nadam", "radam"):
            o["decoupled_weight_decay"] = bool(rng.integers(2))
        if name == "nadam":
            o["momentum_decay"] = float(10 ** rng.uniform(-3, -2))
    return o


def run(name, dtype, seed, steps, n=4096):
    rng = np.random.default_rng(seed)
    cls, states, _ = OPTIMIZERS[name]
    opts = random_options(name, rng)
    topts = dict(opts)
    if "beta1" in topts:
        topts["betas"] = (topts.pop("beta1"), topts.pop("beta2"))
    st = {s: np.zeros(n, dtype) for s in states}
    if name == "adagrad":
        topts["initial_accumulator_value"] = init = float(rng.uniform(0.0, 0.5))
        st["state_sum"][...] = init
    p = rng.standard_normal(n).astype(dtype)
    tp = torch.nn.Parameter(torch.from_numpy(p.copy()))
    topt = getattr(torch.optim, cls)([tp], foreach=False, **topts)
    step_fn = getattr(optcore, f"{name}_step")
    mu_product = 1.0
    for step in range(1, steps + 1):
        g = rng.standard_normal(n).astype(dtype)
        tp.grad = torch.from_numpy(g.copy())
        topt.step()
        args = [st[s] for s in states]
        if name == "nadam":
            mu_product = step_fn(p, g, *args, step=step, mu_product=mu_product, **opts)
        else:
            step_fn(p, g, *args, step=step, **opts)
    theirs = tp.detach().numpy().astype(np.float64)
    d = np.abs(p.astype(np.float64) - theirs)
    return d.max() / np.abs(theirs).max(), np.max(d / np.abs(theirs))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--seeds", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, {args.steps} steps, {args.seeds} random option sets each")
    print(f"{'optimizer':10s} {'dtype':8s} {'rel. to scale':>14s} {'elementwise':>12s}")
    for name in OPTIMIZERS:
        for dtype in (np.float32, np.float64):
            # torch keeps NAdam's mu_product in its default dtype: float64 runs
            # use float64 there, as optcore keeps it in double
            torch.set_default_dtype(torch.float64 if dtype == np.float64 else torch.float32)
            res = [run(name, dtype, s, args.steps) for s in range(args.seeds)]
            torch.set_default_dtype(torch.float32)
            print(f"{name:10s} {dtype.__name__:8s} {max(r[0] for r in res):14.2e} "
                  f"{max(r[1] for r in res):12.2e}")


if __name__ == "__main__":
    main()
