"""mse_loss / mse_grad / mse_loss_grad and linear_mse_grad against
optcore.reference and against torch (forward value and autograd gradient)."""

import numpy as np
import pytest

import optcore
from optcore import reference
from support import (DTYPES, LARGE, SIZES, TORCH_RTOL, assert_close, assert_same_bits,
                     random_array)

REDUCTIONS = ["mean", "sum", "none"]

# The loss (mean/sum) is a sum of n squared differences accumulated in double
# by both sides: the kernel in fixed blocks of 8 lanes, NumPy pairwise. The
# terms are exact (a float32 difference squares exactly in double; a float64
# square rounds identically on both sides) and non-negative, so only the
# summation order differs: a relative error of a few (log2 n) double roundings
# (measured <= 3.4e-15 up to n = 4e6).
LOSS_RTOL = 1e-14


def _pair(rng, shape, dtype):
    n = int(np.prod(shape))
    return (random_array(rng, n, dtype).reshape(shape),
            random_array(rng, n, dtype).reshape(shape))


def check_loss(actual, expected, reduction, what=""):
    if reduction == "none":
        # Elementwise (p - t)**2 in the buffer's dtype on both sides.
        assert_same_bits(actual, expected, what=what)
    else:
        assert isinstance(actual, float), type(actual)
        np.testing.assert_allclose(actual, expected, rtol=LOSS_RTOL, atol=0, err_msg=what)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("size", SIZES + [LARGE])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_matches_reference(dtype, size, reduction, num_threads, rng):
    pred, target = _pair(rng, (size,), dtype)
    keep = pred.copy(), target.copy()
    loss = optcore.mse_loss(pred, target, reduction)
    grad = optcore.mse_grad(pred, target, reduction=reduction)
    fused_loss, fused_grad = optcore.mse_loss_grad(pred, target, reduction=reduction)
    ref_loss = reference.mse_loss(pred, target, reduction)
    ref_grad = reference.mse_grad(pred, target, reduction=reduction)
    if size:
        check_loss(loss, ref_loss, reduction, "mse_loss")
    # The gradient is scale * (pred - target) in the buffer's dtype on both sides.
    assert_same_bits(grad, ref_grad, what="mse_grad")
    # The one-pass form gives exactly the separate results.
    assert_same_bits(np.asarray(fused_loss), np.asarray(loss), what="mse_loss_grad loss")
    assert_same_bits(fused_grad, grad, what="mse_loss_grad grad")
    assert_same_bits(pred, keep[0], what="pred untouched")
    assert_same_bits(target, keep[1], what="target untouched")


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_shapes_are_kept(dtype, reduction, rng):
    pred, target = _pair(rng, (5, 3, 7), dtype)
    grad = optcore.mse_grad(pred, target, reduction=reduction)
    assert grad.shape == pred.shape and grad.dtype == pred.dtype
    assert_same_bits(grad, reference.mse_grad(pred, target, reduction=reduction))
    loss, grad2 = optcore.mse_loss_grad(pred, target, reduction=reduction)
    assert_same_bits(grad2, grad)
    if reduction == "none":
        assert loss.shape == pred.shape and loss.dtype == pred.dtype
        assert_same_bits(loss, reference.mse_loss(pred, target, "none"))


