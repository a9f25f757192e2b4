"""Per-step overhead of small models: one Adam step over few, small tensors,
where the step is mostly bookkeeping, not arithmetic.

Two cases: the seed's MLP (10 -> ReLU(10) -> 1: 4 tensors, 121 elements) and
100 tensors of 64 elements. Rows: the functional ``optcore.adam_step`` over the
arrays (the floor), the NumPy class ``optcore.Adam.step``, ``optcore.torch.Adam``
and ``torch.optim.Adam(fused=True)``. One thread; medians of many steps, taken
in turns so that a change of the machine's load hits every row alike. The
targets are printed next to the numbers (never asserted):

- NumPy class <= 3 us on the MLP, <= 2x the functional call on 100 tensors;
- optcore.torch <= 0.5x torch's fused Adam on both.

    python benchmarks/bench_step_overhead.py [--repeat 20000]
"""

import argparse
import os
import statistics
import time

import numpy as np
import torch

import optcore
import optcore.torch as ot


def shapes(case):
    if case == "seed MLP":
        return [(10, 10), (10,), (1, 10), (1,)]
    return [(64,)] * 100


def rows(case):
    """{label: a no-argument callable taking one step}."""
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in shapes(case)]
    grads = [rng.standard_normal(a.shape).astype(np.float32) * 1e-2 for a in arrays]

    params = [a.copy() for a in arrays]
    m = [np.zeros_like(a) for a in arrays]
    v = [np.zeros_like(a) for a in arrays]
    count = [0]

    def functional():
        count[0] += 1
        optcore.adam_step(params, grads, m, v, step=count[0], lr=1e-3)

    numpy_opt = optcore.Adam([a.copy() for a in arrays], lr=1e-3)

    def numpy_class():
        numpy_opt.step(grads)

    out = {"functional optcore.adam_step": functional, "optcore.Adam.step": numpy_class}
    for label, make in (("optcore.torch.Adam.step", lambda ps: ot.Adam(ps, lr=1e-3)),
                        ("torch Adam(fused=True)",
                         lambda ps: torch.optim.Adam(ps, lr=1e-3, fused=True))):
        ps = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in arrays]
        for p, g in zip(ps, grads):
            p.grad = torch.from_numpy(g.copy())
        out[label] = make(ps).step
    return out


def measure(case, repeat):
    steps = rows(case)
    for fn in steps.values():
        for _ in range(50):
            fn()
    times = {label: [] for label in steps}
    clock = time.perf_counter
    batch = 10
    for _ in range(repeat // batch):
        for label, fn in steps.items():
            t0 = clock()
            for _ in range(batch):
                fn()
            times[label].append((clock() - t0) / batch)
    return {label: statistics.median(t) * 1e6 for label, t in times.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=20000)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    optcore.set_num_threads(1)
    print(f"1 thread, medians of {args.repeat} steps (us per step); load average "
          f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for case in ("seed MLP", "100 x 64"):
        us = measure(case, args.repeat)
        print(f"\n{case}")
        for label, t in us.items():
            print(f"  {label:32s} {t:8.2f}")
        functional, numpy_class = us["functional optcore.adam_step"], us["optcore.Adam.step"]
        fused, ours = us["torch Adam(fused=True)"], us["optcore.torch.Adam.step"]
        if case == "seed MLP":
            print(f"  target NumPy class <= 3 us: {numpy_class:.2f} us "
                  f"({'met' if numpy_class <= 3 else 'not met'})")
        else:
            ratio = numpy_class / functional
            print(f"  target NumPy class <= 2x functional: {ratio:.2f}x "
                  f"({'met' if ratio <= 2 else 'not met'})")
        ratio = ours / fused
        print(f"  target optcore.torch <= 0.5x torch fused: {ratio:.2f}x "
              f"({'met' if ratio <= 0.5 else 'not met'})")


if __name__ == "__main__":
    main()
