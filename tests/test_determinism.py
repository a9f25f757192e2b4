"""Results do not depend on the thread count, on repetition, nor on concurrent
callers (docs/contract.md §7): static partitions and fixed-order block sums."""

import threading

import numpy as np
import pytest

import optcore

from registry import (FAMILIES, KERNELS, copy_buffers, flat_arrays, hyper_variants,
    make_buffers, new_grads, run_steps, shaped_buffers)
from support import DTYPES, assert_same_bits, random_array


# ==== SGD, Adam, AdamW: thread counts and concurrent callers =================

THREADS = [1, 2, 3]
T = optcore.get_parallel_threshold()
LARGE = 6 * T + 3                      # far above the single-thread threshold
# Total ~2.4 T: with 2 threads the boundary (~1.2 T) falls inside the third
# tensor, after a partition that holds the first two whole; with 3 threads
# the boundaries fall inside the first and the third tensor.
STRADDLING = [(T - 2767,), (3,), (70, (T + 17_142) // 70), (17,)]

OPTS = {
    "sgd": [dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01, maximize=True),
            dict(lr=0.1, momentum=0.5, dampening=0.3)],
    "adam": [dict(lr=0.01, amsgrad=True, weight_decay=0.01, maximize=True),
             dict(lr=0.01, beta1=0.3, weight_decay=0.01, decoupled_weight_decay=True)],
    "adamw": [dict(lr=0.01, amsgrad=True, beta1=0.4)],
}
CASES = [pytest.param(f, o, id=f"{f.short}-{i}") for f in FAMILIES
         for i, o in enumerate(OPTS[f.short])]


def run_with_threads(family, bufs, grads, opts, threads, first_step=1):
    out = copy_buffers(bufs)
    optcore.set_num_threads(threads)
    try:
        for i, g in enumerate(grads):
            out["grad"] = g
            family.run(True, out, first_step + i, opts)
    finally:
        optcore.set_num_threads(None)
    return out


def _grad_sequence(rng, bufs, steps):
    seq = []
    for _ in range(steps):
        b = copy_buffers(bufs)
        new_grads(rng, b)
        seq.append(b["grad"])
    return seq


def assert_all_same(results):
    first = flat_arrays(results[0])
    for other in results[1:]:
        for (label, a), (_, b) in zip(first, flat_arrays(other)):
            assert_same_bits(b, a, what=label)


@pytest.mark.parametrize("shapes", [(LARGE,), STRADDLING], ids=["single", "straddling"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("family,opts", CASES)
def test_steps_bitwise_identical_for_any_thread_count(family, opts, dtype, shapes, rng):
    bufs = shaped_buffers(rng, family, list(shapes) if isinstance(shapes, list) else shapes,
                        dtype)
    grads = _grad_sequence(rng, bufs, 3)
    assert_all_same([run_with_threads(family, bufs, grads, opts, n) for n in THREADS])


@pytest.mark.parametrize("size", [1, 7, 16, 17, 33, 100, 1025])
@pytest.mark.parametrize("family,opts", CASES)
def test_tiny_calls_split_over_threads(family, opts, size, rng):
    # With the threshold at 0 even tiny calls are split (into aligned
    # partitions, never more threads than partitions): same bits.
    old = optcore.set_parallel_threshold(0)
    try:
        bufs = shaped_buffers(rng, family, [(size,), (3,), (size, 2)], np.float32)
        grads = _grad_sequence(rng, bufs, 2)
        assert_all_same([run_with_threads(family, bufs, grads, opts, n) for n in THREADS])
    finally:
        optcore.set_parallel_threshold(old)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("size", [5 * 4096 + 7, 1_000_003])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_mse_bitwise_identical_for_any_thread_count(dtype, size, reduction, rng):
    pred, target = random_array(rng, size, dtype), random_array(rng, size, dtype)
    results = []
    for n in THREADS:
        optcore.set_num_threads(n)
        try:
            loss, grad = optcore.mse_loss_grad(pred, target, reduction=reduction)
            results.append((np.asarray(optcore.mse_loss(pred, target, reduction)),
                            np.asarray(loss), grad))
        finally:
            optcore.set_num_threads(None)
    for loss_only, loss, grad in results[1:]:
        assert_same_bits(loss_only, results[0][0], what="mse_loss")
        assert_same_bits(loss, results[0][1], what="mse_loss_grad loss")
        assert_same_bits(grad, results[0][2], what="mse_loss_grad grad")


# ---- concurrent callers --------------------------------------------------------

def _in_threads(jobs):
    """Run the callables concurrently (released together); re-raise failures."""
    barrier = threading.Barrier(len(jobs))
    errors = []

    def run(job):
        try:
            barrier.wait()
            job()
        except BaseException as exc:          # reported in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


@pytest.mark.parametrize("omp_threads", [1, 2])
@pytest.mark.parametrize("family,opts", CASES)
def test_concurrent_step_calls_equal_serial_calls(family, opts, omp_threads, rng):
    # Four Python threads, each stepping its own buffers (above the threshold:
    # each call releases the GIL and may open its own OpenMP team).
    callers = 4
    starts = [shaped_buffers(rng, family, [(2 * T + 5,), (31, 7)], np.float32)
              for _ in range(callers)]
    grads = [_grad_sequence(rng, b, 4) for b in starts]
    serial = [run_with_threads(family, b, g, opts, omp_threads)
              for b, g in zip(starts, grads)]
    concurrent = [copy_buffers(b) for b in starts]

    def job(i):
        def steps():
            for s, g in enumerate(grads[i]):
                concurrent[i]["grad"] = g
                family.run(True, concurrent[i], s + 1, opts)
        return steps

    optcore.set_num_threads(omp_threads)
    try:
        _in_threads([job(i) for i in range(callers)])
    finally:
        optcore.set_num_threads(None)
    for a, b in zip(serial, concurrent):
        assert_all_same([a, b])


def test_concurrent_mse_calls_equal_serial_calls(rng):
    callers = 4
    inputs = [(random_array(rng, 3 * T + 1, np.float64),
               random_array(rng, 3 * T + 1, np.float64)) for _ in range(callers)]
    serial = [optcore.mse_loss_grad(p, t, reduction="sum") for p, t in inputs]
    results = [None] * callers

    def job(i):
        def run():
            out = np.empty_like(inputs[i][0])
            for _ in range(5):
                results[i] = optcore.mse_loss_grad(*inputs[i], reduction="sum", out=out)
        return run

    _in_threads([job(i) for i in range(callers)])
    for (loss, grad), (sloss, sgrad) in zip(results, serial):
        assert loss == sloss
        assert_same_bits(grad, sgrad)


# ==== every kernel of the registry: 1, 2, 3 threads and repeats ==============

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


CASES_ALL = [(e, layout) for e in KERNELS for layout in (["single", "multi"] if e.multi
                                                     else ["single"])]
THREADS_ALL = (1, 2, 2, 3)           # 2 twice: repeated runs


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("entry,layout", CASES_ALL, ids=lambda x: getattr(x, "name", x))
def test_bitwise_identical_for_1_2_3_threads_and_repeats(entry, dtype, layout,
                                                          threshold_zero):
    for i, hp in enumerate(hyper_variants(entry)):
        runs = [_run(entry, hp, dtype, layout, threads, seed=i) for threads in THREADS_ALL]
        ref_bufs, ref_results = runs[0]
        for (bufs, results), threads in zip(runs[1:], THREADS_ALL[1:]):
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