@pytest.mark.parametrize("func", ["mse_grad", "mse_loss_grad"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_out(func, dtype, reduction, rng):
    pred, target = _pair(rng, (4, 25), dtype)
    out = random_array(rng, 100, dtype).reshape(4, 25)
    res = getattr(optcore, func)(pred, target, reduction=reduction, out=out)
    grad = res[1] if func == "mse_loss_grad" else res
    assert grad is out
    assert_same_bits(out, reference.mse_grad(pred, target, reduction=reduction))
    if func == "mse_loss_grad":
        check_loss(res[0], reference.mse_loss(pred, target, reduction), reduction)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_out_of_another_shape_is_filled_in_flat_order(dtype, rng):
    # Buffers are flat for the kernels: out needs the size, not the shape.
    pred, target = _pair(rng, (6, 5), dtype)
    out = np.empty(30, dtype)
    assert optcore.mse_grad(pred, target, out=out) is out
    assert_same_bits(out, reference.mse_grad(pred, target).reshape(-1))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_read_only_inputs(dtype, reduction, rng):
    pred, target = _pair(rng, (1025,), dtype)
    keep = pred.copy(), target.copy()
    pred.flags.writeable = False
    target.flags.writeable = False
    loss, grad = optcore.mse_loss_grad(pred, target, reduction=reduction)
    check_loss(loss, reference.mse_loss(pred, target, reduction), reduction)
    assert_same_bits(grad, reference.mse_grad(pred, target, reduction=reduction))
    assert_same_bits(pred, keep[0])
    assert_same_bits(target, keep[1])


@pytest.mark.parametrize("layout", ["strided", "transposed", "negative-stride"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_non_contiguous_inputs(dtype, reduction, layout, num_threads, rng):
    # Inputs are only read: a non-contiguous one may be (and is) copied.
    base_p, base_t = _pair(rng, (2 * 40_000,), dtype)
    if layout == "strided":
        pred, target = base_p[::2], base_t[1::2]
    elif layout == "transposed":
        pred, target = base_p.reshape(200, 400).T, base_t.reshape(200, 400).T
    else:
        pred, target = base_p[::-1], base_t[::-3]
        pred = pred[: target.size]
    keep = base_p.copy(), base_t.copy()
    assert not pred.flags.c_contiguous
    cp, ct = np.ascontiguousarray(pred), np.ascontiguousarray(target)
    loss, grad = optcore.mse_loss_grad(pred, target, reduction=reduction)
    assert grad.shape == pred.shape
    check_loss(loss, reference.mse_loss(cp, ct, reduction), reduction)
    assert_same_bits(grad, reference.mse_grad(cp, ct, reduction=reduction))
    check_loss(optcore.mse_loss(pred, target, reduction),
               reference.mse_loss(cp, ct, reduction), reduction)
    assert_same_bits(base_p, keep[0])
    assert_same_bits(base_t, keep[1])


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_empty_input(dtype):
    pred, target = np.empty(0, dtype), np.empty(0, dtype)
    # torch: mean over no elements is nan, sum is 0.
    assert np.isnan(optcore.mse_loss(pred, target, "mean"))
    assert optcore.mse_loss(pred, target, "sum") == 0.0
    assert optcore.mse_loss(pred, target, "none").shape == (0,)
    for reduction in REDUCTIONS:
        loss, grad = optcore.mse_loss_grad(pred, target, reduction=reduction)
        assert grad.shape == (0,) and grad.dtype == dtype
        assert optcore.mse_grad(pred, target, reduction=reduction).shape == (0,)
    loss, _ = optcore.mse_loss_grad(pred, target, reduction="mean")
    assert np.isnan(loss)
    out = np.empty((0, 3), dtype)
    assert optcore.mse_grad(pred, target, out=out) is out


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_nan_and_inf_propagate(dtype, rng):
    pred, target = _pair(rng, (40,), dtype)
    pred[3], target[7], pred[11], target[11] = np.nan, np.inf, np.inf, np.inf
    for reduction in REDUCTIONS:
        loss, grad = optcore.mse_loss_grad(pred, target, reduction=reduction)
        with np.errstate(invalid="ignore"):      # inf - inf in NumPy warns
            ref_grad = reference.mse_grad(pred, target, reduction=reduction)
            ref_loss = reference.mse_loss(pred, target, reduction)
        assert_same_bits(grad, ref_grad)
        if reduction == "none":
            assert_same_bits(loss, ref_loss)
        else:
            assert np.isnan(loss) and np.isnan(ref_loss)


# ---- linear_mse_grad ------------------------------------------------------

LINEAR_CASES = [
    # (w shape, b shape or None)
    ((10,), None),
    ((10,), ()),
    ((10,), (1,)),
    ((10, 3), None),
    ((10, 3), (3,)),
]


def _linear(rng, n, w_shape, b_shape, dtype):
    d = w_shape[0]
    X = random_array(rng, n * d, dtype).reshape(n, d)
    w = random_array(rng, int(np.prod(w_shape)), dtype).reshape(w_shape)
    y = random_array(rng, n * (w_shape[1] if len(w_shape) == 2 else 1), dtype)
    y = y.reshape((n,) + w_shape[1:])
    b = None if b_shape is None else random_array(
        rng, int(np.prod(b_shape)), dtype).reshape(b_shape)
    return X, y, w, b


@pytest.mark.parametrize("n", [1, 33, 50_000])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("w_shape,b_shape", LINEAR_CASES,
                         ids=["w1d", "w1d-b0d", "w1d-b1", "w2d", "w2d-b"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_linear_matches_reference(dtype, w_shape, b_shape, reduction, n, rng):
    X, y, w, b = _linear(rng, n, w_shape, b_shape, dtype)
    keep = [a.copy() for a in (X, y, w) + (() if b is None else (b,))]
    loss, grad_w, grad_b = optcore.linear_mse_grad(X, y, w, b, reduction=reduction)
    rloss, rgrad_w, rgrad_b = reference.linear_mse_grad(X, y, w, b, reduction=reduction)
    np.testing.assert_allclose(loss, rloss, rtol=LOSS_RTOL)
    assert grad_w.shape == w.shape and grad_w.dtype == dtype
    # Same residual bits and the same BLAS call on both sides.
    assert_close(grad_w, rgrad_w, dtype)
    if b is None:
        assert grad_b is None and rgrad_b is None
    else:
        assert grad_b.shape == b.shape and grad_b.dtype == dtype
        assert_close(grad_b, rgrad_b, dtype)
    for a, k in zip((X, y, w) + (() if b is None else (b,)), keep):
        assert_same_bits(a, k)


# ---- against torch --------------------------------------------------------

# torch's float32 forward sums in float32 (optcore in double): a few float32
# roundings of the total apart. Its backward is norm * (pred - target) * 1.
TORCH_LOSS_RTOL = {np.float32: 1e-5, np.float64: 1e-12}


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("size", [1, 17, 1025, 100_003])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_matches_torch_loss_and_autograd(torch, dtype, size, reduction, rng):
    pred, target = _pair(rng, (size,), dtype)
    tp = torch.from_numpy(pred.copy()).requires_grad_(True)
    tt = torch.from_numpy(target.copy())
    tloss = torch.nn.functional.mse_loss(tp, tt, reduction=reduction)
    if reduction == "none":
        # d/dpred of sum(none) is the elementwise gradient mse_grad returns.
        tloss.backward(torch.ones_like(tloss))
    else:
        tloss.backward()
    loss, grad = optcore.mse_loss_grad(pred, target, reduction=reduction)
    if reduction == "none":
        assert_close(loss, tloss.detach().numpy(), dtype)
    else:
        np.testing.assert_allclose(loss, tloss.item(), rtol=TORCH_LOSS_RTOL[dtype])
    assert_close(grad, tp.grad.numpy(), dtype)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("w_shape,b_shape", LINEAR_CASES,
                         ids=["w1d", "w1d-b0d", "w1d-b1", "w2d", "w2d-b"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_linear_matches_torch_autograd(torch, dtype, w_shape, b_shape, reduction, rng):
    X, y, w, b = _linear(rng, 257, w_shape, b_shape, dtype)
    tw = torch.from_numpy(w.copy()).requires_grad_(True)
    tX, ty = torch.from_numpy(X), torch.from_numpy(y)
    pred = tX @ tw
    tb = None
    if b is not None:
        tb = torch.from_numpy(b.copy()).requires_grad_(True)
        pred = pred + tb
    tloss = torch.nn.functional.mse_loss(pred, ty, reduction=reduction)
    tloss.backward()
    loss, grad_w, grad_b = optcore.linear_mse_grad(X, y, w, b, reduction=reduction)
    np.testing.assert_allclose(loss, tloss.item(), rtol=TORCH_LOSS_RTOL[dtype])
    # Sums of 257 products computed by different BLAS kernels: relative to the
    # gradient's scale.
    for mine, theirs in [(grad_w, tw.grad)] + ([] if b is None else [(grad_b, tb.grad)]):
        theirs = theirs.numpy()
        scale = float(np.max(np.abs(theirs)))
        np.testing.assert_allclose(mine, theirs, rtol=0,
                                   atol=TORCH_RTOL[dtype] * 0.1 * scale)
    if b is None:
        assert grad_b is None
