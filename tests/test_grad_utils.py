"""Gradient utilities: global_norm, clip_grad_norm_, clip_grad_value_,
all_finite, unscale_ against the NumPy reference and torch.nn.utils /
torch._amp_foreach_non_finite_check_and_unscale_."""

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import optcore
import optcore.reference as ref
from support import DTYPES, SIZES, LARGE, assert_close, random_array

NORM_TYPES = [1.0, 2.0, 3.0, 0.5, math.inf]
MIXED_SIZES = [17, 0, 1, 4097, 1025, 8, 40_000, 3]
INF, NAN = math.inf, math.nan

# Norms: both sides accumulate in double but in different orders.
NORM_RTOL = 1e-12
# Kernel vs torch: torch accumulates float32 norms in float32 and computes the
# clip coefficient in float32.
TORCH_TOL = {np.float32: 1e-5, np.float64: 1e-12}


def _arrays(rng, sizes, dtype, scale=1.0):
    return [random_array(rng, n, dtype, scale=scale) for n in sizes]


def _same(a, b):
    """Equal values, NaN where NaN (bitwise up to the NaN payload)."""
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# ---- global_norm -------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
def test_global_norm_matches_reference(rng, num_threads, dtype, n):
    x = random_array(rng, n, dtype)
    for p in NORM_TYPES:
        got = optcore.global_norm(x, p)
        assert isinstance(got, float)
        assert got == pytest.approx(ref.global_norm(x, p), rel=NORM_RTOL, abs=0), p


@pytest.mark.parametrize("dtype", DTYPES)
def test_global_norm_multi_tensor(rng, num_threads, dtype):
    xs = _arrays(rng, MIXED_SIZES, dtype)
    for p in NORM_TYPES:
        assert optcore.global_norm(xs, p) == pytest.approx(
            ref.global_norm(xs, p), rel=NORM_RTOL, abs=0)
        # One vector: the norm of the concatenation.
        assert optcore.global_norm(xs, p) == pytest.approx(
            optcore.global_norm(np.concatenate(xs), p), rel=NORM_RTOL, abs=0)
    assert optcore.global_norm(tuple(xs), "inf") == optcore.global_norm(xs, INF)


@pytest.mark.parametrize("dtype", DTYPES)
def test_global_norm_same_bits_for_any_thread_count(rng, dtype):
    xs = [random_array(rng, LARGE, dtype)] + _arrays(rng, MIXED_SIZES, dtype)
    for p in NORM_TYPES:
        results = []
        for threads in (1, 2):
            optcore.set_num_threads(threads)
            try:
                results.append((optcore.global_norm(xs, p), optcore.global_norm(xs[0], p)))
            finally:
                optcore.set_num_threads(None)
        assert results[0] == results[1], p
        assert results[0][0] == pytest.approx(ref.global_norm(xs, p), rel=1e-11)


@pytest.mark.parametrize("n", [2, 1025, 40_000])
def test_global_norm_does_not_overflow_or_underflow(num_threads, n):
    for dtype, value in [(np.float32, 1e20), (np.float32, 3e38), (np.float32, 1e-30),
                         (np.float32, 1e-45), (np.float64, 1e200), (np.float64, 1e-200),
                         (np.float64, 1.7e308), (np.float64, 5e-324)]:
        x = np.full(n, value, dtype)
        exact = float(x[0])
        for p in (1.0, 2.0, 3.0, 10.0):
            assert optcore.global_norm(x, p) == pytest.approx(
                exact * n ** (1 / p), rel=1e-12), (dtype, value, p)
        assert optcore.global_norm(x, INF) == exact
    assert optcore.global_norm(np.zeros(n), 2.0) == 0.0
    assert optcore.global_norm(np.zeros(n, np.float32), 0.5) == 0.0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 7, 8, 9, 17, 4097, 40_000])
