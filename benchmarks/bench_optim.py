"""optimizer.step() of the stateful NumPy optimizers (optcore.Adam) against
the bare multi-tensor kernel call they wrap, the NumPy reference, and
torch.optim.Adam (foreach=False and fused=True) on the same float32 data.

Two models: the seed MLP (10 -> 64 -> 1: four small tensors, where per-call
overhead dominates) and 100 tensors of 1024 to 1M elements (log-uniform,
~40 M elements in all, where memory bandwidth dominates).

    pytest benchmarks/bench_optim.py                 # pytest-benchmark tables
    python benchmarks/bench_optim.py                 # medians, one line each
"""

import statistics
import time

import numpy as np
import pytest

import optcore
from optcore import reference

MODELS = ("mlp", "100x1k-1M")


def model_shapes(name):
    if name == "mlp":
        return [(10, 64), (64,), (64, 1), (1,)]
    rng = np.random.default_rng(0)
    return [(int(n),) for n in np.exp(rng.uniform(np.log(1024), np.log(2**20), 100))]


def make_step(impl, shapes):
    """A zero-argument callable doing one optimizer step of ``impl``."""
    rng = np.random.default_rng(1)
    params = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    if impl == "optcore.Adam":
        opt = optcore.Adam(params, lr=1e-4)
        return lambda: opt.step(grads)
    if impl in ("optcore.adam_step", "reference.adam_step"):
        fn = optcore.adam_step if impl == "optcore.adam_step" else reference.adam_step
        m = [np.zeros_like(p) for p in params]
        v = [np.zeros_like(p) for p in params]
        count = [0]

        def step():
            count[0] += 1
            fn(params, grads, m, v, step=count[0], lr=1e-4)
        return step
    import torch
    tparams = [torch.from_numpy(p) for p in params]
    for tp, g in zip(tparams, grads):
        tp.grad = torch.from_numpy(g)
    kw = {"fused": True} if impl == "torch fused" else {"foreach": False}
    opt = torch.optim.Adam(tparams, lr=1e-4, **kw)
    return opt.step


IMPLS = ["optcore.Adam", "optcore.adam_step", "reference.adam_step", "torch foreach=False",
         "torch fused"]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("model", MODELS)
def test_adam_step(benchmark, model, impl):
    if impl.startswith("torch"):
        pytest.importorskip("torch")
    step = make_step(impl, model_shapes(model))
    step()
    benchmark(step)


def main():
    for model in MODELS:
        shapes = model_shapes(model)
        total = sum(int(np.prod(s)) for s in shapes)
        print(f"{model}: {len(shapes)} tensors, {total:,} float32 elements")
        for impl in IMPLS:
            try:
                step = make_step(impl, shapes)
            except ImportError:
                continue
            step()
            reps = 2000 if model == "mlp" else 5
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                for _ in range(reps):
                    step()
                times.append((time.perf_counter() - t0) / reps)
            print(f"  {impl:22s} {statistics.median(times) * 1e6:10.1f} us")


if __name__ == "__main__":
    main()
