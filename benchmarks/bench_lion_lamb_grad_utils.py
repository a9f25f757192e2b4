"""Lion, LAMB and the gradient utilities: optcore (1 and 2 threads) against
the NumPy reference and torch (when installed), with the memory traffic each
call needs expressed as GB/s. Medians of repeated calls, one run.

    python benchmarks/bench_lion_lamb_grad_utils.py [--n 10000000] [--dtype float32]
"""

import argparse
import statistics
import time

import numpy as np

import optcore
import optcore.reference as ref

try:
    import torch
except ImportError:            # torch columns are left out
    torch = None


def _median_time(fn, repeats):
    fn()                       # warm-up (page faults, thread start)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _cases(n, dtype, rng):
    x = rng.standard_normal(n).astype(dtype)
    p, g, m = x.copy(), rng.standard_normal(n).astype(dtype), 0.1 * x
    v = np.abs(0.01 * x)
    grads = [rng.standard_normal(n).astype(dtype)]
    tg = [torch.from_numpy(a.copy()) for a in grads] if torch else None
    tparams = []
    if torch:
        for a in tg:
            q = torch.nn.Parameter(torch.zeros_like(a))
            q.grad = a
            tparams.append(q)
    found = torch.zeros(1) if torch else None
    inv = torch.ones(1) if torch else None
    item = np.dtype(dtype).itemsize

    def halving(clip, norm0):
        # Each call clips to half the current norm, so every call scales.
        state = {"max": norm0}

        def call():
            state["max"] *= 0.5
            clip(state["max"])
        return call

    norm0 = optcore.global_norm(grads)
    tgrads_norm0 = norm0          # torch works on its own copy of the gradients
    # name, bytes moved per element, optcore call, reference call, torch call
    return [
        ("lion_step", 5 * item,
         lambda: optcore.lion_step(p, g, m, step=1, lr=1e-4),
         lambda: ref.lion_step(p, g, m, step=1, lr=1e-4), None),
        ("lamb_step", 10 * item,
         lambda: optcore.lamb_step(p, g, m, v, step=1),
         lambda: ref.lamb_step(p, g, m, v, step=1), None),
        ("global_norm p=2", item,
         lambda: optcore.global_norm(grads),
         lambda: ref.global_norm(grads),
         (lambda: torch.nn.utils.get_total_norm(tg, 2.0)) if torch else None),
        ("global_norm p=inf", item,
         lambda: optcore.global_norm(grads, np.inf),
         lambda: ref.global_norm(grads, np.inf),
         (lambda: torch.nn.utils.get_total_norm(tg, np.inf)) if torch else None),
        ("clip_grad_norm_ (clips)", 3 * item,
         halving(lambda mx: optcore.clip_grad_norm_(grads, mx), norm0),
         halving(lambda mx: ref.clip_grad_norm_(grads, mx), norm0),
         halving(lambda mx: torch.nn.utils.clip_grad_norm_(tparams, mx), tgrads_norm0)
         if torch else None),
        ("clip_grad_value_", 2 * item,
         lambda: optcore.clip_grad_value_(grads, 1.0),
         lambda: ref.clip_grad_value_(grads, 1.0),
         (lambda: torch.nn.utils.clip_grad_value_(tparams, 1.0)) if torch else None),
        ("all_finite (all finite)", item,
         lambda: optcore.all_finite(grads),
         lambda: ref.all_finite(grads),
         (lambda: bool(torch.isfinite(tg[0]).all())) if torch else None),
        ("unscale_ (inv_scale 1)", item,
         lambda: optcore.unscale_(grads, 1.0),
         lambda: ref.unscale_(grads, 1.0),
         (lambda: torch._amp_foreach_non_finite_check_and_unscale_(tg, found, inv))
         if torch else None),
    ]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000_000)
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--repeats", type=int, default=11)
    args = ap.parse_args(argv)
    dtype = np.dtype(args.dtype).type
    rng = np.random.default_rng(0)
    print(f"n = {args.n:,} {args.dtype}; times in ms (GB/s of the memory traffic)")
    head = f"{'':26}{'optcore 1t':>18}{'optcore 2t':>18}{'reference':>18}"
    print(head + (f"{'torch 1t':>18}" if torch else ""))
    for name, nbytes, fast, slow, tfn in _cases(args.n, dtype, rng):
        cols = []
        for threads in (1, 2):
            optcore.set_num_threads(threads)
            cols.append(_median_time(fast, args.repeats))
        optcore.set_num_threads(None)
        cols.append(_median_time(slow, max(3, args.repeats // 3)))
        if tfn is not None:
            torch.set_num_threads(1)
            cols.append(_median_time(tfn, args.repeats))
        cells = "".join(f"{t * 1e3:9.2f} ({nbytes * args.n / t / 1e9:5.1f})" for t in cols)
        print(f"{name:26}{cells}")


if __name__ == "__main__":
    main()
