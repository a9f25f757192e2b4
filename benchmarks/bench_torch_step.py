"""optimizer.step() time: optcore.torch.Adam vs torch.optim.Adam(fused=True)
and torch.optim.Adam(foreach=False), on two models:

- the seed's MLP (10 -> ReLU(10) -> 1: 4 tensors, 121 elements);
- 100 parameter tensors of 1024 .. 1,048,576 elements (geometric sizes,
  ~15.3 M elements in all).

Gradients are set once; each timed call is one ``opt.step()`` (Adam's update
over every parameter); the optimizers take turns step by step. Prints medians
(and the fastest call) per optimizer.

    python benchmarks/bench_torch_step.py [--dtype float32] [--repeat 30] [--json FILE]

Standalone (not a pytest-benchmark suite): it needs torch and a built optcore.
"""

import argparse
import json
import statistics
import sys
import time

import numpy as np
import torch

import optcore
import optcore.torch as ot


def seed_mlp(dtype):
    torch.manual_seed(0)
    return list(torch.nn.Sequential(torch.nn.Linear(10, 10), torch.nn.ReLU(),
                                    torch.nn.Linear(10, 1)).to(dtype).parameters())


def hundred_tensors(dtype):
    sizes = np.geomspace(1024, 2**20, 100).round().astype(int)
    gen = torch.Generator().manual_seed(0)
    return [torch.nn.Parameter(torch.randn(int(n), generator=gen, dtype=dtype))
            for n in sizes]


OPTIMIZERS = {
    "optcore.torch.Adam": lambda ps: ot.Adam(ps, lr=1e-3),
    "torch Adam(fused=True)": lambda ps: torch.optim.Adam(ps, lr=1e-3, fused=True),
    "torch Adam(foreach=False)": lambda ps: torch.optim.Adam(ps, lr=1e-3, foreach=False),
}


def time_steps(params, repeat, warmup=3):
    """Step times per optimizer. Every optimizer has its own copy of the
    parameters and gradients; the optimizers take turns, one step each, so
    that a change in the machine's load hits them alike."""
    gen = torch.Generator().manual_seed(1)
    grads = [torch.randn(p.shape, generator=gen, dtype=p.dtype) * 1e-2 for p in params]
    opts = {}
    for label, make in OPTIMIZERS.items():
        copies = [torch.nn.Parameter(p.detach().clone()) for p in params]
        for p, g in zip(copies, grads):
            p.grad = g.clone()
        opts[label] = make(copies)
    for opt in opts.values():
        for _ in range(warmup):
            opt.step()
    times = {label: [] for label in opts}
    clock = time.perf_counter
    for _ in range(repeat):
        for label, opt in opts.items():
            t0 = clock()
            opt.step()
            times[label].append(clock() - t0)
    return times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--repeat", type=int, default=None,
                        help="timed steps per optimizer (default: 2000 for the MLP, "
                             "30 for the 100 tensors)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)
    dtype = getattr(torch, args.dtype)

    print(f"torch {torch.__version__}, optcore {optcore.__version__}, {args.dtype}; "
          f"threads: torch {torch.get_num_threads()}, optcore {optcore.get_num_threads()}")
    results = {}
    for model, build, repeat in (("seed MLP (4 tensors, 121 elements)", seed_mlp, 2000),
                                 ("100 tensors, 1024..1M elements", hundred_tensors, 30)):
        params = build(dtype)
        n = sum(p.numel() for p in params)
        repeat = args.repeat or repeat
        print(f"\n{model}: {len(params)} tensors, {n:,} elements, {repeat} timed steps")
        print(f"  {'optimizer':<28}{'median':>12}{'fastest':>12}{'vs optcore':>12}")
        rows = {label: dict(median_s=statistics.median(t), min_s=min(t))
                for label, t in time_steps(params, repeat).items()}
        ours = rows["optcore.torch.Adam"]["median_s"]
        for label, row in rows.items():
            print(f"  {label:<28}{_fmt(row['median_s']):>12}{_fmt(row['min_s']):>12}"
                  f"{row['median_s'] / ours:11.2f}x")
        results[model] = dict(tensors=len(params), elements=n, repeat=repeat, **rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(dtype=args.dtype, torch=torch.__version__, results=results), f,
                      indent=2)
    return 0


def _fmt(seconds):
    return f"{seconds * 1e6:.1f} us" if seconds < 1e-3 else f"{seconds * 1e3:.2f} ms"


if __name__ == "__main__":
    sys.exit(main())