def test_global_norm_non_finite(num_threads, dtype, n):
    for pos in sorted({0, n // 2, n - 1, n - n % 8 if n % 8 else n - 1}):
        for bad, want in [(INF, INF), (-INF, INF), (NAN, NAN)]:
            x = np.ones(n, dtype)
            x[pos] = bad
            for p in NORM_TYPES:
                got = optcore.global_norm([np.ones(3, dtype), x], p)
                assert (math.isnan(got) if math.isnan(want) else got == want), (pos, bad, p)
    x = np.ones(n, dtype)
    x[0], x[-1] = INF, NAN
    assert all(math.isnan(optcore.global_norm(x, p)) for p in NORM_TYPES)


def test_global_norm_inputs():
    assert optcore.global_norm([]) == 0.0
    assert optcore.global_norm(np.empty(0)) == 0.0
    x = np.arange(12, dtype=np.float64).reshape(3, 4)
    assert optcore.global_norm(x) == pytest.approx(np.linalg.norm(x))
    # Read-only and strided inputs are fine: global_norm only reads.
    x.flags.writeable = False
    assert optcore.global_norm(x[:, ::2]) == pytest.approx(np.linalg.norm(x[:, ::2]))
    for bad in (0.0, -1.0, -INF, NAN):
        with pytest.raises(ValueError, match="norm_type"):
            optcore.global_norm(x, bad)
    with pytest.raises(TypeError, match="dtype"):
        optcore.global_norm([np.ones(2), np.ones(2, np.float32)])
    # NaN in a later tensor than the largest value (hypothesis found the
    # reference dropping it).
    for fn in (optcore.global_norm, ref.global_norm):
        for p in NORM_TYPES:
            assert math.isnan(fn([np.array([0.0, 5.0]), np.array([NAN])], p))
    # Iterators of arrays, as torch takes them.
    gs = [np.full(4, 2.0), np.full(5, -3.0)]
    assert optcore.global_norm(g for g in gs) == optcore.global_norm(gs)
    assert optcore.clip_grad_norm_(iter(gs), 1.0) == pytest.approx(math.sqrt(61))
    assert optcore.global_norm(gs) == pytest.approx(1.0, rel=1e-5)
    assert optcore.all_finite(g for g in gs)


@pytest.mark.parametrize("dtype", DTYPES)
def test_global_norm_matches_torch(torch, rng, dtype):
    xs = _arrays(rng, MIXED_SIZES, dtype)
    for p in NORM_TYPES:
        # torch refuses the inf-norm of a list holding an empty tensor; optcore
        # takes the max over the elements there are.
        ts = [torch.from_numpy(x) for x in xs if x.size or p != INF]
        want = torch.nn.utils.get_total_norm(ts, p)
        assert optcore.global_norm(xs, p) == pytest.approx(float(want),
                                                           rel=TORCH_TOL[dtype])


# ---- clip_grad_norm_ -----------------------------------------------------------

def _torch_clip(torch, grads, max_norm, norm_type, error_if_nonfinite=False):
    params = []
    for g in grads:
        p = torch.nn.Parameter(torch.zeros(g.shape, dtype=torch.from_numpy(g).dtype))
        p.grad = torch.from_numpy(g.copy())
        params.append(p)
    total = torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type,
                                           error_if_nonfinite=error_if_nonfinite)
    return float(total), [p.grad.numpy() for p in params]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("norm_type", NORM_TYPES)
def test_clip_grad_norm_matches_torch(torch, rng, num_threads, dtype, norm_type):
    sizes = [n for n in MIXED_SIZES if n] + [70_001]
    for max_norm in (0.5, 1e9, 0.0, -1.0, NAN):
        grads = _arrays(rng, sizes, dtype)
        want_total, want = _torch_clip(torch, grads, max_norm, norm_type)
        total = optcore.clip_grad_norm_(grads, max_norm, norm_type)
        assert isinstance(total, float)
        assert total == pytest.approx(want_total, rel=TORCH_TOL[dtype])
        for a, b in zip(grads, want):
            np.testing.assert_allclose(a, b, rtol=TORCH_TOL[dtype], atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf])
