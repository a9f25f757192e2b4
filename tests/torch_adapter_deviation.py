"""Print how far optcore.torch's optimizers drift from torch.optim's
(foreach=False) over 100 steps on the adapter tests' torch.nn model, for
random options: each class, float32 and float64.

    PYTHONPATH=$PWD python tests/torch_adapter_deviation.py [--draws 10] [--steps 100]

"lockstep": both runs on one gradient sequence (what test_torch_adapter.py's
trajectory test bounds); "torch 1ulp": torch.optim against itself started one
ulp away, on the same gradients (how far last-bit differences carry in these
runs: the test allows max(TORCH_RTOL, 100 x this)); "free": each run on its
own gradients, as a training script (ReLU kinks amplify last-bit differences
in float32). Deviation = max over tensors of max|optcore - torch| / max|torch|.
Not a test: a record for reports.
"""

import argparse
import copy

import numpy as np
import torch

import optcore
import optcore.torch as ot
import torch_adapter_support as ts


def run(name, dtype, rng, steps, lockstep):
    """(optcore's deviation from torch, torch's from itself one ulp away or
    None when not lockstep, options)."""
    options = ts.sample_options(name, rng)
    ref_model = ts.make_model(rng, dtype, table=ts.LARGE_TABLE)
    model = copy.deepcopy(ref_model)
    probe = ts.nudged(ref_model)
    X, y = ts.make_data(rng, dtype, table=ts.LARGE_TABLE)
    ref_opt = ts.torch_twin(name, ref_model.parameters(), options)
    opt = getattr(ot, name)(model.parameters(), foreach=False, **options)
    probe_opt = ts.torch_twin(name, probe.parameters(), options)
    for _ in range(steps):
        if lockstep:
            ts.step_pair(ref_model, ref_opt, model, opt, X, y)
            ts.copy_grads(ref_model, probe)
            probe_opt.step()
        else:
            ts.train_step(ref_model, ref_opt, X, y)
            ts.train_step(model, opt, X, y)
    ref = list(ref_model.parameters())
    dev = ts.max_rel_dev(ref, list(model.parameters()))
    return dev, ts.max_rel_dev(ref, list(probe.parameters())) if lockstep else None, options


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=10)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(args.seed)
    dtypes = (torch.float32, torch.float64)
    print(f"torch {torch.__version__}, optcore {optcore.__version__}: {args.steps} steps, "
          f"{args.draws} random option draws per cell, largest deviation")
    modes = ("lockstep", "torch 1ulp", "free")
    print(f"{'class':<10}" + "".join(f"{str(d)[6:] + ' ' + mode:>20}"
                                     for d in dtypes for mode in modes))
    for name in ts.TORCH_TWINS:
        cells = []
        for dtype in dtypes:
            lock = [run(name, dtype, rng, args.steps, True) for _ in range(args.draws)]
            free = [run(name, dtype, rng, args.steps, False) for _ in range(args.draws)]
            for worst in (max(r[0] for r in lock), max(r[1] for r in lock),
                          max(r[0] for r in free)):
                cells.append(f"{worst:20.2e}")
        print(f"{name:<10}" + "".join(cells))


if __name__ == "__main__":
    main()
