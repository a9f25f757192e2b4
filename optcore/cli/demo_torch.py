"""``python -m optcore demo --torch``: the seed's MLP as a torch.nn.Module,
trained with torch.optim.Adam and with optcore.torch.Adam from the same
initial weights; prints both loss curves' end points, the optimizer step
times, and how far apart the two runs end up.

Also runnable alone: ``python -m optcore.cli.demo_torch [--steps N] ...``.
"""

import argparse
import statistics
import sys
import time

import numpy as np

DEFAULTS = dict(steps=1000, samples=1000, lr=0.01, seed=0, dtype="float32")

# The loss curves coincide when they differ by less than this fraction of the
# curve's scale (its largest loss). Adam amplifies last-bit rounding
# differences near convergence, so the parameters drift apart more (relative
# 1e-4..1e-3 after 1000 float32 steps), exactly as between torch's own fused
# and single-tensor Adam; the demo prints that pair as the yardstick.
AGREEMENT = {"float32": 1e-5, "float64": 1e-12}


def add_arguments(parser):
    """Options of the torch demo (for a parser that does not define them)."""
    parser.add_argument("--steps", type=int, default=DEFAULTS["steps"],
                        help="full-batch Adam steps (default %(default)s)")
    parser.add_argument("--samples", type=int, default=DEFAULTS["samples"],
                        help="synthetic samples (default %(default)s)")
    parser.add_argument("--lr", type=float, default=DEFAULTS["lr"],
                        help="Adam learning rate (default %(default)s)")
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"],
                        help="data and weight seed (default %(default)s)")
    parser.add_argument("--dtype", choices=["float32", "float64"],
                        default=DEFAULTS["dtype"], help="default %(default)s")


def _option(args, name):
    value = getattr(args, name, None)
    return DEFAULTS[name] if value is None else value


def _data(torch, n, seed, dtype):
    """y = a linear signal plus a ReLU bump plus noise: what an MLP can fit
    better than a line."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 10))
    w, v = rng.standard_normal(10), rng.standard_normal(10)
    y = X @ w * 0.5 + np.maximum(X @ v, 0.0) + 0.1 * rng.standard_normal(n)
    return (torch.from_numpy(X).to(dtype), torch.from_numpy(y[:, None]).to(dtype))


def _model(torch, seed, dtype):
    # The seed's network: Dense(10, relu) then Dense(1), on 10 features.
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return torch.nn.Sequential(torch.nn.Linear(10, 10), torch.nn.ReLU(),
                                   torch.nn.Linear(10, 1)).to(dtype)


def _train(torch, model, opt, X, y, steps):
    """Full-batch training; returns the loss per step and the step times."""
    loss_fn = torch.nn.MSELoss()
    losses, times = [], []
    clock = time.perf_counter
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn(model(X), y)
        loss.backward()
        t0 = clock()
        opt.step()
        times.append(clock() - t0)
        losses.append(loss.item())
    return np.array(losses), np.array(times)


def run(args):
    try:
        import torch
        import optcore.torch as ot
    except ImportError as exc:
        print(f"demo --torch needs PyTorch: {exc}", file=sys.stderr)
        return 2
    steps, n, lr = _option(args, "steps"), _option(args, "samples"), _option(args, "lr")
    seed, dtype_name = _option(args, "seed"), _option(args, "dtype")
    dtype = getattr(torch, dtype_name)
    X, y = _data(torch, n, seed, dtype)
    initial = _model(torch, seed, dtype)

    variants = (("torch.optim.Adam", lambda ps: torch.optim.Adam(ps, lr=lr)),
                ("torch Adam(fused=True)", lambda ps: torch.optim.Adam(ps, lr=lr,
                                                                      fused=True)),
                ("optcore.torch.Adam", lambda ps: ot.Adam(ps, lr=lr)))
    runs = {}
    for label, make in variants:
        model = _model(torch, seed, dtype)
        model.load_state_dict(initial.state_dict())
        opt = make(model.parameters())
        t0 = time.perf_counter()
        losses, times = _train(torch, model, opt, X, y, steps)
        runs[label] = (model, losses, times, time.perf_counter() - t0)

    print(f"optcore demo --torch: the seed's MLP (10 -> ReLU(10) -> 1, MSE loss) as a "
          f"torch.nn.Module,\nfull-batch Adam(lr={lr}), {steps} steps on {n} synthetic "
          f"samples, {dtype_name}, the same initial weights for every run.\n")
    marks = sorted({0, min(9, steps - 1), min(99, steps - 1), steps - 1})
    head = "".join(f"{'loss@' + str(m + 1):>12}" for m in marks)
    print(f"{'optimizer':<24}{head}{'step() median':>15}{'training':>10}")
    for label, (_, losses, times, total) in runs.items():
        cols = "".join(f"{losses[m]:12.6g}" for m in marks)
        print(f"{label:<24}{cols}{statistics.median(times) * 1e6:12.1f} us"
              f"{total:8.2f} s")

    ref_model, ref_losses, ref_times, _ = runs["torch.optim.Adam"]

    @torch.no_grad()
    def deviations(label):
        model, losses, _, _ = runs[label]
        curve = float(np.max(np.abs(losses - ref_losses)) / np.max(np.abs(ref_losses)))
        params = max(float((a - b).abs().max() / a.abs().max().clamp_min(1e-30))
                     for a, b in zip(ref_model.parameters(), model.parameters()))
        return curve, params

    print(f"\ndifference from torch.optim.Adam over all {steps} steps "
          f"(loss: largest gap / largest loss; parameters: largest relative gap at the end)")
    for label in ("torch Adam(fused=True)", "optcore.torch.Adam"):
        curve, params = deviations(label)
        print(f"  {label:<24} loss {curve:.2e}   parameters {params:.2e}")
    curve, _ = deviations("optcore.torch.Adam")
    ours = statistics.median(runs["optcore.torch.Adam"][2])
    fused = statistics.median(runs["torch Adam(fused=True)"][2])
    print(f"speed-up of optimizer.step() (medians): {statistics.median(ref_times) / ours:.2f}x "
          f"over torch.optim.Adam, {fused / ours:.2f}x over torch.optim.Adam(fused=True)")
    bound = AGREEMENT[dtype_name]
    if curve <= bound:
        print(f"The loss curves coincide (gap below {bound:g} of the curve's scale).")
        return 0
    print(f"The loss curves DIFFER (gap above {bound:g} of the curve's scale).")
    return 1


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m optcore.cli.demo_torch",
                                     description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
