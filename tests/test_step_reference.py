"""sgd_step / adam_step / adamw_step against optcore.reference.

Fresh random inputs, both dtypes, sizes around the vector width and the
parallel threshold plus a large one, every option combination, single and
multi-tensor calls, several consecutive steps with the state carried, 1 and 2
threads, and hypothesis over the continuous option space.

The kernels and the reference perform the same IEEE operations (+, -, *, /,
sqrt, max) in the same order and dtype, with the per-step scalars computed the
same way in double, and the build forbids contraction into fused multiply-adds
(-ffp-contract=off): the results are therefore compared bit for bit, which is
also what every run so far has shown. (support.REF_RTOL is the looser table for
kernels whose reductions sum in another order.)
"""

import array

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import optcore
from support import DTYPES, LARGE, SIZES, assert_same_bits
from step_cases import (ADAM, ADAMW, FAMILIES, SGD, copy_buffers, family_cases,
                        flat_arrays, make_buffers, new_grads)

STEPS = 3

# A multi-tensor call: mixed sizes, an empty tensor, 2-D and 3-D shapes, and a
# total above the parallel threshold so that thread partitions cut tensors.
MIXED_SHAPES = [(1025,), (0,), (7, 9), (40, 1000), (16,), (3, 5, 7), (1,)]
assert sum(int(np.prod(s)) for s in MIXED_SHAPES) > optcore.get_parallel_threshold()


def run_both(rng, family, bufs, opts, steps):
    """Run kernel and reference side by side for consecutive ``steps``, each on
    its own copy of the buffers, with a fresh gradient per step; check every
    buffer after every step."""
    fast = copy_buffers(bufs)
    ref = copy_buffers(bufs)
    for step in steps:
        new_grads(rng, fast)
        ref["grad"] = fast["grad"]
        family.call(True, fast, step, opts)
        family.call(False, ref, step, opts)
        for (label, a), (_, b) in zip(flat_arrays(fast), flat_arrays(ref)):
            assert_same_bits(a, b, what=f"{family.name} {label} after step {step} {opts}")
    return fast


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("family,opts", family_cases())
def test_single_tensor_every_option(family, opts, dtype, size, num_threads, rng):
    bufs = make_buffers(rng, family, (size,), dtype)
    run_both(rng, family, bufs, opts, range(1, STEPS + 1))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("family,opts", family_cases())
def test_multi_tensor_every_option(family, opts, dtype, num_threads, rng):
    bufs = make_buffers(rng, family, MIXED_SHAPES, dtype)
    out = run_both(rng, family, bufs, opts, range(1, STEPS + 1))
    # Shapes are kept (the kernel works on the flat buffers in place).
    assert [a.shape for a in out["param"]] == MIXED_SHAPES


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("family,opts", [
    (SGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01, maximize=True)),
    (SGD, dict(lr=0.1, momentum=0.5, dampening=0.2, weight_decay=0.01)),
    (ADAM, dict(lr=0.01, beta1=0.9, weight_decay=0.01, amsgrad=True, maximize=True)),
    (ADAM, dict(lr=0.01, beta1=0.2, weight_decay=0.01, decoupled_weight_decay=True)),
    (ADAMW, dict(lr=0.01, beta1=0.9, amsgrad=True)),
], ids=["sgd-nesterov", "sgd-dampening", "adam-amsgrad", "adam-decoupled-b1low",
        "adamw-amsgrad"])
def test_large(family, opts, dtype, rng):
    optcore.set_num_threads(2)
    try:
        bufs = make_buffers(rng, family, (LARGE,), dtype)
        run_both(rng, family, bufs, opts, (1, 2))
    finally:
        optcore.set_num_threads(None)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_state_carried_from_a_late_step(family, dtype, rng):
    # Start at step 1000 with random state, as if resumed from a checkpoint.
    opts = dict(lr=0.01, weight_decay=0.01, maximize=True)
    opts.update(dict(momentum=0.9) if family is SGD else dict(amsgrad=True))
    bufs = make_buffers(rng, family, [(33,), (4, 300)], dtype)
    run_both(rng, family, bufs, opts, range(1000, 1005))


