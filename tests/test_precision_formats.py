"""optcore.precision, the definitions the low-precision kernels are held to:
the bfloat16/float16 roundings, stochastic rounding (unbiased, a function of
seed, step, tensor and element only) and the block-quantized int8 maps
(exact round trips, nearest codes by brute force, the unsigned map's floor,
block absmax, non-finite, all-zero and subnormal blocks). The kernels' bits
against the twins are tests/test_precision.py's."""

import doctest
import math

import ml_dtypes
import numpy as np
import pytest

import optcore
import optcore.reference
from optcore import precision as pr
from optcore.precision import QBLOCK, QuantizedState

from support import assert_same_bits


# ---- stochastic rounding -----------------------------------------------------------------

@pytest.mark.parametrize("dtype, lo, ulp", [
    ("bfloat16", 1.0, 2.0**-7),                 # bfloat16's ulp in [1, 2)
    ("bfloat16", -3.0, -2.0**-6),
    ("float16", 1.0, 2.0**-10),                 # float16's ulp in [1, 2)
    ("float16", -1024.0, -1.0),
    ("float16", 5 * 2.0**-24, 2.0**-24),        # float16's subnormal grid
    ("float16", -(2.0**-14 - 2.0**-24), -(2.0**-24)),   # up to its smallest normal
])
def test_stochastic_rounding_is_unbiased(dtype, lo, ulp):
    rng = np.random.default_rng(1)
    lo = np.float32(lo)
    for frac in (0.25, 0.5, 0.9, 1 / 3):
        x = np.float32(lo + frac * ulp)
        # many elements of one call ...
        n = 1 << 17
        r = pr.stochastic_round(np.full(n, x), seed=int(rng.integers(2**63)), step=3,
                                dtype=dtype)
        assert set(np.unique(r)) <= {lo, np.float32(lo + ulp)}
        bound = 6 * abs(ulp) * math.sqrt(frac * (1 - frac) / n)
        assert abs(float(r.mean(dtype=np.float64)) - float(x)) < bound
        # ... and one element over many seeds
        seeds = np.array([pr.stochastic_round([x], seed=s, step=1, dtype=dtype)[0]
                          for s in range(4000)])
        bound = 6 * abs(ulp) * math.sqrt(frac * (1 - frac) / seeds.size)
        assert abs(float(seeds.mean(dtype=np.float64)) - float(x)) < bound


def test_float16_stochastic_rounding_takes_a_neighbour(rng):
    # every float32 magnitude, the float16 range's edges and specials: each
    # result is x itself when float16 holds it, else one of its two float16
    # neighbours (inf beyond the largest float16); NaN stays NaN
    x = (rng.standard_normal(200000) * 2.0 ** rng.uniform(-30, 17, 200000)).astype(np.float32)
    x[:10] = [0.0, -0.0, np.inf, -np.inf, np.nan, 65504.0, 65519.0, 65530.0, 2.0**-24,
              2.0**-14 - 2.0**-25]
    r = pr.f16_stochastic(x, rng.integers(0, 2**32, x.size, dtype=np.uint32)).view(np.float16)
    with np.errstate(over="ignore", invalid="ignore"):
        near = x.astype(np.float16)
        toward = np.where(near.astype(np.float32) == x, near, np.where(
            np.abs(near.astype(np.float32)) > np.abs(x), np.nextafter(near, np.float16(0)), near))
        away = np.where(toward.astype(np.float32) == x, toward,
                        np.nextafter(toward, np.copysign(np.float16(np.inf), x).astype(np.float16)))
    finite = ~np.isnan(x)
    assert np.all((r == toward) | (r == away) | ~finite)
    assert np.all(np.isnan(r) == np.isnan(x))
    assert_same_bits(np.signbit(r[finite]), np.signbit(x[finite]))
    exact = x[finite & (near.astype(np.float32) == x)]
    assert_same_bits(pr.stochastic_round(exact, seed=2, dtype="float16"), exact)
    with pytest.raises(ValueError, match="dtype"):
        pr.stochastic_round(x, seed=0, dtype="float32")


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_stochastic_rounding_in_a_kernel_is_unbiased_for(dtype):
    # p32 = 1 + a quarter ulp: the low-precision params average it
    n = 1 << 17
    ulp = 2.0**-7 if dtype == "bfloat16" else 2.0**-10
    p = (pr.bfloat16_array(np.ones(n, np.float32)) if dtype == "bfloat16"
         else np.ones(n, np.float16))
    g = np.full(n, -ulp / 4, np.float32)
    optcore.sgd_step(p, g, step=1, lr=1.0, rounding="stochastic", seed=3)
    v = p.astype(np.float32)
    assert set(np.unique(v)) == {np.float32(1.0), np.float32(1 + ulp)}
    bound = 6 * ulp * math.sqrt(0.25 * 0.75 / n)
    assert abs(float(v.mean(dtype=np.float64)) - (1 + ulp / 4)) < bound