@pytest.mark.parametrize("bad", [INF, -INF, NAN])
def test_clip_grad_norm_non_finite_matches_torch(torch, rng, dtype, norm_type, bad):
    grads = _arrays(rng, [9, 1030], dtype)
    grads[1][1027] = bad
    saved = [g.copy() for g in grads]
    want_total, want = _torch_clip(torch, grads, 1.0, norm_type)
    total = optcore.clip_grad_norm_(grads, 1.0, norm_type)
    assert (math.isnan(total) and math.isnan(want_total)) or total == want_total
    for a, b in zip(grads, want):
        _same(a, b)        # inf norm: finite -> 0, inf -> NaN; NaN norm: all NaN
    # error_if_nonfinite: torch's error, nothing written.
    grads = [g.copy() for g in saved]
    with pytest.raises(RuntimeError, match="non-finite"):
        optcore.clip_grad_norm_(grads, 1.0, norm_type, error_if_nonfinite=True)
    for a, b in zip(grads, saved):
        _same(a, b)
    with pytest.raises(RuntimeError, match="non-finite"):
        _torch_clip(torch, saved, 1.0, norm_type, error_if_nonfinite=True)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
def test_clip_grad_norm_matches_reference(rng, num_threads, dtype, n):
    for norm_type in NORM_TYPES:
        for max_norm in (0.1, 1e9):
            g = random_array(rng, n, dtype, scale=3.0)
            r = g.copy()
            total = optcore.clip_grad_norm_(g, max_norm, norm_type)
            want = ref.clip_grad_norm_(r, max_norm, norm_type)
            assert total == pytest.approx(want, rel=NORM_RTOL, abs=0)
            assert_close(g, r, dtype)
            if n and max_norm < total:
                assert optcore.global_norm(g, norm_type) == pytest.approx(
                    max_norm * total / (total + 1e-6),
                    rel=1e-5 if dtype == np.float32 else 1e-9)


def test_clip_grad_norm_returns_norm_before_clipping():
    g = np.array([3.0, 4.0])
    assert optcore.clip_grad_norm_(g, 1.0) == 5.0
    np.testing.assert_allclose(g, [0.6, 0.8], rtol=1e-6)
    g = np.array([3.0, 4.0])
    assert optcore.clip_grad_norm_([g], 10.0) == 5.0        # below max_norm: unchanged
    np.testing.assert_array_equal(g, [3.0, 4.0])
    assert optcore.clip_grad_norm_([], 1.0) == 0.0


# ---- clip_grad_value_ ----------------------------------------------------------

SPECIALS = [0.0, -0.0, 0.3, -0.3, 1.0, -1.0, 2.5, -2.5, 1e30, -1e30, INF, -INF, NAN]


def _special_grads(rng, dtype, n):
    g = random_array(rng, n, dtype, scale=2.0)
    k = min(n, len(SPECIALS))
    g[rng.permutation(n)[:k]] = np.array(SPECIALS[:k], dtype)
    return g


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("clip_value", [1.0, 0.0, 0.25, -0.5, INF, NAN, 1e300])
def test_clip_grad_value_matches_torch(torch, rng, num_threads, dtype, clip_value):
    grads = [_special_grads(rng, dtype, n) for n in (13, 1, 40_000, 7)]
    if dtype == np.float32 and clip_value == 1e300:
        # torch refuses a bound beyond float32's range; optcore rounds it to
        # inf, which clamps nothing.
        saved = [g.copy() for g in grads]
        optcore.clip_grad_value_(grads, clip_value)
        for g, s in zip(grads, saved):
            _same(g, s)
        return
    params = []
    for g in grads:
        p = torch.nn.Parameter(torch.zeros(g.shape, dtype=torch.from_numpy(g).dtype))
        p.grad = torch.from_numpy(g.copy())
        params.append(p)
    torch.nn.utils.clip_grad_value_(params, clip_value)
    optcore.clip_grad_value_(grads, clip_value)
    for g, p in zip(grads, params):
        _same(g, p.grad.numpy())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
