"""``python -m optcore demo --torch``: the demo's MLP problem (10 -> ReLU(10)
-> 1, MSE, full-batch Adam) trained as a real torch.nn.Module with
torch.optim.Adam, torch.optim.Adam(fused=True) and optcore.torch.Adam, all
from the problem's initial weights, beside the NumPy run with optcore's
kernels. Prints the demo's table (final MSE and time per backend), the median
optimizer.step() times, and how far the curves are apart.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

import optcore
from optcore.cli import demo, demo_training

# The loss curves coincide when they differ by less than this fraction of the
# curve's scale (its largest loss), or by no more than torch's own two Adam
# implementations (fused and single-tensor) differ from each other, within a
# factor YARDSTICK. Near convergence Adam's updates are steps of about lr
# whatever the gradient's size, so last-bit rounding differences grow over
# thousands of float32 steps: the curves stay together (gaps ~1e-4 of the
# scale) while the weights wander apart, for torch's pair just as for optcore.
AGREEMENT = {"float32": 1e-5, "float64": 1e-12}
YARDSTICK = 10.0

REFERENCE = "torch.optim"          # the backend the others are compared with

if TYPE_CHECKING:
    from optcore.cli.demo_training import Method, Problem, Run

    # (parameters, lr) -> a torch optimizer over them
    MakeOptimizer = Callable[[Any, float], Any]


def _variants(torch: ModuleType,
              ot: ModuleType) -> tuple[tuple[str, MakeOptimizer], ...]:
    return ((REFERENCE, lambda ps, lr: torch.optim.Adam(ps, lr=lr)),
            ("torch fused", lambda ps, lr: torch.optim.Adam(ps, lr=lr, fused=True)),
            ("optcore.torch", lambda ps, lr: ot.Adam(ps, lr=lr)))


def _module(torch: ModuleType, problem: Problem) -> Any:
    """torch.nn version of demo_training.MLP, with the problem's weights."""
    W1, b1, W2, b2 = (torch.from_numpy(p.copy()) for p in problem.init_params)
    model = torch.nn.Sequential(torch.nn.Linear(W1.shape[1], W1.shape[0]),
                                torch.nn.ReLU(), torch.nn.Linear(W1.shape[0], 1))
    model.to(W1.dtype).load_state_dict(
        {"0.weight": W1, "0.bias": b1, "2.weight": W2, "2.bias": b2})
    return model


def train_torch(torch: ModuleType, method: Method, problem: Problem, backend: str,
                make_optimizer: MakeOptimizer) -> tuple[Run, Any, list[float]]:
    """Full-batch training of the torch.nn MLP; returns the demo's ``Run``,
    the trained module and the optimizer.step() times."""
    if method.batch is not None:
        raise ValueError("the torch demo trains full-batch methods")
    model = _module(torch, problem)
    X, y = torch.from_numpy(problem.X), torch.from_numpy(problem.y)
    opt = make_optimizer(model.parameters(), method.lr)
    mse = torch.nn.functional.mse_loss

    def full_loss() -> float:
        with torch.no_grad():
            return mse(model(X)[:, 0], y).item()

    record = set(demo_training.curve_points(method.steps).tolist())
    curve, step_times = [full_loss()], []
    seconds = 0.0
    clock = time.perf_counter
    start = clock()
    for step in range(1, method.steps + 1):
        opt.zero_grad()
        mse(model(X)[:, 0], y).backward()
        t0 = clock()
        opt.step()
        step_times.append(clock() - t0)
        if step in record:
            seconds += clock() - start
            curve.append(full_loss())
            start = clock()
    run = demo_training.Run(method, backend, curve[-1], seconds,
                            demo_training.curve_points(method.steps), np.array(curve))
    return run, model, step_times


def run(args: argparse.Namespace) -> int:
    try:
        import torch
        import optcore.torch as ot
    except ImportError as exc:
        print(f"optcore demo --torch needs PyTorch: {exc}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    dtype_name = str(np.dtype(args.dtype))
    problems = demo_training.make_problems(args.seed, dtype=np.dtype(args.dtype))
    problem = problems["mlp"]
    method = demo_training.scaled(
        next(m for m in demo_training.METHODS if m.model == "mlp"), args.scale)

    runs = [demo_training.train(method, problem, optcore, seed=args.seed)]
    models: dict[str, Any]
    step_times: dict[str, list[float]]
    models, step_times = {}, {}
    for backend, make in _variants(torch, ot):
        r, models[backend], step_times[backend] = train_torch(torch, method, problem,
                                                              backend, make)
        runs.append(r)

    X = problem.X
    print(f"optcore demo --torch: the MLP (10 -> ReLU(10) -> 1, MSE) as a torch.nn.Module, "
          f"{method.name}, lr {method.lr}, {method.steps} steps;\n{X.shape[0]} samples x "
          f"{X.shape[1]} features, {dtype_name}, seed {args.seed}. Every run starts from the "
          f"same weights; \"optcore\" is the NumPy run of `python -m optcore demo`.\n")
    print("\n".join(demo.format_table(runs)))

    print("\noptimizer.step() median: " + ", ".join(
        f"{b} {statistics.median(t) * 1e6:.1f} us" for b, t in step_times.items()))
    ours = statistics.median(step_times["optcore.torch"])
    print("speed-up of optcore.torch.Adam: " + ", ".join(
        f"{statistics.median(t) / ours:.2f}x over {b}"
        for b, t in step_times.items() if b != "optcore.torch"))

    by_backend = {r.backend: r for r in runs}
    ref = by_backend[REFERENCE]
    print(f"\ndistance from {REFERENCE} (loss curve: largest gap / largest loss; "
          f"parameters: largest relative gap after the last step)")
    gaps: dict[str, float] = {}
    with torch.no_grad():
        for backend in ("torch fused", "optcore.torch"):
            curve = float(np.max(np.abs(by_backend[backend].curve_loss - ref.curve_loss))
                          / np.max(np.abs(ref.curve_loss)))
            params = max(float((a - b).abs().max() / a.abs().max().clamp_min(1e-30))
                         for a, b in zip(models[REFERENCE].parameters(),
                                         models[backend].parameters()))
            gaps[backend] = curve
            print(f"  {backend:<14} loss curve {curve:.2e}   parameters {params:.2e}")
    if dtype_name == "float32":
        print("(float32: near convergence Adam's steps are about lr whatever the gradient, "
              "so last-bit\n rounding differences grow, for torch's two implementations "
              "as for optcore; with\n --dtype float64 the curves stay within ~1e-13 of each other.)")
    if args.plot:
        demo.plot(runs, {"mlp": problem}, args.plot)
        print(f"\nloss curves written to {args.plot}")
    print(f"\ntotal {time.perf_counter() - started:.1f} s")
    bound = max(AGREEMENT[dtype_name], YARDSTICK * gaps["torch fused"])
    if gaps["optcore.torch"] <= bound:
        print(f"optcore.torch.Adam and torch.optim.Adam: the loss curves coincide (gap "
              f"{gaps['optcore.torch']:.1e} of the curve's scale; torch's own fused and "
              f"single-tensor Adam: {gaps['torch fused']:.1e}).")
        return 0
    print(f"optcore.torch.Adam and torch.optim.Adam: the loss curves DIFFER (gap "
          f"{gaps['optcore.torch']:.1e} of the curve's scale, above {bound:.1e}).")
    return 1