def test_stochastic_rounding_in_a_kernel_is_unbiased():
    # p32 = 1 + 2**-9 (a quarter ulp above 1): the bfloat16 params average it
    n = 1 << 17
    p = pr.bfloat16_array(np.ones(n, np.float32))
    g = np.full(n, -(2.0**-9), np.float32)
    optcore.sgd_step(p, g, step=1, lr=1.0, rounding="stochastic", seed=3)
    v = p.astype(np.float32)
    assert set(np.unique(v)) == {np.float32(1.0), np.float32(1 + 2.0**-7)}
    bound = 6 * 2.0**-7 * math.sqrt(0.25 * 0.75 / n)
    assert abs(float(v.mean(dtype=np.float64)) - (1 + 2.0**-9)) < bound


def test_stochastic_rounding_depends_on_seed_and_step_only(rng):
    x = rng.standard_normal(5000).astype(np.float32)
    a = pr.stochastic_round(x, seed=5, step=2)
    assert_same_bits(a, pr.stochastic_round(x, seed=5, step=2))
    for other in (dict(seed=6, step=2), dict(seed=5, step=3), dict(seed=5 + 2**32, step=2),
                  dict(seed=5, step=2, tensor=1)):
        assert a.tobytes() != pr.stochastic_round(x, **other).tobytes(), other
    # exactly representable values stay; the others go to a neighbour
    b = pr.bfloat16_round(x)
    assert_same_bits(pr.stochastic_round(b, seed=9), b)
    assert np.all(np.abs(a - x) < np.abs(x) * 2.0**-7)
    # the kernel's bits: same (seed, step) same result, another seed another
    def step(seed, stp):
        p = pr.bfloat16_array(x)
        optcore.sgd_step(p, x * 1e-3, step=stp, lr=1.0, rounding="stochastic", seed=seed)
        return p
    assert_same_bits(step(5, 2), step(5, 2))
    assert step(5, 2).tobytes() != step(6, 2).tobytes()
    assert step(5, 2).tobytes() != step(5, 3).tobytes()
    want = pr.stochastic_round(pr.bfloat16_round(x) - np.float32(1.0) * (x * np.float32(1e-3)),
                               seed=5, step=2)
    assert_same_bits(step(5, 2).astype(np.float32), want)


# ---- optcore.precision: roundings and the int8 maps ------------------------------------------

def test_precision_doctests():
    assert doctest.testmod(pr).failed == 0


def test_bfloat16_and_float16_nearest_match_ml_dtypes(rng):
    x = (rng.standard_normal(20000) * 10.0 ** rng.uniform(-40, 38, 20000)).astype(np.float32)
    x[:6] = [0.0, -0.0, np.inf, -np.inf, 1e-45, -3.4e38]
    assert_same_bits(pr.bfloat16_array(x), x.astype(ml_dtypes.bfloat16))
    with np.errstate(over="ignore"):
        assert_same_bits(pr.f16_nearest(x), x.astype(np.float16).view(np.uint16))
    h = pr.bf16_nearest(np.array([np.nan, -np.nan], np.float32))
    assert np.isnan(pr.bf16_load(h)).all()