def test_clip_grad_value_matches_reference(rng, num_threads, dtype, n):
    for clip_value in (0.5, -0.5, NAN):
        g = random_array(rng, n, dtype)
        r = g.copy()
        optcore.clip_grad_value_(g, clip_value)
        ref.clip_grad_value_(r, clip_value)
        _same(g, r)


# ---- all_finite ------------------------------------------------------------------

def _positions(n):
    # Start, end, the tail past the last full group of 8, the 2048-element
    # early-exit boundaries, the middle.
    pos = {0, n - 1, n // 2, n - n % 8, n - n % 8 - 1, 2047, 2048, 2049}
    return sorted(p for p in pos if 0 <= p < n)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [n for n in SIZES if n] + [4099])
def test_all_finite_finds_every_position(num_threads, dtype, n):
    x = np.ones(n, dtype)
    assert optcore.all_finite(x) is True
    for pos in _positions(n):
        for bad in (NAN, INF, -INF):
            x[pos] = bad
            assert optcore.all_finite(x) is False, (pos, bad)
            assert optcore.all_finite([np.ones(5, dtype), np.ones(0, dtype), x]) is False
            assert ref.all_finite(x) is False
            x[pos] = 1.0
    assert optcore.all_finite(x) is True


def test_all_finite_every_position_small():
    for dtype in DTYPES:
        for n in range(1, 20):
            for pos in range(n):
                for bad in (NAN, INF, -INF):
                    x = np.full(n, -3.0, dtype)
                    x[pos] = bad
                    assert not optcore.all_finite(x)
                    assert not optcore.all_finite([np.ones(n, dtype), x])


