"""Every optimizer kernel against its NumPy reference twin (optcore.reference),
from the registry: both dtypes, sizes around the vector width and the
threading threshold plus a large one, every option set, single and multi-tensor
calls, several consecutive steps with the state carried, 1 and 2 threads.
Elementwise kernels must give the reference's bits; LAMB's norms are summed in
the kernel's order by the reference too."""

import array
import math

from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis.extra import numpy as hnp
import numpy as np
import pytest

import optcore
import optcore.reference as ref

from registry import (ADAM, ADAMW, ASGD, BY_NAME, FAMILIES, OPTIMIZERS, OPTION_NAMES, RPROP,
    OPTION_VALUES, SGD, adam_opts, all_on, call_with_states, combo_id, copy_buffers,
    family_cases, flat_arrays, new_grads, random_states, sgd_opts, shaped_buffers)
from support import DTYPES, LARGE, SIZES, assert_close, assert_same_bits, random_array


# ==== SGD, Adam, AdamW (explicit option sets) ================================

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
        family.run(True, fast, step, opts)
        family.run(False, ref, step, opts)
        for (label, a), (_, b) in zip(flat_arrays(fast), flat_arrays(ref)):
            assert_same_bits(a, b, what=f"{family.short} {label} after step {step} {opts}")
    return fast


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("family,opts", family_cases())
def test_single_tensor_every_option(family, opts, dtype, size, num_threads, rng):
    bufs = shaped_buffers(rng, family, (size,), dtype)
    run_both(rng, family, bufs, opts, range(1, STEPS + 1))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("family,opts", family_cases())
def test_multi_tensor_every_option(family, opts, dtype, num_threads, rng):
    bufs = shaped_buffers(rng, family, MIXED_SHAPES, dtype)
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
        bufs = shaped_buffers(rng, family, (LARGE,), dtype)
        run_both(rng, family, bufs, opts, (1, 2))
    finally:
        optcore.set_num_threads(None)


# ==== Rprop, ASGD (explicit option sets) =====================================

RPROP_ASGD = family_cases([RPROP, ASGD])


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("family,opts", RPROP_ASGD)
def test_rprop_asgd_single_tensor(family, opts, dtype, size, num_threads, rng):
    bufs = shaped_buffers(rng, family, (size,), dtype)
    run_both(rng, family, bufs, opts, range(1, 6))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("family,opts", RPROP_ASGD)
def test_rprop_asgd_multi_tensor(family, opts, dtype, num_threads, rng):
    bufs = shaped_buffers(rng, family, MIXED_SHAPES, dtype)
    out = run_both(rng, family, bufs, opts, range(1, 6))
    assert [a.shape for a in out["param"]] == MIXED_SHAPES


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("family", [RPROP, ASGD], ids=lambda f: f.short)
def test_rprop_asgd_large(family, dtype, rng):
    optcore.set_num_threads(2)
    try:
        bufs = shaped_buffers(rng, family, (LARGE,), dtype)
        run_both(rng, family, bufs, family.options[1], (1, 2))
    finally:
        optcore.set_num_threads(None)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("family,opts", RPROP_ASGD)
def test_rprop_asgd_non_finite_gradients(family, opts, dtype, rng):
    # Rprop takes a NaN gradient as sign 0 (torch.sign); both propagate the rest.
    bufs = shaped_buffers(rng, family, [(40,), (7, 3)], dtype)
    fast, want = copy_buffers(bufs), copy_buffers(bufs)
    for step in range(1, 5):
        new_grads(rng, fast)
        for g in fast["grad"]:
            g.reshape(-1)[step::5] = [np.nan, np.inf, -np.inf, 0.0][step - 1]
        want["grad"] = fast["grad"]
        family.run(True, fast, step, opts)
        with np.errstate(all="ignore"):             # inf * 0 on purpose
            family.run(False, want, step, opts)
        for (label, a), (_, b) in zip(flat_arrays(fast), flat_arrays(want)):
            np.testing.assert_array_equal(a, b, err_msg=f"{family.short} {label} {step}")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.short)
