"""pytest-benchmark suites: optcore next to the NumPy reference and torch.optim,
per kernel and size.

    pytest benchmarks --benchmark-only --benchmark-group-by=group
    pytest benchmarks --benchmark-disable        # smoke run: each case once

Groups are "<kernel> <dtype> n=<size> threads=<t>" (and "... 100x1024" for
multi-tensor calls); the test name carries the implementation. The cases come
from the bench command's kernel table (optcore.cli.bench.KERNELS), so a kernel
added there is benchmarked here too. OPTCORE_BENCH_SIZES (comma-separated, 2**k
accepted) replaces the default sizes. Timings are reported, never asserted.
"""

import os

import numpy as np
import pytest

import optcore
from optcore.cli import _args, bench

SIZES = _args.int_list("sizes")(os.environ.get("OPTCORE_BENCH_SIZES", "2**10,2**16,2**20"))
DTYPES = [np.float32, np.float64]
THREADS = sorted({1, optcore.get_num_threads()})
IMPLS = ["optcore", "reference", *bench.TORCH_IMPLS]
KERNELS = bench.available_kernels()


@pytest.fixture(scope="module")
def torch_module():
    return bench.import_torch()


def _run(benchmark, kernel, impl, inputs, lists, threads, torch_module, group):
    if impl in bench.TORCH_IMPLS and torch_module is None:
        pytest.skip("torch not installed")
    with bench.Threads(threads, torch_module if impl in bench.TORCH_IMPLS else None):
        fn = bench.make_call(kernel, impl, inputs, lists=lists, torch=torch_module)
        if fn is None:
            pytest.skip(f"{impl} has no {kernel.name} for these inputs")
        benchmark.group = group
        benchmark.extra_info.update(
            kernel=kernel.name, impl=impl, threads=threads,
            bytes=kernel.bytes_per_element(inputs[kernel.buffers[0]][0].itemsize)
            * sum(a.size for a in inputs[kernel.buffers[0]]))
        benchmark(fn)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("threads", THREADS, ids=lambda t: f"{t}thr")
@pytest.mark.parametrize("n", SIZES, ids=bench.pow2)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("kernel", KERNELS, ids=lambda k: k.name)
def test_kernel(benchmark, kernel, dtype, n, threads, impl, torch_module):
    if impl == "reference" and threads != THREADS[0]:
        pytest.skip("the reference is single-threaded NumPy: measured once")
    inputs = bench.make_inputs(kernel, [n], dtype, seed=n)
    _run(benchmark, kernel, impl, inputs, False, threads, torch_module,
         f"{kernel.name} {np.dtype(dtype).name} n={bench.pow2(n)} threads={threads}")


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("threads", THREADS, ids=lambda t: f"{t}thr")
@pytest.mark.parametrize("kernel", [k for k in KERNELS if k.multi], ids=lambda k: k.name)
def test_multi_tensor(benchmark, kernel, threads, impl, torch_module):
    inputs = bench.make_inputs(kernel, [1024] * 100, np.float32, seed=100)
    _run(benchmark, kernel, impl, inputs, True, threads, torch_module,
         f"{kernel.name} float32 100x1024 threads={threads}")
