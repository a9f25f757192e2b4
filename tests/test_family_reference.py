"""RMSprop, Adagrad, Adadelta, Adamax, NAdam and RAdam kernels against their
NumPy reference twins: both dtypes, sizes around the vector width and the
threading threshold, every option combination, single and multi-tensor calls,
several consecutive steps with the state carried, 1 and 2 threads."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import optcore
from support import DTYPES, SIZES, LARGE, random_array, assert_close
from family import OPTIMIZERS, BY_NAME, all_on, random_states, call, combo_id

STEPS = 3

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
            new = call(self.opt.fast, self.opt, self.params[t], grads[t],
                       self.states[t], self.step, self.opts, self.scalar)
            ref_new = call(self.opt.ref, self.opt, self.ref_params[t], grads[t],
                           self.ref_states[t], self.step, self.opts, self.ref_scalar)
        self.scalar, self.ref_scalar = new, ref_new
        self.step += 1
        return grads

    def advance_multi(self, grads=None):
        grads = self.grads() if grads is None else grads
        lists = {s: _column(self.states, s) for s in self.opt.states}
        ref_lists = {s: _column(self.ref_states, s) for s in self.opt.states}
        self.scalar = call(self.opt.fast, self.opt, self.params, grads, lists,
                           self.step, self.opts, self.scalar)
        self.ref_scalar = call(self.opt.ref, self.opt, self.ref_params, grads,
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
        for _ in range(STEPS):
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
    for _ in range(STEPS + 1):
        scalar, step = tr.scalar, tr.step
        grads = tr.advance_multi()
        tr.check("multi-tensor")
        new = [call(opt.fast, opt, params[t], grads[t], states[t], step, opts, scalar)
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
            call(opt.fast, opt, params[0], grads[0], states[0], step, opts, scalar)
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

_unit = st.floats(0.0, 1.0)
HYPER = {
    "lr": st.floats(0.0, 2.0),
    "eps": st.sampled_from([0.0, 1e-10, 1e-8, 1e-6, 1e-3, 0.5]),
    "weight_decay": st.one_of(st.just(0.0), st.floats(0.0, 1.0)),
    "maximize": st.booleans(),
    "alpha": _unit,
    "momentum": st.one_of(st.just(0.0), st.floats(0.0, 0.99)),
    "centered": st.booleans(),
    "lr_decay": st.one_of(st.just(0.0), st.floats(0.0, 1.0)),
    "rho": _unit,
    "beta1": st.floats(0.0, 0.999),
    "beta2": st.floats(0.0, 0.9999),
    "momentum_decay": st.floats(0.0, 0.1),
    "decoupled_weight_decay": st.booleans(),
}
ACCEPTS = {
    "rmsprop": ["lr", "alpha", "eps", "weight_decay", "momentum", "centered", "maximize"],
    "adagrad": ["lr", "lr_decay", "weight_decay", "eps", "maximize"],
    "adadelta": ["lr", "rho", "eps", "weight_decay", "maximize"],
    "adamax": ["lr", "beta1", "beta2", "eps", "weight_decay", "maximize"],
    "nadam": ["lr", "beta1", "beta2", "eps", "weight_decay", "momentum_decay",
              "decoupled_weight_decay", "maximize"],
    "radam": ["lr", "beta1", "beta2", "eps", "weight_decay", "decoupled_weight_decay",
              "maximize"],
}


@pytest.mark.parametrize("opt", OPTIMIZERS, ids=str)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_random_hyperparameters(opt, data):
    opts = {k: data.draw(HYPER[k], label=k) for k in ACCEPTS[opt.name]}
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
        for _ in range(STEPS):
            tr.advance_single()
            tr.check(f"{opts}")