def _codes_values(signed):
    codes = np.arange(256, dtype=np.uint8)
    if signed:
        codes = codes[codes != 0x80]            # -0: the same value as code 0
    values = pr.q8_values(codes, not signed)
    keep = np.abs(values) <= 1                  # the codes above 1 are never produced
    return codes[keep], values[keep]


@pytest.mark.parametrize("signed", [True, False], ids=["signed", "unsigned"])
@pytest.mark.parametrize("absmax", [1.0, 4.0, 2.0**-20, 3.0, 0.1])
def test_representable_values_round_trip(signed, absmax):
    codes, values = _codes_values(signed)
    top = int(np.argmax(values))                # the code of 1 (the block's absmax)
    x = (values * np.float32(absmax)).astype(np.float32)
    q = QuantizedState.from_float(x, signed=signed)
    assert q.absmax[0] == np.float32(absmax)
    np.testing.assert_array_equal(q.codes, codes)
    assert values[top] == 1
    if math.log2(absmax).is_integer():
        assert_same_bits(q.dequantize(), x)
        assert_same_bits(QuantizedState.from_float(q.dequantize(), signed=signed).codes,
                         q.codes)


@pytest.mark.parametrize("signed", [True, False], ids=["signed", "unsigned"])
def test_nearest_code_by_brute_force(signed, rng):
    codes, values = _codes_values(signed)
    n = 40 * QBLOCK
    mag = 2.0 ** rng.uniform(-22, 3, n)
    x = (mag * (rng.choice([-1, 1], n) if signed else 1)).astype(np.float32)
    q = QuantizedState.from_float(x, signed=signed)
    inv = np.repeat(np.float32(1) / q.absmax, QBLOCK)[:n]
    a = (np.abs(x) * inv).astype(np.float32).astype(np.float64)    # the scaled value
    a = np.minimum(a, 1.0)
    got = pr.q8_values(q.codes, not signed).astype(np.float64)
    same_sign = (codes >= 0x80) if signed else np.ones(codes.size, bool)
    for i in range(n):
        cand = values.astype(np.float64)
        if signed:
            neg = x[i] < 0
            cand = np.abs(cand[(same_sign == neg) | (codes == 0)])
        if not signed and a[i] > 0:
            cand = cand[cand > 0]               # the unsigned map: never 0 for a > 0
        d = np.abs(cand - a[i])
        best = np.sort(d)[:2]
        if best[1] == best[0]:
            continue                            # a tie (ties to even: not brute-forced)
        assert abs(abs(got[i]) - a[i]) == best[0], (i, x[i], a[i], got[i])
        if got[i] != 0:
            assert (got[i] < 0) == (x[i] < 0)


def test_unsigned_map_never_rounds_a_positive_value_to_zero():
    for tiny in (1e-45, 1e-38, 1e-30, 1e-10):
        x = np.full(QBLOCK + 3, tiny, np.float32)
        x[0] = 3e38
        x[QBLOCK] = 1.0
        q = QuantizedState.from_float(x, signed=False)
        assert (q.codes != 0).all()
        assert (q.dequantize() > 0).all()
    s = QuantizedState.from_float(np.array([1.0, 1e-6, 2.0**-16, 0.0], np.float32), signed=True)
    np.testing.assert_array_equal(s.dequantize()[1:], 0.0)      # the signed map may
    q = QuantizedState.from_float(np.array([1.0, 0.0], np.float32), signed=False)
    assert q.dequantize()[1] == 0.0                              # exact zero stays zero


