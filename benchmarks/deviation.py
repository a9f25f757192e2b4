"""How far optcore drifts from torch.optim (foreach=False), per optimizer and dtype.

Three APIs, each against the same torch.optim class stepped with the same
gradients from the same start:

  functional  optcore.<name>_step on a NumPy parameter of 4096 elements
  numpy       the NumPy classes (optcore.<Class>) on the same parameter
  torch       optcore.torch.<Class> on the adapter tests' torch.nn model,
              both runs on one gradient sequence (lockstep)

Options are drawn by the test registry's sampler (tests/registry.py,
draw_options) for functional/numpy, and by the adapter tests' sampler for the
torch classes. Prints the largest deviation over the seeds, relative to the
parameter scale: max|ours - torch| / max|torch|. Not a test: a record for
reports (the tests bound the same quantity).

    PYTHONPATH=src python benchmarks/deviation.py --api functional|numpy|torch|all \\
        [--steps 100] [--seeds 10]
"""

import argparse
import copy
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

import optcore  # noqa: E402
from registry import (TORCH_TWINS, deviation, draw_options, new_grads,  # noqa: E402
                      shaped_buffers, torch_options, zero_state, TorchTwin)

DTYPES = (np.float32, np.float64)
N = 4096


def _torch_scalars(dtype):
    """torch keeps scalar state (NAdam's mu_product) in its default dtype;
    optcore keeps it in double: compare float64 runs with float64 scalars."""
    torch.set_default_dtype(torch.float64 if dtype == np.float64 else torch.float32)


def functional(entry, dtype, seed, steps):
    rng = np.random.default_rng(seed)
    opts = draw_options(entry, rng)
    bufs = shaped_buffers(rng, entry, (N,), dtype)
    zero_state(bufs)
    twin = TorchTwin(torch, entry, bufs, opts)
    scalar = 1.0
    for step in range(1, steps + 1):
        new_grads(rng, bufs)
        hp = dict(opts, step=step)
        if entry.scalar_state:
            hp[entry.scalar_state] = scalar
        result = entry.call(entry.fast, bufs, hp)
        if entry.scalar_state:
            scalar = result
        twin.step(bufs["grad"])
    return deviation([bufs["param"]], [p.detach().numpy() for p in twin.params])


def numpy_class(entry, dtype, seed, steps):
    rng = np.random.default_rng(seed)
    opts = torch_options(draw_options(entry, rng))
    param = rng.standard_normal(N).astype(dtype)
    tparam = torch.from_numpy(param.copy())
    opt = getattr(optcore, entry.torch_class)([param], **opts)
    topt = getattr(torch.optim, entry.torch_class)([tparam], foreach=False, **opts)
    for _ in range(steps):
        grad = rng.standard_normal(N).astype(dtype)
        opt.step([grad])
        tparam.grad = torch.from_numpy(grad.copy())
        topt.step()
    return deviation([param], [tparam.numpy()])


def torch_class(entry, dtype, seed, steps):
    import optcore.torch as ot
    import torch_adapter_support as ts
    rng = np.random.default_rng(seed)
    tdtype = torch.float64 if dtype == np.float64 else torch.float32
    name = entry.torch_class
    options = ts.sample_options(name, rng)
    ref_model = ts.make_model(rng, tdtype, table=ts.LARGE_TABLE)
    model = copy.deepcopy(ref_model)
    X, y = ts.make_data(rng, tdtype, table=ts.LARGE_TABLE)
    ref_opt = ts.torch_twin(name, ref_model.parameters(), options)
    opt = getattr(ot, name)(model.parameters(), foreach=False, **options)
    for _ in range(steps):
        ts.step_pair(ref_model, ref_opt, model, opt, X, y)
    return ts.max_rel_dev(list(ref_model.parameters()), list(model.parameters()))


APIS = {"functional": functional, "numpy": numpy_class, "torch": torch_class}


def deviations(api, entry, dtype, steps=100, seeds=10):
    """The deviation of each seed's run, torch single-threaded and in the
    scalar dtype the comparison needs; torch's settings are restored after."""
    default_dtype, threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_num_threads(1)
    _torch_scalars(dtype)
    try:
        return [APIS[api](entry, dtype, seed, steps) for seed in range(seeds)]
    finally:
        torch.set_default_dtype(default_dtype)
        torch.set_num_threads(threads)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api", choices=[*APIS, "all"], default="all")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--seeds", type=int, default=10)
    args = parser.parse_args(argv)
    if args.steps < 1 or args.seeds < 1:
        parser.error("--steps and --seeds must be at least 1")
    apis = list(APIS) if args.api == "all" else [args.api]
    print(f"torch {torch.__version__}, optcore {optcore.__version__}: {args.steps} steps, "
          f"{args.seeds} seeds; largest max|ours - torch| / max|torch|")
    print(f"{'optimizer':<10}" + "".join(f"{api + ' ' + np.dtype(d).name:>22}"
                                         for api in apis for d in DTYPES))
    for entry in TORCH_TWINS:
        cells = []
        for api in apis:
            for dtype in DTYPES:
                worst = max(deviations(api, entry, dtype, args.steps, args.seeds))
                cells.append(f"{worst:22.2e}")
        print(f"{entry.torch_class:<10}" + "".join(cells))


if __name__ == "__main__":
    main()