@pytest.mark.parametrize("dtype", DTYPES)
def test_all_finite_large(num_threads, dtype):
    xs = [np.full(LARGE, 1e30, dtype), np.ones(40_000, dtype)]
    assert optcore.all_finite(xs)
    for t, pos in [(0, 0), (0, LARGE // 2 + 1), (0, LARGE - 1), (1, 39_999)]:
        xs[t][pos] = NAN
        assert not optcore.all_finite(xs)
        xs[t][pos] = -INF
        assert not optcore.all_finite(xs)
        xs[t][pos] = 1.0
    assert optcore.all_finite(xs)
    # Extreme finite values are finite.
    info = np.finfo(dtype)
    assert optcore.all_finite(np.array([info.max, -info.max, info.tiny, info.smallest_subnormal,
                                        -0.0], dtype))
    assert optcore.all_finite([]) is True


# ---- unscale_ --------------------------------------------------------------------

def _torch_unscale(torch, grads, inv_scale):
    ts = [torch.from_numpy(g.copy()) for g in grads]
    found = torch.zeros(1, dtype=torch.float32)
    torch._amp_foreach_non_finite_check_and_unscale_(
        ts, found, torch.tensor([inv_scale], dtype=torch.float32))
    return bool(found.item()), [t.numpy() for t in ts]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("inv_scale", [2.0**-16, 1.0, 0.5, float(np.float32(1 / 3)),
                                       2.0**100, 0.0])
@pytest.mark.parametrize("bad", [None, INF, -INF, NAN])
def test_unscale_matches_torch(torch, rng, num_threads, dtype, inv_scale, bad):
    grads = _arrays(rng, [7, 40_000, 1, 1027], dtype, scale=1e3)
    if bad is not None:
        grads[3][1025] = bad
    want_found, want = _torch_unscale(torch, grads, inv_scale)
    found = optcore.unscale_(grads, inv_scale)
    assert found is want_found
    assert found is (bad is not None)
    for a, b in zip(grads, want):
        _same(a, b)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
def test_unscale_matches_reference(rng, num_threads, dtype, n):
    for inv_scale, bad in [(0.25, None), (3.0, NAN), (1.0, INF), (1.0, None)]:
        g = random_array(rng, n, dtype)
        if bad is not None and n:
            g[n - 1] = bad
        r = g.copy()
        assert optcore.unscale_(g, inv_scale) is ref.unscale_(r, inv_scale)
        _same(g, r)


def test_unscale_checks_values_before_scaling():
    # torch's CPU kernel looks at the scaled gradients as given: a finite value
    # that overflows once unscaled is not reported.
    g = np.array([3e38, 1.0], np.float32)
    with np.errstate(over="ignore"):
        assert optcore.unscale_(g, 2.0) is False
    assert np.isinf(g[0])
    assert optcore.unscale_([], 2.0) is False


# ---- NaN/inf anywhere, random data ---------------------------------------------

_any_float = st.floats(allow_nan=True, allow_infinity=True, width=32)


@settings(max_examples=60, deadline=None)
@given(
    dtype=st.sampled_from(DTYPES),
    data=hnp.arrays(np.float64, st.integers(0, 70), elements=_any_float),
    split=st.integers(0, 70),
    clip_value=st.one_of(st.floats(-5, 5), st.just(INF), st.just(NAN)),
    inv_scale=st.one_of(st.floats(0, 1e6, width=32), st.just(1.0)),
    norm_type=st.sampled_from(NORM_TYPES),
)
def test_hypothesis_utilities_match_reference(dtype, data, split, clip_value, inv_scale,
                                              norm_type):
    x = data.astype(dtype)
    xs = [x[:split].copy(), x[split:].copy()]
    got = optcore.global_norm(xs, norm_type)
    want = ref.global_norm(xs, norm_type)
    assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want, rel=1e-12)
    assert optcore.all_finite(xs) is ref.all_finite(xs) is bool(np.isfinite(x).all())
    a, b = [t.copy() for t in xs], [t.copy() for t in xs]
    optcore.clip_grad_value_(a, clip_value)
    ref.clip_grad_value_(b, clip_value)
    for u, v in zip(a, b):
        _same(u, v)
    a, b = [t.copy() for t in xs], [t.copy() for t in xs]
    with np.errstate(over="ignore", invalid="ignore"):
        assert optcore.unscale_(a, inv_scale) is ref.unscale_(b, inv_scale)
    for u, v in zip(a, b):
        _same(u, v)


# ---- bad input changes nothing -------------------------------------------------

def test_bad_input_changes_nothing():
    rng = np.random.default_rng(3)
    g = random_array(rng, 10, np.float64)
    h = random_array(rng, 10, np.float64)
    saved = (g.copy(), h.copy())

    def check(call, exc, match):
        with pytest.raises(exc, match=match):
            call()
        _same(g, saved[0])
        _same(h, saved[1])

    for fn in (lambda x: optcore.clip_grad_norm_(x, 1.0),
               lambda x: optcore.clip_grad_value_(x, 0.1),
               lambda x: optcore.unscale_(x, 0.5)):
        check(lambda: fn([g, h.astype(np.float32)]), TypeError, "dtype")
        check(lambda: fn([g, g]), ValueError, "overlap")
        check(lambda: fn([g, h[::2]]), ValueError, "contiguous")
        check(lambda: fn([g, np.arange(3)]), TypeError, "int64")
        ro = h.copy()
        ro.flags.writeable = False
        check(lambda: fn([g, ro]), ValueError, "read-only")
    check(lambda: optcore.clip_grad_norm_([g, h], 1.0, norm_type=0.0), ValueError,
          "norm_type")
    check(lambda: optcore.clip_grad_norm_([g, h], 1.0, norm_type=-INF), ValueError,
          "norm_type")
    check(lambda: optcore.all_finite([g, h.astype(np.float32)]), TypeError, "dtype")


def test_exports():
    for name in ("global_norm", "clip_grad_norm_", "clip_grad_value_", "all_finite",
                 "unscale_"):
        assert name in optcore.__all__ and name in ref.__all__
        assert callable(getattr(optcore, name))