def test_state_carried_from_a_late_step(family, dtype, rng):
    # Start at step 1000 with random state, as if resumed from a checkpoint.
    opts = dict(lr=0.01, weight_decay=0.01, maximize=True)
    opts.update(dict(momentum=0.9) if family is SGD else dict(amsgrad=True))
    bufs = shaped_buffers(rng, family, [(33,), (4, 300)], dtype)
    run_both(rng, family, bufs, opts, range(1000, 1005))


@pytest.mark.parametrize("beta1", [0.0, 0.5, np.nextafter(0.5, 0), np.nextafter(0.5, 1)],
                         ids=["0", "0.5", "below-0.5", "above-0.5"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("family", [ADAM, ADAMW], ids=lambda f: f.short)
def test_lerp_weight_edges(family, dtype, beta1, rng):
    # torch.lerp switches formula at weight (1 - beta1) == 0.5 exactly; the two
    # formulas round differently, so the branch taken shows in the bits.
    bufs = shaped_buffers(rng, family, MIXED_SHAPES, dtype)
    run_both(rng, family, bufs, dict(lr=0.01, beta1=float(beta1), amsgrad=True), (1, 2, 3))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("family,opts", family_cases())
def test_list_call_equals_one_call_per_tensor(family, opts, dtype, rng):
    # One multi-tensor call gives the same bits as one call per tensor.
    bufs = shaped_buffers(rng, family, MIXED_SHAPES, dtype)
    per_tensor = copy_buffers(bufs)
    for step in (1, 2):
        new_grads(rng, bufs)
        per_tensor["grad"] = bufs["grad"]
        family.run(True, bufs, step, opts)
        for i in range(len(MIXED_SHAPES)):
            family.run(True, {k: v[i] for k, v in per_tensor.items()}, step, opts)
    for (label, a), (_, b) in zip(flat_arrays(bufs), flat_arrays(per_tensor)):
        assert_same_bits(a, b, what=label)


def test_tuple_of_arrays_is_a_multi_tensor_call(rng):
    bufs = shaped_buffers(rng, ADAM, [(5,), (9,)], np.float32)
    ref = copy_buffers(bufs)
    optcore.adam_step(tuple(bufs["param"]), tuple(bufs["grad"]), tuple(bufs["exp_avg"]),
                      tuple(bufs["exp_avg_sq"]), step=1)
    optcore.reference.adam_step(ref["param"], ref["grad"], ref["exp_avg"],
                                ref["exp_avg_sq"], step=1)
    for (label, a), (_, b) in zip(flat_arrays(bufs), flat_arrays(ref)):
        assert_same_bits(a, b, what=label)


# ---- hypothesis over the option space -------------------------------------

shapes = st.one_of(
    st.integers(0, 70).map(lambda n: (n,)),
    st.lists(st.one_of(st.integers(0, 40).map(lambda n: (n,)),
                       st.tuples(st.integers(1, 9), st.integers(1, 9))),
             min_size=1, max_size=5))



HYPOTHESIS = settings(max_examples=40, deadline=None,
                      suppress_health_check=[HealthCheck.function_scoped_fixture])


def _check_drawn(family, opts, dtype, shape, first_step, nsteps, seed):
    rng = np.random.default_rng(seed)
    bufs = shaped_buffers(rng, family, shape, dtype)
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


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.short)
def test_any_float_buffer_object(family, rng):
    # Not only NumPy arrays: array.array and memoryviews of bytearrays export
    # float buffers too, and are updated in place.
    opts = dict(lr=0.05, momentum=0.9) if family is SGD else dict(lr=0.05, amsgrad=True)
    bufs = shaped_buffers(rng, family, (37,), np.float64)
    ref = copy_buffers(bufs)
    objs = {}
    for i, (name, a) in enumerate(bufs.items()):
        if i % 2:
            objs[name] = array.array("d", a.tobytes())
        else:
            objs[name] = memoryview(bytearray(a.tobytes())).cast("d")
    family.run(True, objs, 1, opts)
    family.run(False, ref, 1, opts)
    for name, obj in objs.items():
        assert_same_bits(np.frombuffer(obj, dtype=np.float64), ref[name], what=name)


# ==== RMSprop, Adagrad, Adadelta, Adamax, NAdam, RAdam (full option grid) ====

STEPS_GRID = 3

COMBOS = [pytest.param(opt, opts, id=f"{opt}-{combo_id(opts)}")
          for opt in OPTIMIZERS for opts in opt.combos()]
DTYPE_IDS = ["float32", "float64"]

# Mixed sizes for multi-tensor calls: empty, tiny, vector tails, and one tensor
# past the threading threshold so that a partition boundary falls inside it.
MIXED = [5, 0, 1, 17, 1025, optcore.get_parallel_threshold() + 3, 8, 9]


class Trajectory:
    """Kernel and reference copies of one problem, stepped side by side."""

    def __init__(self, opt, opts, rng, sizes, dtype):
        self.opt, self.opts, self.rng, self.sizes, self.dtype = opt, opts, rng, sizes, dtype
        self.params = [random_array(rng, n, dtype) for n in sizes]
        self.states = [random_states(opt, rng, n, dtype, opts) for n in sizes]
        self.ref_params = [p.copy() for p in self.params]
        self.ref_states = [{s: (None if a is None else a.copy()) for s, a in st_.items()}
                           for st_ in self.states]
        self.scalar = self.ref_scalar = 1.0
        self.step = opt.first_step

    def grads(self):
        return [random_array(self.rng, n, self.dtype) for n in self.sizes]

    def advance_single(self, grads=None):
        """One step, each tensor in its own call (the scalar state is shared,
        as a multi-tensor call shares it)."""
        grads = self.grads() if grads is None else grads
        new = ref_new = None
        for t in range(len(self.sizes)):
            new = call_with_states(self.opt.fast, self.opt, self.params[t], grads[t],
                       self.states[t], self.step, self.opts, self.scalar)
            ref_new = call_with_states(self.opt.ref, self.opt, self.ref_params[t], grads[t],
                           self.ref_states[t], self.step, self.opts, self.ref_scalar)
        self.scalar, self.ref_scalar = new, ref_new
        self.step += 1
        return grads

    def advance_multi(self, grads=None):
        grads = self.grads() if grads is None else grads
        lists = {s: _column(self.states, s) for s in self.opt.states}
        ref_lists = {s: _column(self.ref_states, s) for s in self.opt.states}
        self.scalar = call_with_states(self.opt.fast, self.opt, self.params, grads, lists,
                           self.step, self.opts, self.scalar)
        self.ref_scalar = call_with_states(self.opt.ref, self.opt, self.ref_params, grads,
                               ref_lists, self.step, self.opts, self.ref_scalar)
        self.step += 1
        return grads

    def kernel_copy(self):
        """Copies of the kernel-side buffers (to replay the steps elsewhere)."""
        return ([p.copy() for p in self.params],
                [{s: (None if a is None else a.copy()) for s, a in st_.items()}
                 for st_ in self.states])

    def assert_same_bits(self, params, states):
        for t in range(len(self.sizes)):
            np.testing.assert_array_equal(params[t], self.params[t])
            for s, a in states[t].items():
                if a is not None:
                    np.testing.assert_array_equal(a, self.states[t][s])

    def check(self, what=""):
        for t, n in enumerate(self.sizes):
            label = f"{self.opt} n={n} step={self.step - 1} {what}"
            assert_close(self.params[t], self.ref_params[t], self.dtype,
                         what=f"param {label}")
            for s, a in self.states[t].items():
                if a is not None:
                    assert_close(a, self.ref_states[t][s], self.dtype,
                                 what=f"{s} {label}")
        assert self.scalar == self.ref_scalar


def _column(states, name):
    col = [st_[name] for st_ in states]
    return None if col[0] is None else col


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("opt, opts", COMBOS)
def test_matches_reference(opt, opts, dtype, rng, num_threads):
    for n in SIZES:
        tr = Trajectory(opt, opts, rng, [n], dtype)
        for _ in range(STEPS_GRID):
            tr.advance_single()
            tr.check()


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("opt", OPTIMIZERS, ids=str)
@pytest.mark.parametrize("options", ["defaults", "all_on"])
def test_multi_tensor(opt, options, dtype, rng, num_threads):
    """A list call matches the reference, and gives the same bits as one
    call per tensor."""
    opts = {} if options == "defaults" else all_on(opt)
    tr = Trajectory(opt, opts, rng, MIXED, dtype)
    params, states = tr.kernel_copy()
    for _ in range(STEPS_GRID + 1):
        scalar, step = tr.scalar, tr.step
        grads = tr.advance_multi()
        tr.check("multi-tensor")
        new = [call_with_states(opt.fast, opt, params[t], grads[t], states[t], step, opts, scalar)
               for t in range(len(MIXED))]
        tr.assert_same_bits(params, states)
        assert all(x == tr.scalar for x in new)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("opt", OPTIMIZERS, ids=str)
def test_large_any_thread_count(opt, dtype, rng):
    """A large buffer matches the reference, and gives the same bits with 1
    and 2 threads."""
    opts = all_on(opt)
    tr = Trajectory(opt, opts, rng, [LARGE], dtype)
    params, states = tr.kernel_copy()
    try:
        for _ in range(2):
            scalar, step = tr.scalar, tr.step
            optcore.set_num_threads(2)
            grads = tr.advance_single()
            tr.check("2 threads")
            optcore.set_num_threads(1)
            call_with_states(opt.fast, opt, params[0], grads[0], states[0], step, opts, scalar)
            tr.assert_same_bits(params, states)
    finally:
        optcore.set_num_threads(None)


def test_unused_state_is_left_alone(rng):
    """RMSprop ignores momentum_buffer without momentum and grad_avg unless
    centered, even when they are passed."""
    opt = BY_NAME["rmsprop"]
    for dtype in DTYPES:
        p, g = random_array(rng, 33, dtype), random_array(rng, 33, dtype)
        st_ = random_states(opt, rng, 33, dtype)
        before = {s: a.copy() for s, a in st_.items()}
        optcore.rmsprop_step(p, g, st_["square_avg"], st_["momentum_buffer"],
                             st_["grad_avg"], step=1)
        np.testing.assert_array_equal(st_["momentum_buffer"], before["momentum_buffer"])
        np.testing.assert_array_equal(st_["grad_avg"], before["grad_avg"])


def test_adagrad_initial_accumulator_and_lr_decay():
    """Adagrad by hand: state_sum starts at initial_accumulator_value (the
    caller's), the step size decays as lr / (1 + (step - 1) * lr_decay)."""
    p = np.array([1.0, -2.0])
    g = np.array([0.5, 1.5])
    s = np.full(2, 0.25)
    optcore.adagrad_step(p, g, s, step=3, lr=0.1, lr_decay=0.5, eps=0.0)
    clr = 0.1 / (1 + 2 * 0.5)
    np.testing.assert_allclose(s, [0.5, 2.5], rtol=1e-15)
    np.testing.assert_allclose(p, [1.0 - clr * 0.5 / np.sqrt(0.5),
                                   -2.0 - clr * 1.5 / np.sqrt(2.5)], rtol=1e-15)


def test_nadam_returns_mu_product():
    """mu_product is NAdam's running product of mu_t: the returned value
    feeds the next call."""
    p, g = np.ones(4), np.full(4, 0.1)
    m, v = np.zeros(4), np.zeros(4)
    mp = 1.0
    for step in (1, 2, 3):
        mu = 0.9 * (1.0 - 0.5 * 0.96 ** (step * 4e-3))
        expected = mp * mu
        mp = optcore.nadam_step(p, g, m, v, step=step, mu_product=mp)
        assert isinstance(mp, float)
        assert mp == expected


def test_radam_rectification_switch():
    """With the default betas RAdam takes un-rectified steps (lr times the
    bias-corrected momentum) through step 5 and adaptive ones from step 6."""
    for step in range(1, 9):
        rho_inf = 2 / (1 - 0.999) - 1
        rho_t = rho_inf - 2 * step * 0.999**step / (1 - 0.999**step)
        p, g = np.zeros(3), np.array([1.0, -4.0, 9.0])
        m, v = np.zeros(3), np.zeros(3)
        optcore.radam_step(p, g, m, v, step=step, lr=0.5)
        plain = -0.5 * m / (1 - 0.9**step)
        if step <= 5:
            assert rho_t <= 5
            np.testing.assert_array_equal(p, plain)
        else:
            assert rho_t > 5
            assert not np.allclose(p, plain)


# ---- random hyperparameters (hypothesis) -------------------------------------



@pytest.mark.parametrize("opt", OPTIMIZERS, ids=str)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_random_hyperparameters(opt, data):
    opts = {k: data.draw(OPTION_VALUES[k], label=k) for k in OPTION_NAMES[opt.short]}
    dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
    n = data.draw(st.integers(0, 40), label="n")
    first = data.draw(st.integers(1, 500), label="first_step")
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    rng = np.random.default_rng(seed)
    tr = Trajectory(opt, opts, rng, [n], dtype)
    tr.step = first
    if opt.scalar_state:
        # mu_product as it would stand before step `first`
        tr.scalar = tr.ref_scalar = float(rng.uniform(0.0, 1.0)) ** (first - 1)
    with np.errstate(all="ignore"):   # extreme options may overflow: both must agree
        for _ in range(STEPS_GRID):
            tr.advance_single()
            tr.check(f"{opts}")


# ==== Lion and LAMB ==========================================================

STEPS_LION_LAMB = 3

LION_OPTIONS = [
    dict(),
    dict(lr=0.05, beta1=0.8, beta2=0.95, weight_decay=0.1),
    dict(lr=1e-3, weight_decay=0.5, maximize=True),
    dict(lr=0.01, beta1=0.0, beta2=0.0),
]
LAMB_OPTIONS = [
    dict(),
    dict(lr=0.05, beta1=0.8, beta2=0.95, eps=1e-3, weight_decay=0.1),
    dict(lr=1e-2, weight_decay=0.01, maximize=True),
    dict(lr=0.01, beta1=0.0, beta2=0.0, eps=0.0),
]


def _lion_state(rng, sizes, dtype):
    return dict(
        param=[random_array(rng, n, dtype) for n in sizes],
        grads=[[random_array(rng, n, dtype) for n in sizes] for _ in range(STEPS_LION_LAMB)],
        exp_avg=[random_array(rng, n, dtype, scale=0.1) for n in sizes],
    )


def _lamb_state(rng, sizes, dtype):
    return dict(
        param=[random_array(rng, n, dtype) for n in sizes],
        grads=[[random_array(rng, n, dtype) for n in sizes] for _ in range(STEPS_LION_LAMB)],
        exp_avg=[random_array(rng, n, dtype, scale=0.1) for n in sizes],
        exp_avg_sq=[random_array(rng, n, dtype, positive=True, scale=0.01) for n in sizes],
    )


def _copy(state):
    return {k: [a.copy() for a in v] if k != "grads" else v for k, v in state.items()}


def _run(fn, state, buffers, opts, single, first_step=1):
    """Apply STEPS_LION_LAMB steps of fn to copies of the state (lists, or the first
    tensor alone when single)."""
    s = _copy(state)
    for k, grads in enumerate(s["grads"]):
        args = [s["param"], grads] + [s[b] for b in buffers]
        if single:
            args = [a[0] for a in args]
        fn(*args, step=first_step + k, **opts)
    return s


def _assert_states(got, want, dtype, buffers):
    for name in ("param",) + tuple(buffers):
        for t, (a, b) in enumerate(zip(got[name], want[name])):
            assert_close(a, b, dtype, what=f"{name}[{t}]")


def _assert_equal_states(got, want, buffers):
    for name in ("param",) + tuple(buffers):
        for a, b in zip(got[name], want[name]):
            np.testing.assert_array_equal(a, b, err_msg=name)


# ---- against the reference ---------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("opts", LION_OPTIONS, ids=lambda o: ",".join(o) or "defaults")
def test_lion_matches_reference(rng, num_threads, dtype, n, opts):
    state = _lion_state(rng, [n], dtype)
    got = _run(optcore.lion_step, state, ["exp_avg"], opts, single=True)
    want = _run(ref.lion_step, state, ["exp_avg"], opts, single=True)
    _assert_states(got, want, dtype, ["exp_avg"])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("opts", LAMB_OPTIONS, ids=lambda o: ",".join(o) or "defaults")
def test_lamb_matches_reference(rng, num_threads, dtype, n, opts):
    state = _lamb_state(rng, [n], dtype)
    got = _run(optcore.lamb_step, state, ["exp_avg", "exp_avg_sq"], opts, single=True)
    want = _run(ref.lamb_step, state, ["exp_avg", "exp_avg_sq"], opts, single=True)
    _assert_states(got, want, dtype, ["exp_avg", "exp_avg_sq"])


MIXED_SIZES = [17, 0, 1, 4097, 1025, 8, 40_000, 3]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("opts", LION_OPTIONS[:3], ids=lambda o: ",".join(o) or "defaults")
def test_lion_multi_tensor(rng, num_threads, dtype, opts):
    state = _lion_state(rng, MIXED_SIZES, dtype)
    got = _run(optcore.lion_step, state, ["exp_avg"], opts, single=False, first_step=5)
    want = _run(ref.lion_step, state, ["exp_avg"], opts, single=False, first_step=5)
    _assert_states(got, want, dtype, ["exp_avg"])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("opts", LAMB_OPTIONS[:3], ids=lambda o: ",".join(o) or "defaults")
def test_lamb_multi_tensor(rng, num_threads, dtype, opts):
    buffers = ["exp_avg", "exp_avg_sq"]
    state = _lamb_state(rng, MIXED_SIZES, dtype)
    got = _run(optcore.lamb_step, state, buffers, opts, single=False, first_step=5)
    want = _run(ref.lamb_step, state, buffers, opts, single=False, first_step=5)
    _assert_states(got, want, dtype, buffers)
    # One trust ratio per tensor: the list call equals one call per tensor.
    one_by_one = _copy(state)
    for k, grads in enumerate(state["grads"]):
        for t in range(len(MIXED_SIZES)):
            optcore.lamb_step(one_by_one["param"][t], grads[t], one_by_one["exp_avg"][t],
                              one_by_one["exp_avg_sq"][t], step=5 + k, **opts)
    _assert_equal_states(got, one_by_one, buffers)


@pytest.mark.parametrize("dtype", DTYPES)
def test_large_lion_lamb(rng, dtype):
    lion = _lion_state(rng, [LARGE], dtype)
    lamb = _lamb_state(rng, [LARGE], dtype)
    opts = dict(lr=0.01, weight_decay=0.1)
    _assert_states(_run(optcore.lion_step, lion, ["exp_avg"], opts, True),
                   _run(ref.lion_step, lion, ["exp_avg"], opts, True), dtype, ["exp_avg"])
    buffers = ["exp_avg", "exp_avg_sq"]
    _assert_states(_run(optcore.lamb_step, lamb, buffers, opts, True),
                   _run(ref.lamb_step, lamb, buffers, opts, True), dtype, buffers)


@pytest.mark.parametrize("dtype", DTYPES)
def test_lamb_same_bits_for_any_thread_count(rng, dtype):
    # Several reduction blocks per tensor, and a tensor per thread boundary.
    sizes = [LARGE, 70_001, 5, 40_000]
    buffers = ["exp_avg", "exp_avg_sq"]
    state = _lamb_state(rng, sizes, dtype)
    results = []
    for threads in (1, 2):
        optcore.set_num_threads(threads)
        try:
            results.append(_run(optcore.lamb_step, state, buffers,
                                dict(lr=0.01, weight_decay=0.1), single=False))
        finally:
            optcore.set_num_threads(None)
    _assert_equal_states(results[0], results[1], buffers)


# ---- hand-computed values --------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_lion_by_hand(dtype):
    # c = 0.9 m + 0.1 g = [0.14, -0.32, 0];  sign(c) = [1, -1, 0]
    # p = p * (1 - 0.1 * 0.5) - 0.1 * sign(c) = [0.95 - 0.1, -1.9 + 0.1, 0.475]
    # m = 0.99 m + 0.01 g = [0.099 + 0.005, 0.198 - 0.05, 0]
    p = np.array([1.0, -2.0, 0.5], dtype)
    g = np.array([0.5, -5.0, 0.0], dtype)
    m = np.array([0.1, 0.2, 0.0], dtype)
    optcore.lion_step(p, g, m, step=1, lr=0.1, beta1=0.9, beta2=0.99, weight_decay=0.5)
    assert_close(p, [0.85, -1.8, 0.475], dtype, rtol=1e-6)
    assert_close(m, [0.104, 0.148, 0.0], dtype, rtol=1e-6)
    # maximize: g -> -g, c = [0.04, 0.68, 0], sign = [1, 1, 0]
    p = np.array([1.0, -2.0, 0.5], dtype)
    m = np.array([0.1, 0.2, 0.0], dtype)
    optcore.lion_step(p, g, m, step=1, lr=0.1, weight_decay=0.5, maximize=True)
    assert_close(p, [0.85, -2.0, 0.475], dtype, rtol=1e-6)
    assert_close(m, [0.094, 0.248, 0.0], dtype, rtol=1e-6)


def test_lion_sign_of_zero_and_nan():
    p = np.array([1.0, 1.0, 1.0, 1.0])
    m = np.array([0.0, -0.0, np.nan, np.inf])
    g = np.array([0.0, -0.0, 1.0, 1.0])
    optcore.lion_step(p, g, m, step=1, lr=0.5)
    # sign(+0) = sign(-0) = 0: untouched; NaN propagates; sign(inf) = 1.
    np.testing.assert_array_equal(p, [1.0, 1.0, np.nan, 0.5])


@pytest.mark.parametrize("dtype", DTYPES)
def test_lamb_by_hand_first_step(dtype):
    # m = v = 0, eps = 0: m_hat = g, v_hat = g**2, u = sign(g) = [1, -1];
    # r = ||p|| / ||u|| = 5 / sqrt(2); p -= 0.1 * r * u.
    p = np.array([3.0, 4.0], dtype)
    g = np.array([0.5, -2.0], dtype)
    m = np.zeros(2, dtype)
    v = np.zeros(2, dtype)
    optcore.lamb_step(p, g, m, v, step=1, lr=0.1, eps=0.0)
    d = 0.5 / math.sqrt(2)
    assert_close(p, [3.0 - d, 4.0 + d], dtype, rtol=1e-6)
    assert_close(m, [0.05, -0.2], dtype, rtol=1e-6)
    assert_close(v, [0.00025, 0.004], dtype, rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_lamb_by_hand_second_step(dtype):
    # beta1 = 0.9, beta2 = 0.999, eps = 0.01, weight_decay = 0.1, lr = 0.5, step 2:
    # m = 0.9 [0.1, -0.1] + 0.1 [0.2, 0.4] = [0.11, -0.05]
    # v = 0.999 [0.01, 0.04] + 0.001 [0.04, 0.16] = [0.01003, 0.04012]
    # bias corrections 1 - 0.9**2 = 0.19, 1 - 0.999**2 = 0.001999
    # u = (m / 0.19) / (sqrt(v / 0.001999) + 0.01) + 0.1 p
    #   = [0.578947 / 2.249980 + 0.1, -0.263158 / 4.489959 - 0.2]
    #   = [0.3573122707590718, -0.2586103078437081]
    # ||p|| = sqrt(5) = 2.23606797749979, ||u|| = 0.44107975487208856
    # r = 5.069532103436126, p -= 0.5 r u
    p = np.array([1.0, -2.0], dtype)
    g = np.array([0.2, 0.4], dtype)
    m = np.array([0.1, -0.1], dtype)
    v = np.array([0.01, 0.04], dtype)
    optcore.lamb_step(p, g, m, v, step=2, lr=0.5, beta1=0.9, beta2=0.999, eps=0.01,
                      weight_decay=0.1)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert_close(m, [0.11, -0.05], dtype, rtol=tol)
    assert_close(v, [0.01003, 0.04012], dtype, rtol=tol)
    assert_close(p, [0.09429698621761207, -1.3444833710534112], dtype, rtol=tol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_lamb_zero_norms_give_ratio_one(dtype):
    # ||p|| = 0: r = 1, so p = -lr * u.
    p = np.zeros(2, dtype)
    g = np.array([1.0, -1.0], dtype)
    m = np.zeros(2, dtype)
    v = np.zeros(2, dtype)
    optcore.lamb_step(p, g, m, v, step=1, lr=0.1, eps=0.0)
    assert_close(p, [-0.1, 0.1], dtype, rtol=1e-6)
    # ||u|| = 0 (zero gradient and moments, no decay): p unchanged, not NaN.
    p = np.array([1.0, 2.0], dtype)
    optcore.lamb_step(p, np.zeros(2, dtype), np.zeros(2, dtype), np.zeros(2, dtype),
                      step=1, lr=0.1)
    np.testing.assert_array_equal(p, [1.0, 2.0])


# ---- random hyperparameters ------------------------------------------------------

_floats = dict(allow_nan=False, allow_infinity=False, width=32)


@settings(max_examples=40, deadline=None)
@given(
    dtype=st.sampled_from(DTYPES),
    data=hnp.arrays(np.float64, st.integers(1, 40), elements=st.floats(-1e3, 1e3, **_floats)),
    lr=st.floats(0.0, 1.0),
    beta1=st.floats(0.0, 0.999),
    beta2=st.floats(0.0, 0.999),
    weight_decay=st.floats(0.0, 1.0),
    maximize=st.booleans(),
    step=st.integers(1, 1000),
)
def test_hypothesis_lion_and_lamb(dtype, data, lr, beta1, beta2, weight_decay,
                                  maximize, step):
    n = data.size
    p0 = data.astype(dtype)
    g = np.roll(data, 1).astype(dtype)
    m0 = (0.1 * np.roll(data, 2)).astype(dtype)
    v0 = (0.01 * np.abs(np.roll(data, 3))).astype(dtype)
    opts = dict(step=step, lr=lr, beta1=beta1, beta2=beta2, weight_decay=weight_decay,
                maximize=maximize)
    p, m = p0.copy(), m0.copy()
    pr, mr = p0.copy(), m0.copy()
    optcore.lion_step(p, g, m, **opts)
    ref.lion_step(pr, g, mr, **opts)
    assert_close(p, pr, dtype)
    assert_close(m, mr, dtype)
    p, m, v = p0.copy(), m0.copy(), v0.copy()
    pr, mr, vr = p0.copy(), m0.copy(), v0.copy()
    optcore.lamb_step(p, g, m, v, eps=1e-6, **opts)
    ref.lamb_step(pr, g, mr, vr, eps=1e-6, **opts)
    # The reference sums the norms in the kernel's order: the same bits.
    np.testing.assert_array_equal(p, pr)
    assert_close(m, mr, dtype)
    assert_close(v, vr, dtype)
    assert n == p.size
