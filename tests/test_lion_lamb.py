"""Lion and LAMB steps: against the NumPy reference, hand-computed values,
thread-count determinism and bad input. torch has neither optimizer."""

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import optcore
import optcore.reference as ref
from support import DTYPES, SIZES, LARGE, assert_close, random_array

STEPS = 3

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
        grads=[[random_array(rng, n, dtype) for n in sizes] for _ in range(STEPS)],
        exp_avg=[random_array(rng, n, dtype, scale=0.1) for n in sizes],
    )


def _lamb_state(rng, sizes, dtype):
    return dict(
        param=[random_array(rng, n, dtype) for n in sizes],
        grads=[[random_array(rng, n, dtype) for n in sizes] for _ in range(STEPS)],
        exp_avg=[random_array(rng, n, dtype, scale=0.1) for n in sizes],
        exp_avg_sq=[random_array(rng, n, dtype, positive=True, scale=0.01) for n in sizes],
    )


def _copy(state):
    return {k: [a.copy() for a in v] if k != "grads" else v for k, v in state.items()}


def _run(fn, state, buffers, opts, single, first_step=1):
    """Apply STEPS steps of fn to copies of the state (lists, or the first
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
def test_large(rng, dtype):
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


# ---- bad input ---------------------------------------------------------------------

def _bufs(dtype=np.float64, n=5):
    rng = np.random.default_rng(1)
    return [random_array(rng, n, dtype) for _ in range(4)]


def _assert_unchanged(before, after):
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", ["lion", "lamb"])
@pytest.mark.parametrize("bad, exc, match", [
    (dict(lr=-1.0), ValueError, "learning rate"),
    (dict(beta1=1.0), ValueError, "beta parameter at index 0"),
    (dict(beta2=-0.1), ValueError, "beta parameter at index 1"),
    (dict(weight_decay=-1.0), ValueError, "weight_decay"),
    (dict(step=0), ValueError, "step"),
    (dict(lr=float("nan")), ValueError, "learning rate"),
])
def test_bad_hyperparameters_change_nothing(kind, bad, exc, match):
    p, g, m, v = _bufs()
    saved = [a.copy() for a in (p, g, m, v)]
    opts = dict(step=1)
    opts.update(bad)
    with pytest.raises(exc, match=match):
        if kind == "lion":
            optcore.lion_step(p, g, m, **opts)
        else:
            optcore.lamb_step(p, g, m, v, **opts)
    _assert_unchanged(saved, (p, g, m, v))


def test_lamb_bad_eps():
    p, g, m, v = _bufs()
    with pytest.raises(ValueError, match="epsilon"):
        optcore.lamb_step(p, g, m, v, step=1, eps=-1e-8)


@pytest.mark.parametrize("kind", ["lion", "lamb"])
def test_bad_buffers_change_nothing(kind):
    def call(p, g, m, v):
        if kind == "lion":
            optcore.lion_step(p, g, m, step=1, lr=0.1)
        else:
            optcore.lamb_step(p, g, m, v, step=1, lr=0.1)

    cases = []
    p, g, m, v = _bufs()
    cases.append(((p, g, m.astype(np.float32), v.astype(np.float32)), TypeError, "dtype"))
    p, g, m, v = _bufs()
    cases.append(((p, g[:4], m, v), ValueError, "elements"))
    p, g, m, v = _bufs()
    p.flags.writeable = False
    cases.append(((p, g, m, v), ValueError, "read-only"))
    p, g, m, v = _bufs(n=10)
    cases.append(((p[::2], g[:5], m[:5], v[:5]), ValueError, "contiguous"))
    p, g, m, v = _bufs()
    cases.append(((p, g, p, v), ValueError, "overlap"))
    p, g, m, v = _bufs()
    cases.append((([p, p], [g, g], [m, m.copy()], [v, v.copy()]), ValueError,
                  "overlap"))
    p, g, m, v = _bufs()
    cases.append((([p], [g, g], [m], [v]), ValueError, "tensors"))
    p, g, m, v = _bufs()
    cases.append(((p, g, None, v), ValueError, "None"))
    p, g, m, v = _bufs()
    cases.append(((p, g.astype(np.int64), m, v), TypeError, "int64"))
    for args, exc, match in cases:
        flat = [a for x in args if x is not None
                for a in (x if isinstance(x, list) else [x])]
        saved = [a.copy() for a in flat]
        with pytest.raises(exc, match=match):
            call(*args)
        _assert_unchanged(saved, flat)


def test_empty_and_exports():
    e = np.empty(0, np.float32)
    optcore.lion_step(e, e.copy(), e.copy(), step=1)
    optcore.lamb_step(e, e.copy(), e.copy(), e.copy(), step=1)
    optcore.lamb_step([], [], [], [], step=1)
    for name in ("lion_step", "lamb_step"):
        assert name in optcore.__all__ and name in ref.__all__