@pytest.mark.parametrize("signed", [True, False], ids=["signed", "unsigned"])
def test_subnormal_block(signed, rng):
    # absmax below 2**-126: 1/absmax would overflow; the block is scaled first
    x = (rng.uniform(0.5, 1.0, QBLOCK + 3) * 1e-40).astype(np.float32)
    if signed:
        x[::2] *= -1
    x[3] = 0.0
    q = QuantizedState.from_float(x, signed=signed)
    assert q.codes[3] == 0 and (np.delete(q.codes, 3) != 0).all()
    d = q.dequantize()
    assert d[3] == 0
    top = int(np.argmax(np.abs(x[:QBLOCK])))
    assert_same_bits(d[top], x[top])
    # the kernels' bits (a float32 param, an int8 state: the tiled path)
    p = rng.standard_normal(x.size).astype(np.float32)
    g = (rng.standard_normal(x.size) * 1e-41).astype(np.float32)
    if signed:
        a, b = q.copy(), q.copy()
        optcore.sgd_step(p.copy(), g, a, step=2, lr=0.1, momentum=0.9)
        optcore.reference.sgd_step(p.copy(), g, b, step=2, lr=0.1, momentum=0.9)
    else:
        a, b = q.copy(), q.copy()
        optcore.adagrad_step(p.copy(), g, a, step=2, lr=0.1)
        optcore.reference.adagrad_step(p.copy(), g, b, step=2, lr=0.1)
    assert_same_bits(a.codes, b.codes)
    assert_same_bits(a.absmax, b.absmax)
    assert (a.codes[:QBLOCK] != 0).sum() > QBLOCK // 2


def test_block_absmax(rng):
    x = rng.standard_normal(5 * QBLOCK + 17).astype(np.float32)
    for signed in (True, False):
        q = QuantizedState.from_float(x if signed else np.abs(x), signed=signed)
        assert q.absmax.shape == (6,)
        for b in range(6):
            assert q.absmax[b] == np.abs(x[b * QBLOCK:(b + 1) * QBLOCK]).max()
        assert q.codes.shape == x.shape
        err = np.abs(q.dequantize() - (x if signed else np.abs(x)))
        # 3 (4) fraction bits: half a relative ulp, or the 2**-15 floor
        scale = np.repeat(q.absmax, QBLOCK)[:x.size]
        assert (err <= np.maximum(np.abs(x) * 2.0 ** (-4 if signed else -5),
                                  scale * 2.0**-15)).all()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_block_reads_back_nan(bad, rng):
    x = rng.standard_normal(3 * QBLOCK).astype(np.float32)
    x[QBLOCK + 5] = bad
    x[QBLOCK + 6] = 0.0
    x[2 * QBLOCK:] = 0.0                        # an all-zero block
    for signed in (True, False):
        q = QuantizedState.from_float(x if signed else np.abs(x), signed=signed)
        d = q.dequantize()
        assert np.isnan(d[QBLOCK:2 * QBLOCK]).all()
        assert np.isfinite(d[:QBLOCK]).all()
        assert q.absmax[2] == 0 and (q.codes[2 * QBLOCK:] == 0).all()
        assert_same_bits(d[2 * QBLOCK:], np.zeros(QBLOCK, np.float32))
        assert np.isnan(q.absmax[1]) or np.isinf(q.absmax[1])


def test_quantized_state_constructor(rng):
    q = QuantizedState.zeros((2, 300), signed=False)
    assert q.shape == (2, 300) and q.absmax.shape == (3,) and q.nbytes == 600 + 12
    assert not q.signed and "unsigned" in repr(q)
    with pytest.raises(ValueError, match="absmax"):
        QuantizedState(np.zeros(300, np.uint8), np.zeros(1, np.float32), signed=True)
    with pytest.raises(TypeError, match="codes"):
        QuantizedState(np.zeros(3, np.int8), np.zeros(1, np.float32), signed=True)
    with pytest.raises(TypeError, match="absmax"):
        QuantizedState(np.zeros(3, np.uint8), np.zeros(1, np.float64), signed=True)
    c = q.copy()
    assert c.codes is not q.codes and c.absmax is not q.absmax