@pytest.mark.parametrize("beta1", [0.0, 0.5, np.nextafter(0.5, 0), np.nextafter(0.5, 1)],
                         ids=["0", "0.5", "below-0.5", "above-0.5"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("family", [ADAM, ADAMW], ids=lambda f: f.name)
def test_lerp_weight_edges(family, dtype, beta1, rng):
    # torch.lerp switches formula at weight (1 - beta1) == 0.5 exactly; the two
    # formulas round differently, so the branch taken shows in the bits.
    bufs = make_buffers(rng, family, MIXED_SHAPES, dtype)
    run_both(rng, family, bufs, dict(lr=0.01, beta1=float(beta1), amsgrad=True), (1, 2, 3))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("family,opts", family_cases())
def test_list_call_equals_one_call_per_tensor(family, opts, dtype, rng):
    # One multi-tensor call gives the same bits as one call per tensor.
    bufs = make_buffers(rng, family, MIXED_SHAPES, dtype)
    per_tensor = copy_buffers(bufs)
    for step in (1, 2):
        new_grads(rng, bufs)
        per_tensor["grad"] = bufs["grad"]
        family.call(True, bufs, step, opts)
        for i in range(len(MIXED_SHAPES)):
            family.call(True, {k: v[i] for k, v in per_tensor.items()}, step, opts)
    for (label, a), (_, b) in zip(flat_arrays(bufs), flat_arrays(per_tensor)):
        assert_same_bits(a, b, what=label)


def test_tuple_of_arrays_is_a_multi_tensor_call(rng):
    bufs = make_buffers(rng, ADAM, [(5,), (9,)], np.float32)
    ref = copy_buffers(bufs)
    optcore.adam_step(tuple(bufs["param"]), tuple(bufs["grad"]), tuple(bufs["exp_avg"]),
                      tuple(bufs["exp_avg_sq"]), step=1)
    optcore.reference.adam_step(ref["param"], ref["grad"], ref["exp_avg"],
                                ref["exp_avg_sq"], step=1)
    for (label, a), (_, b) in zip(flat_arrays(bufs), flat_arrays(ref)):
        assert_same_bits(a, b, what=label)


# ---- hypothesis over the option space -------------------------------------

unit = st.floats(0.0, 0.999, allow_nan=False)
shapes = st.one_of(
    st.integers(0, 70).map(lambda n: (n,)),
    st.lists(st.one_of(st.integers(0, 40).map(lambda n: (n,)),
                       st.tuples(st.integers(1, 9), st.integers(1, 9))),
             min_size=1, max_size=5))


@st.composite
def sgd_opts(draw):
    momentum = draw(st.sampled_from([0.0, 0.9]) | unit)
    nesterov = momentum > 0 and draw(st.booleans())
    dampening = 0.0 if nesterov else draw(st.sampled_from([0.0]) | st.floats(0.0, 1.0))
    return dict(lr=draw(st.floats(0.0, 1.0)), momentum=momentum, dampening=dampening,
                nesterov=nesterov, weight_decay=draw(st.sampled_from([0.0]) | unit),
                maximize=draw(st.booleans()))


@st.composite
def adam_opts(draw, decoupled):
    opts = dict(lr=draw(st.floats(0.0, 1.0)), beta1=draw(unit), beta2=draw(unit),
                eps=draw(st.sampled_from([1e-8, 0.0]) | st.floats(0.0, 1e-2)),
                weight_decay=draw(st.sampled_from([0.0]) | st.floats(0.0, 0.5)),
                amsgrad=draw(st.booleans()), maximize=draw(st.booleans()))
    if decoupled:
        opts["decoupled_weight_decay"] = draw(st.booleans())
    return opts


HYPOTHESIS = settings(max_examples=40, deadline=None,
                      suppress_health_check=[HealthCheck.function_scoped_fixture])


def _check_drawn(family, opts, dtype, shape, first_step, nsteps, seed):
    rng = np.random.default_rng(seed)
    bufs = make_buffers(rng, family, shape, dtype)
    run_both(rng, family, bufs, opts, range(first_step, first_step + nsteps))


@HYPOTHESIS
@given(opts=sgd_opts(), dtype=st.sampled_from(DTYPES), shape=shapes,
       first_step=st.integers(1, 3), nsteps=st.integers(1, 4), seed=st.integers(0, 2**32))
def test_sgd_option_space(opts, dtype, shape, first_step, nsteps, seed):
    _check_drawn(SGD, opts, dtype, shape, first_step, nsteps, seed)


@HYPOTHESIS
@given(opts=adam_opts(True), dtype=st.sampled_from(DTYPES), shape=shapes,
       first_step=st.integers(1, 10_000), nsteps=st.integers(1, 4),
       seed=st.integers(0, 2**32))
def test_adam_option_space(opts, dtype, shape, first_step, nsteps, seed):
    _check_drawn(ADAM, opts, dtype, shape, first_step, nsteps, seed)


@HYPOTHESIS
@given(opts=adam_opts(False), dtype=st.sampled_from(DTYPES), shape=shapes,
       first_step=st.integers(1, 10_000), nsteps=st.integers(1, 4),
       seed=st.integers(0, 2**32))
def test_adamw_option_space(opts, dtype, shape, first_step, nsteps, seed):
    _check_drawn(ADAMW, opts, dtype, shape, first_step, nsteps, seed)


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_any_float_buffer_object(family, rng):
    # Not only NumPy arrays: array.array and memoryviews of bytearrays export
    # float buffers too, and are updated in place.
    opts = dict(lr=0.05, momentum=0.9) if family is SGD else dict(lr=0.05, amsgrad=True)
    bufs = make_buffers(rng, family, (37,), np.float64)
    ref = copy_buffers(bufs)
    objs = {}
    for i, (name, a) in enumerate(bufs.items()):
        if i % 2:
            objs[name] = array.array("d", a.tobytes())
        else:
            objs[name] = memoryview(bytearray(a.tobytes())).cast("d")
    family.call(True, objs, 1, opts)
    family.call(False, ref, 1, opts)
    for name, obj in objs.items():
        assert_same_bits(np.frombuffer(obj, dtype=np.float64), ref[name], what=name)
