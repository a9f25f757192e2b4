"""Print how far optcore's SGD / Adam / AdamW trajectories drift from
torch.optim's (foreach=False) after 100 steps, over random options.

    PYTHONPATH=. python tests/torch_deviation.py [--draws 20] [--steps 100]

Deviation = max |optcore - torch| / max |torch| over all parameter elements
(the quantity test_torch_parity.py bounds by support.TORCH_RTOL). Not a test:
a record for reports.
"""

import argparse

import numpy as np

from support import DTYPES, TORCH_RTOL
from step_cases import FAMILIES, deviation, draw_options, torch_trajectory


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=20)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import torch

    rng = np.random.default_rng(args.seed)
    shapes = [(10_000,), (64, 65), (3,)]
    print(f"torch {torch.__version__}, {args.steps} steps, {args.draws} random option "
          f"draws per row, params {shapes}")
    print(f"{'optimizer':<8} {'dtype':<8} {'max dev':>10} {'median':>10} "
          f"{'bitwise':>8} {'bound':>8}  worst options")
    for family in FAMILIES:
        for dtype in DTYPES:
            devs = []
            for _ in range(args.draws):
                opts = draw_options(rng, family)
                for _, bufs, twin in torch_trajectory(torch, family, opts, dtype, shapes,
                                                      args.steps, rng):
                    pass
                devs.append((deviation(bufs["param"], [p.numpy() for p in twin.params]),
                             opts))
            values = np.array([d for d, _ in devs])
            worst = max(devs, key=lambda d: d[0])
            print(f"{family.name:<8} {np.dtype(dtype).name:<8} {values.max():>10.2e} "
                  f"{np.median(values):>10.2e} {int((values == 0).sum()):>4}/{len(values):<3} "
                  f"{TORCH_RTOL[dtype]:>8.0e}  {worst[1]}")


if __name__ == "__main__":
    main()
