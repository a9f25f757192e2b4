"""optcore.adam_step against DeepSpeedCPUAdam's step on one float32 tensor.

    PYTHONPATH=src python benchmarks/adam_vs_deepspeed.py [--min 14] [--max 22]
        [--threads 1,2] [--reps 300]

Both run in the same process on the same sizes; the thread count is set for
optcore with optcore.set_num_threads and for DeepSpeed (its OpenMP loop runs
in torch's runtime) with torch.set_num_threads. Each row is the median of
``--reps`` timed calls, taken in interleaved rounds (optcore, DeepSpeed,
optcore, ...) so that a change in the machine's load hits both. DeepSpeed is
a peer for measurement only: without it (or without its native op) its
column is "-".
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Callable

import numpy as np

import optcore


def _deepspeed(torch: Any, p: np.ndarray, g: np.ndarray) -> Callable[[], Any] | None:
    try:
        from deepspeed.ops.adam import DeepSpeedCPUAdam
    except Exception:
        return None
    t = torch.from_numpy(p)
    t.grad = torch.from_numpy(g)
    opt = DeepSpeedCPUAdam([t], lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    opt.step()
    return opt.step


def _times(calls: list[Callable[[], Any]], reps: int, per_round: int) -> list[float]:
    samples: list[list[float]] = [[] for _ in calls]
    for _ in range(max(1, reps // per_round)):
        for k, call in enumerate(calls):
            for _ in range(per_round):
                t0 = time.perf_counter_ns()
                call()
                samples[k].append(time.perf_counter_ns() - t0)
    return [statistics.median(s) / 1e3 for s in samples]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--min", type=int, default=14)
    ap.add_argument("--max", type=int, default=22)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--reps", type=int, default=300)
    args = ap.parse_args()
    import torch

    rng = np.random.default_rng(0)
    print(f"optcore kernels from {optcore.kernels.__path__[0]}")
    print("| n | thr | optcore us | deepspeed us | x deepspeed |")
    print("|---:|---:|---:|---:|---:|")
    for e in range(args.min, args.max + 1):
        n = 2 ** e
        bufs = [rng.standard_normal(n).astype(np.float32) for _ in range(3)]
        bufs.append(rng.random(n).astype(np.float32))
        p, g, m, v = bufs
        steps = [0]

        def ours() -> None:
            steps[0] += 1
            optcore.adam_step(p, g, m, v, step=steps[0])

        ds_p, ds_g = p.copy(), g.copy()
        ds = _deepspeed(torch, ds_p, ds_g)
        reps = max(40, args.reps * 2 ** 18 // max(n, 2 ** 18)) if e > 18 else args.reps
        for thr in (int(x) for x in args.threads.split(",")):
            optcore.set_num_threads(thr)
            torch.set_num_threads(thr)
            calls = [ours] + ([ds] if ds is not None else [])
            for c in calls:                      # warm up at this thread count
                for _ in range(5):
                    c()
            res = _times(calls, reps, per_round=10)
            if ds is None:
                print(f"| 2^{e} | {thr} | {res[0]:.2f} | - | - |")
            else:
                print(f"| 2^{e} | {thr} | {res[0]:.2f} | {res[1]:.2f} | {res[1] / res[0]:.2f}x |")


if __name__ == "__main__":
    main()
