"""Every kernel and reduction gives the same bits for any thread count and on
every repetition (static partitions, fixed-order block sums), for every option,
single and multi-tensor, with the parallel path forced on."""

import numpy as np
import pytest

import optcore
from kernel_table import KERNELS, hyper_variants, make_buffers, run_steps

# Sizes spanning many partitions and blocks, tensors of uneven sizes, and the
# threshold forced to 0 so that even the small ones run in parallel.
SHAPES = {"single": [(300, 257)], "multi": [(300, 70), 5, 33_001, (17, 3)]}


def _sizes(shapes):
    return [int(np.prod(s)) for s in shapes]


def _run(entry, hp, dtype, layout, threads, seed):
    rng = np.random.default_rng(seed)
    bufs = make_buffers(entry, hp, rng, _sizes(SHAPES[layout]), dtype,
                        as_list=layout == "multi")
    optcore.set_num_threads(threads)
    try:
        results = run_steps(entry, bufs, hp, steps=3 if "step" in hp else 1)
    finally:
        optcore.set_num_threads(None)
    return bufs, results


def _bits(x):
    if x is None:
        return None
    if isinstance(x, (list, tuple)):
        return [_bits(y) for y in x]
    if isinstance(x, float):
        return np.float64(x).tobytes()
    return np.asarray(x).tobytes()


@pytest.fixture
def threshold_zero():
    old = optcore.set_parallel_threshold(0)
    yield
    optcore.set_parallel_threshold(old)


CASES = [(e, layout) for e in KERNELS for layout in (["single", "multi"] if e.multi
                                                     else ["single"])]
THREADS = (1, 2, 2, 3)           # 2 twice: repeated runs


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("entry,layout", CASES, ids=lambda x: getattr(x, "name", x))
def test_bitwise_identical_for_1_2_3_threads_and_repeats(entry, dtype, layout,
                                                          threshold_zero):
    for i, hp in enumerate(hyper_variants(entry)):
        runs = [_run(entry, hp, dtype, layout, threads, seed=i) for threads in THREADS]
        ref_bufs, ref_results = runs[0]
        for (bufs, results), threads in zip(runs[1:], THREADS[1:]):
            for name in bufs:
                assert _bits(bufs[name]) == _bits(ref_bufs[name]), (hp, name, threads)
            assert _bits(results) == _bits(ref_results), (hp, threads)


def test_reduction_order_is_fixed_not_thread_dependent():
    # The loss of a badly conditioned sum (large terms cancelling small ones)
    # differs between summation orders, so equal bits mean one fixed order.
    rng = np.random.default_rng(7)
    n = 3_000_017
    pred = (rng.standard_normal(n) * np.where(rng.random(n) < 0.01, 1e6, 1e-3))
    target = np.zeros(n)
    losses = set()
    for threads in (1, 2, 3, 4):
        optcore.set_num_threads(threads)
        try:
            losses.add(optcore.mse_loss(pred, target, reduction="sum"))
        finally:
            optcore.set_num_threads(None)
    assert len(losses) == 1
    naive = float(np.sum(pred.astype(np.float64) ** 2))
    assert losses.pop() == pytest.approx(naive, rel=1e-12)
