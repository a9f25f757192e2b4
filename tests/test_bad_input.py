"""Bad input, row by row (docs/contract.md §8): the right error type, a message
naming the argument (torch's wording for hyperparameters), and every buffer
left byte-for-byte as it was; what is allowed (shared or strided gradients,
empty arrays, non-finite gradients) works."""

import math
import re

import numpy as np
import pytest

import optcore
from optcore import reference
import optcore.reference as ref

from registry import (ADAM, ADAMW, BY_NAME, FAMILIES, OPTIMIZERS, SGD, TorchTwin, all_on,
    call_with_states, copy_buffers, flat_arrays, new_grads, random_states,
    shaped_buffers, zero_state)
from support import DTYPES, TORCH_RTOL, assert_same_bits, random_array


# ==== SGD, Adam, AdamW: every buffer rule, every hyperparameter rule =========

N = 12
NAN = math.nan
MULTI_SHAPES = [(5,), (2, 3), (7,)]

# Options under which every state buffer of the family is used.
FULL_OPTS = {"sgd": dict(lr=0.1, momentum=0.9),
             "adam": dict(lr=0.01, amsgrad=True),
             "adamw": dict(lr=0.01, amsgrad=True)}

BAD_DTYPES = [np.int32, np.int64, np.float16, np.complex64, np.complex128, object,
              np.bool_, ">f4"]


def args_of(family):
    return ("param", "grad") + family.states


def written_args(family):
    return ("param",) + family.states


def family_args(select=args_of, exclude=()):
    return [pytest.param(f, a, id=f"{f.short}-{a}")
            for f in FAMILIES for a in select(f) if a not in exclude]


# ---- helpers ----------------------------------------------------------------

def _arrays(obj):
    if isinstance(obj, np.ndarray):
        yield obj
        base = obj.base
        while isinstance(base, np.ndarray):
            yield base
            base = base.base
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _arrays(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _arrays(v)


def snapshot(*objs):
    """Every array reachable from objs (and the arrays they view), with its
    bytes, for assert_unchanged."""
    seen, snap = set(), []
    for obj in objs:
        for a in _arrays(obj):
            if id(a) not in seen:
                seen.add(id(a))
                snap.append((a, a.tobytes()))
    return snap


def assert_unchanged(snap):
    for a, data in snap:
        assert a.tobytes() == data, "a buffer was modified by a call that raised"


def assert_names(message, *names):
    for name in names:
        pattern = r"(?<![\w\[])" + re.escape(name) + r"(?![\w\[])"
        assert re.search(pattern, message, re.IGNORECASE), (
            f"message does not name {name!r}: {message}")


def expect_step_error(family, bufs, opts, exc, *names, step=1):
    snap = snapshot(bufs)
    with pytest.raises(exc) as info:
        family.run(True, bufs, step, opts)
    assert_names(str(info.value), *names)
    assert_unchanged(snap)
    return str(info.value)


def _other(family, arg):
    """The argument an error about ``arg`` is reported against."""
    return "grad" if arg == "param" else "param"


def _bufs(rng, family, dtype=np.float32, shapes=(N,)):
    return shaped_buffers(rng, family, shapes, dtype)


def _as_dtype(a, dtype):
    return a.astype(dtype) if dtype is not object else np.array(a.tolist(), dtype=object)


# ---- dtype --------------------------------------------------------------------

def _dtype_cases():
    # float16 params and grads are supported (computed in float32); float16
    # states are not
    return [pytest.param(p.values[0], p.values[1], bad,
                         id=f"{p.id}-{np.dtype(bad).name if bad != '>f4' else 'float32-big-endian'}")
            for p in family_args() for bad in BAD_DTYPES
            if not (bad is np.float16 and p.values[1] in ("param", "grad"))]


@pytest.mark.parametrize("family,arg,bad", _dtype_cases())
def test_unsupported_dtype(family, arg, bad, rng):
    bufs = _bufs(rng, family)
    bufs[arg] = _as_dtype(bufs[arg], bad)
    msg = expect_step_error(family, bufs, FULL_OPTS[family.short], TypeError, arg)
    assert str(np.dtype(bad)) in msg


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("family,arg", family_args())
def test_mixed_float_dtypes(family, arg, dtype, rng):
    bufs = _bufs(rng, family, dtype)
    other = np.float64 if dtype == np.float32 else np.float32
    bufs[arg] = bufs[arg].astype(other)
    msg = expect_step_error(family, bufs, FULL_OPTS[family.short], TypeError,
                            arg, _other(family, arg))
    assert "float32" in msg and "float64" in msg


@pytest.mark.parametrize("family,arg", family_args())
def test_not_a_buffer(family, arg, rng):
    bufs = _bufs(rng, family)
    bufs[arg] = 3.5
    expect_step_error(family, bufs, FULL_OPTS[family.short], TypeError, arg)


# ---- sizes and list structure ---------------------------------------------------

@pytest.mark.parametrize("delta", [1, -1])
@pytest.mark.parametrize("family,arg", family_args())
def test_size_mismatch(family, arg, delta, rng):
    bufs = _bufs(rng, family)
    bufs[arg] = random_array(rng, N + delta, np.float32)
    expect_step_error(family, bufs, FULL_OPTS[family.short], ValueError,
                      arg, _other(family, arg))


@pytest.mark.parametrize("family,arg", family_args())
def test_list_length_mismatch(family, arg, rng):
    bufs = _bufs(rng, family, shapes=MULTI_SHAPES)
    bufs[arg] = bufs[arg][:2]
    expect_step_error(family, bufs, FULL_OPTS[family.short], ValueError,
                      arg, _other(family, arg))


@pytest.mark.parametrize("family,arg", family_args(exclude=("param",)))
def test_single_array_where_param_is_a_list(family, arg, rng):
    bufs = _bufs(rng, family, shapes=MULTI_SHAPES)
    bufs[arg] = bufs[arg][0]
    expect_step_error(family, bufs, FULL_OPTS[family.short], ValueError, arg, "param")


@pytest.mark.parametrize("family,arg", family_args(exclude=("param",)))
def test_list_where_param_is_a_single_array(family, arg, rng):
    bufs = _bufs(rng, family)
    bufs[arg] = [bufs[arg]]
    expect_step_error(family, bufs, FULL_OPTS[family.short], ValueError, arg, "param")


# ---- one bad tensor inside a multi-tensor call -------------------------------------

def _defects(family):
    out = []
    for arg in args_of(family):
        out += [(arg, "int32", TypeError), (arg, "float64", TypeError),
                (arg, "size", ValueError)]
        if arg != "grad":
            out += [(arg, "strided", ValueError), (arg, "read-only", ValueError)]
        if arg in family.states:
            out.append((arg, "None", ValueError))
    return [pytest.param(family, a, d, e, id=f"{family.short}-{a}-{d}") for a, d, e in out]


@pytest.mark.parametrize("family,arg,defect,exc",
                         [p for f in FAMILIES for p in _defects(f)])
def test_one_bad_tensor_in_a_list(family, arg, defect, exc, rng):
    bufs = _bufs(rng, family, shapes=MULTI_SHAPES)
    good = bufs[arg][1]
    if defect == "int32":
        bad = good.astype(np.int32)
    elif defect == "float64":
        bad = good.astype(np.float64)
    elif defect == "size":
        bad = random_array(rng, good.size + 1, np.float32)
    elif defect == "strided":
        bad = random_array(rng, 2 * good.size, np.float32)[::2]
    elif defect == "read-only":
        bad = good.copy()
        bad.flags.writeable = False
    else:
        bad = None
    bufs[arg][1] = bad
    # Tensor 0 comes first and is valid: it must not be updated either.
    expect_step_error(family, bufs, FULL_OPTS[family.short], exc, f"{arg}[1]")


# ---- contiguity and writability -----------------------------------------------------

def _non_contiguous(rng, layout, n=N):
    if layout == "strided":
        return random_array(rng, 2 * n, np.float32)[::2]
    if layout == "transposed":
        return random_array(rng, n, np.float32).reshape(3, n // 3).T
    return random_array(rng, n, np.float32)[::-1]


LAYOUTS = ["strided", "transposed", "reversed"]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("family,arg", family_args(written_args))
def test_non_contiguous_param_or_state(family, arg, layout, rng):
    bufs = _bufs(rng, family)
    bufs[arg] = _non_contiguous(rng, layout)
    assert not bufs[arg].flags.c_contiguous
    msg = expect_step_error(family, bufs, FULL_OPTS[family.short], ValueError, arg)
    assert "contiguous" in msg


@pytest.mark.parametrize("family,arg", family_args(written_args))
def test_read_only_param_or_state(family, arg, rng):
    bufs = _bufs(rng, family)
    bufs[arg].flags.writeable = False
    msg = expect_step_error(family, bufs, FULL_OPTS[family.short], ValueError, arg)
    assert "read-only" in msg


@pytest.mark.parametrize("layout", LAYOUTS + ["read-only"])
@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.short)
def test_grad_may_be_read_only_or_non_contiguous(family, layout, rng):
    # grad is only read: a strided one is copied, a read-only one is fine.
    bufs = _bufs(rng, family)
    if layout == "read-only":
        bufs["grad"].flags.writeable = False
    else:
        bufs["grad"] = _non_contiguous(rng, layout)
    grad_before = bufs["grad"].copy()
    ref = copy_buffers(bufs)
    ref["grad"] = np.ascontiguousarray(bufs["grad"])
    family.run(True, bufs, 1, FULL_OPTS[family.short])
    family.run(False, ref, 1, FULL_OPTS[family.short])
    for (label, a), (_, b) in zip(flat_arrays(bufs), flat_arrays(ref)):
        assert_same_bits(np.ascontiguousarray(a), b, what=label)
    assert_same_bits(bufs["grad"], grad_before)


@pytest.mark.parametrize("family,arg", family_args(written_args))
def test_misaligned_param_or_state(family, arg, rng):
    bufs = _bufs(rng, family)
    raw = bytearray(4 * N + 1)
    bufs[arg] = np.frombuffer(raw, dtype=np.float32, offset=1, count=N)
    assert bufs[arg].flags.writeable and not bufs[arg].flags.aligned
    expect_step_error(family, bufs, FULL_OPTS[family.short], ValueError, arg)


# ---- overlap ---------------------------------------------------------------------

def _overlap_pairs():
    out = []
    for f in FAMILIES:
        args = args_of(f)
        for i, a in enumerate(args):
            for b in args[i + 1:]:
                for how in ("partial", "identical"):
                    out.append(pytest.param(f, a, b, how, id=f"{f.short}-{a}-{b}-{how}"))
    return out


@pytest.mark.parametrize("family,a,b,how", _overlap_pairs())
def test_written_buffer_overlapping_another(family, a, b, how, rng):
    bufs = _bufs(rng, family)
    if how == "identical":
        bufs[b] = bufs[a]
    else:
        base = random_array(rng, 2 * N, np.float32, positive=True)
        bufs[a], bufs[b] = base[:N], base[N // 2: N // 2 + N]
    msg = expect_step_error(family, bufs, FULL_OPTS[family.short], ValueError, a, b)
    assert "overlap" in msg


@pytest.mark.parametrize("layout", ["strided", "reversed"])
@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.short)
def test_non_contiguous_grad_overlapping_param(family, layout, rng):
    # A strided grad is copied before the update, but it still views the
    # parameter's memory: the call is refused like any other overlap.
    bufs = _bufs(rng, family)
    base = random_array(rng, 2 * N, np.float32)
    bufs["param"] = base[:N]
    bufs["grad"] = base[::2] if layout == "strided" else base[N // 2: N // 2 + N][::-1]
    expect_step_error(family, bufs, FULL_OPTS[family.short], ValueError, "param", "grad")


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.short)
def test_strided_grad_interleaved_with_param_is_allowed(family, rng):
    # Lying inside the grad's address range without sharing an element is not
    # an overlap: grad takes every 13th element, param the 12 in between.
    bufs = _bufs(rng, family)
    base = random_array(rng, 13 * N, np.float32)
    bufs["grad"], bufs["param"] = base[::13], base[1:13]
    ref = copy_buffers(bufs)
    ref["grad"] = bufs["grad"].copy()
    family.run(True, bufs, 1, FULL_OPTS[family.short])
    family.run(False, ref, 1, FULL_OPTS[family.short])
    for (label, a), (_, b) in zip(flat_arrays(bufs), flat_arrays(ref)):
        assert_same_bits(a, b, what=label)


@pytest.mark.parametrize("family,arg", family_args(written_args))
def test_same_array_twice_in_a_written_list(family, arg, rng):
    bufs = _bufs(rng, family, shapes=[(5,), (7,), (5,)])
    bufs[arg][2] = bufs[arg][0]
    msg = expect_step_error(family, bufs, FULL_OPTS[family.short], ValueError,
                            f"{arg}[0]", f"{arg}[2]")
    assert "overlap" in msg


@pytest.mark.parametrize("how", ["same-array", "overlapping-views"])
@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.short)
def test_grads_may_share_memory_with_each_other(family, how, rng):
    shapes = [(6,), (2, 3), (6,)]
    bufs = _bufs(rng, family, shapes=shapes)
    if how == "same-array":
        g = random_array(rng, 6, np.float32)
        bufs["grad"] = [g, g.reshape(2, 3), g]
    else:
        base = random_array(rng, 10, np.float32)
        bufs["grad"] = [base[:6], base[2:8].reshape(2, 3), base[4:10]]
    ref = copy_buffers(bufs)
    ref["grad"] = [g.copy() for g in bufs["grad"]]
    family.run(True, bufs, 1, FULL_OPTS[family.short])
    family.run(False, ref, 1, FULL_OPTS[family.short])
    for (label, a), (_, b) in zip(flat_arrays(bufs), flat_arrays(ref)):
        assert_same_bits(a, b, what=label)


# ---- missing state ---------------------------------------------------------------

@pytest.mark.parametrize("family,arg", family_args(lambda f: f.states))
def test_missing_state_buffer(family, arg, rng):
    bufs = _bufs(rng, family)
    bufs[arg] = None
    expect_step_error(family, bufs, FULL_OPTS[family.short], ValueError, arg)


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.short)
def test_state_not_needed_may_be_none(family, rng):
    bufs = _bufs(rng, family)
    opts = dict(lr=0.1) if family is SGD else dict(lr=0.01, amsgrad=False)
    for name in family.states:
        if name not in family.needed_states(opts):
            bufs[name] = None
    ref = copy_buffers(bufs)
    family.run(True, bufs, 1, opts)
    family.run(False, ref, 1, opts)
    assert_same_bits(bufs["param"], ref["param"])


# ---- hyperparameters ---------------------------------------------------------------

SGD_BAD = [
    (dict(lr=-0.1), "lr"), (dict(lr=NAN), "lr"),
    (dict(momentum=-0.5), "momentum"), (dict(momentum=NAN), "momentum"),
    (dict(weight_decay=-0.1), "weight_decay"), (dict(weight_decay=NAN), "weight_decay"),
    (dict(dampening=NAN), "dampening"),
    (dict(momentum=0.0, nesterov=True), "nesterov"),
    (dict(momentum=0.9, dampening=0.1, nesterov=True), "nesterov"),
    (dict(step=0), "step"), (dict(step=-3), "step"),
]
ADAM_BAD = [
    (dict(lr=-1e-3), "lr"), (dict(lr=NAN), "lr"),
    (dict(eps=-1e-8), "eps"), (dict(eps=NAN), "eps"),
    (dict(beta1=-0.1), "beta1"), (dict(beta1=1.0), "beta1"), (dict(beta1=1.5), "beta1"),
    (dict(beta1=NAN), "beta1"),
    (dict(beta2=-0.1), "beta2"), (dict(beta2=1.0), "beta2"), (dict(beta2=NAN), "beta2"),
    (dict(weight_decay=-0.1), "weight_decay"), (dict(weight_decay=NAN), "weight_decay"),
    (dict(step=0), "step"), (dict(step=-3), "step"),
]


def _hyper_cases():
    out = []
    for f in FAMILIES:
        for kw, name in (SGD_BAD if f is SGD else ADAM_BAD):
            kid = "-".join(f"{k}={v}" for k, v in kw.items())
            out.append(pytest.param(f, kw, name, id=f"{f.short}-{kid}"))
    return out


@pytest.mark.parametrize("family,bad,name", _hyper_cases())
def test_hyperparameter_out_of_range(family, bad, name, rng):
    bufs = _bufs(rng, family)
    opts = dict(FULL_OPTS[family.short])
    bad = dict(bad)
    step = bad.pop("step", 1)
    opts.update(bad)
    expect_step_error(family, bufs, opts, ValueError, name, step=step)


# ---- non-finite gradients: as torch -----------------------------------------------------

NONFINITE_CASES = [
    (SGD, dict(lr=0.1)),
    (SGD, dict(lr=0.1, momentum=0.9, dampening=0.5, weight_decay=0.01)),
    (SGD, dict(lr=0.1, momentum=0.9, nesterov=True, maximize=True)),
    (ADAM, dict(lr=0.01)),
    (ADAM, dict(lr=0.01, beta1=0.3, weight_decay=0.01)),        # lerp's other branch
    (ADAM, dict(lr=0.01, amsgrad=True, maximize=True)),
    (ADAM, dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True)),
    (ADAMW, dict(lr=0.01, amsgrad=True, beta1=0.3)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("family,opts", NONFINITE_CASES,
                         ids=lambda x: x.short if hasattr(x, "short") else "-".join(
                             f"{k}{v}" for k, v in x.items() if k != "lr") or "plain")
def test_nonfinite_grads_propagate_as_in_torch(torch, family, opts, dtype, rng):
    bufs = shaped_buffers(rng, family, [(40,), (3, 5)], dtype)
    zero_state(bufs)
    twin = TorchTwin(torch, family, bufs, opts)
    for step in (1, 2, 3):
        new_grads(rng, bufs)
        g = bufs["grad"][0]
        if step == 1:
            g[2], g[5], g[9] = np.nan, np.inf, -np.inf
        elif step == 2:
            g[20], g[21] = np.inf, -np.inf
        twin.step(bufs["grad"])
        family.run(True, bufs, step, opts)
    mine = flat_arrays(bufs, ("param",))
    for (label, a), b in zip(mine, twin.params):
        b = b.numpy()
        assert np.array_equal(np.isnan(a), np.isnan(b)), label
        assert np.array_equal(np.isinf(a) & (a > 0), np.isinf(b) & (b > 0)), label
        assert np.array_equal(np.isinf(a) & (a < 0), np.isinf(b) & (b < 0)), label
        finite = np.isfinite(b)
        np.testing.assert_allclose(a[finite], b[finite], rtol=TORCH_RTOL[dtype],
                                   atol=TORCH_RTOL[dtype], err_msg=label)
    assert not np.isfinite(bufs["param"][0][[2, 5, 9, 20, 21]]).any()
    assert np.isfinite(bufs["param"][1]).all()


# ---- empty arrays: a no-op ------------------------------------------------------------

@pytest.mark.parametrize("shapes", [(0,), (0, 4), [], [(0,), (0,)]],
                         ids=["empty", "empty-2d", "empty-list", "list-of-empties"])
@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.short)
def test_empty_is_a_noop(family, shapes, rng):
    bufs = shaped_buffers(rng, family, shapes, np.float64)
    snap = snapshot(bufs)
    for step in (1, 2):
        assert family.run(True, bufs, step, FULL_OPTS[family.short]) is None
    assert_unchanged(snap)


# ---- MSE ---------------------------------------------------------------------------

MSE_FUNCS = ["mse_loss", "mse_grad", "mse_loss_grad"]
OUT_FUNCS = ["mse_grad", "mse_loss_grad"]


def call_mse(func, pred, target, module=optcore, **kw):
    fn = getattr(module, func)
    if func == "mse_loss":
        return fn(pred, target, kw.get("reduction", "mean"))
    return fn(pred, target, **kw)


def expect_mse_error(func, exc, names, pred, target, **kw):
    snap = snapshot(pred, target, kw.get("out"))
    with pytest.raises(exc) as info:
        call_mse(func, pred, target, **kw)
    assert_names(str(info.value), *names)
    assert_unchanged(snap)
    return str(info.value)


def _pt(rng, n=N, dtype=np.float32):
    return random_array(rng, n, dtype), random_array(rng, n, dtype)


@pytest.mark.parametrize("bad", BAD_DTYPES, ids=lambda d: np.dtype(d).name
                         if d != ">f4" else "float32-big-endian")
@pytest.mark.parametrize("arg", ["pred", "target"])
@pytest.mark.parametrize("func", MSE_FUNCS)
def test_mse_unsupported_dtype(func, arg, bad, rng):
    pred, target = _pt(rng)
    if arg == "pred":
        pred = _as_dtype(pred, bad)
    else:
        target = _as_dtype(target, bad)
    msg = expect_mse_error(func, TypeError, [arg], pred, target)
    assert str(np.dtype(bad)) in msg


@pytest.mark.parametrize("func", MSE_FUNCS)
def test_mse_mixed_dtypes(func, rng):
    pred, target = _pt(rng)
    expect_mse_error(func, TypeError, ["pred", "target"], pred, target.astype(np.float64))


@pytest.mark.parametrize("func", MSE_FUNCS)
def test_mse_size_mismatch(func, rng):
    pred, target = _pt(rng)
    expect_mse_error(func, ValueError, ["pred", "target"], pred, target[:-1])


@pytest.mark.parametrize("shapes", [((12, 1), (12,)), ((12,), (12, 1)), ((3, 4), (4, 3))],
                         ids=["column-vs-flat", "flat-vs-column", "transposed-shape"])
@pytest.mark.parametrize("func", MSE_FUNCS)
def test_mse_shape_mismatch_of_equal_size(func, shapes, rng):
    # NumPy and torch would broadcast (n, 1) against (n,); pairing in flat
    # order instead would silently differ from them: both optcore and the
    # reference refuse.
    pred, target = _pt(rng)
    pred, target = pred.reshape(shapes[0]), target.reshape(shapes[1])
    out = np.empty(shapes[0], np.float32) if func != "mse_loss" else None
    kw = {} if out is None else dict(out=out)
    msg = expect_mse_error(func, ValueError, ["pred", "target"], pred, target, **kw)
    assert str(shapes[0]) in msg and str(shapes[1]) in msg
    with pytest.raises(ValueError, match="shape"):
        call_mse(func, pred, target, module=reference, **kw)


@pytest.mark.parametrize("shapes", [((12,), (1, 12)), ((1,), ()), ((1, 2, 3), (2, 3))],
                         ids=["flat-vs-row", "one-vs-scalar", "leading-ones"])
@pytest.mark.parametrize("func", MSE_FUNCS)
def test_mse_shapes_that_pair_the_same_elements_are_accepted(func, shapes, rng):
    # Broadcasting these shapes pairs the same elements as flat order does.
    n = int(np.prod(shapes[0]))
    pred = random_array(rng, n, np.float32).reshape(shapes[0])
    target = random_array(rng, n, np.float32).reshape(shapes[1])
    got = call_mse(func, pred, target)
    want = call_mse(func, pred.ravel(), target.ravel())
    for g, w in zip(got if isinstance(got, tuple) else (got,),
                    want if isinstance(want, tuple) else (want,)):
        np.testing.assert_array_equal(np.ravel(g), np.ravel(w))


@pytest.mark.parametrize("func", MSE_FUNCS)
def test_mse_bad_reduction(func, rng):
    pred, target = _pt(rng)
    expect_mse_error(func, ValueError, ["reduction"], pred, target, reduction="avg")


def _bad_outs():
    return ["int32", "float64", "size", "strided", "transposed", "read-only",
            "is-pred", "is-target", "overlaps-pred", "overlaps-target",
            "overlaps-strided-pred"]


@pytest.mark.parametrize("defect", _bad_outs())
@pytest.mark.parametrize("func", OUT_FUNCS)
def test_mse_bad_out(func, defect, rng):
    pred, target = _pt(rng)
    out = random_array(rng, N, np.float32)
    names, exc = ["out"], ValueError
    if defect == "int32":
        out, exc = out.astype(np.int32), TypeError
    elif defect == "float64":
        out, exc = out.astype(np.float64), TypeError
        names.append("pred")
    elif defect == "size":
        out = out[:-2]
        names.append("pred")
    elif defect == "strided":
        out = random_array(rng, 2 * N, np.float32)[::2]
    elif defect == "transposed":
        out = out.reshape(3, 4).T
    elif defect == "read-only":
        out.flags.writeable = False
    elif defect == "is-pred":
        out = pred
        names.append("pred")
    elif defect == "is-target":
        out = target
        names.append("target")
    elif defect == "overlaps-strided-pred":
        # pred is copied (strided input) but out still shares its elements.
        base = random_array(rng, 2 * N, np.float32)
        pred, out = base[::2], base[N:]
        names.append("pred")
    else:
        base = random_array(rng, 2 * N, np.float32)
        which = defect.split("-")[1]
        if which == "pred":
            pred, out = base[:N], base[N // 2: N // 2 + N]
        else:
            target, out = base[N // 2: N // 2 + N], base[:N]
        names.append(which)
    expect_mse_error(func, exc, names, pred, target, out=out)


@pytest.mark.parametrize("func", OUT_FUNCS)
def test_mse_target_may_share_memory_with_pred(func, rng):
    base = random_array(rng, N + 3, np.float64)
    pred, target = base[:N], base[3:]
    res = call_mse(func, pred, target)
    grad = res[1] if func == "mse_loss_grad" else res
    assert_same_bits(grad, reference.mse_grad(pred, target))


LINEAR_BAD = [
    ("X-1d", ValueError, "X"), ("w-features", ValueError, "w"), ("w-3d", ValueError, "w"),
    ("y-shape", ValueError, "y"), ("X-int", TypeError, "X"), ("w-float64", TypeError, "w"),
    ("y-float64", TypeError, "y"), ("b-float64", TypeError, "b"),
    ("reduction-none", ValueError, "reduction"),
]


@pytest.mark.parametrize("defect,exc,name", LINEAR_BAD, ids=[c[0] for c in LINEAR_BAD])
def test_linear_mse_grad_bad_input(defect, exc, name, rng):
    X = random_array(rng, 20 * 4, np.float32).reshape(20, 4)
    y = random_array(rng, 20, np.float32)
    w = random_array(rng, 4, np.float32)
    b = random_array(rng, 1, np.float32)
    kw = {}
    if defect == "X-1d":
        X = X.reshape(-1)
    elif defect == "w-features":
        w = random_array(rng, 5, np.float32)
    elif defect == "w-3d":
        w = w.reshape(4, 1, 1)
    elif defect == "y-shape":
        y = y[:-1]
    elif defect == "X-int":
        X = X.astype(np.int32)
    elif defect.endswith("float64"):
        var = defect.split("-")[0]
        if var == "w":
            w = w.astype(np.float64)
        elif var == "y":
            y = y.astype(np.float64)
        else:
            b = b.astype(np.float64)
    else:
        kw["reduction"] = "none"
    snap = snapshot(X, y, w, b)
    with pytest.raises(exc) as info:
        optcore.linear_mse_grad(X, y, w, b, **kw)
    assert_names(str(info.value), name)
    assert_unchanged(snap)


def _torch_checked_cases():
    # torch has no step argument, and SGD's checks (`lr < 0.0`) let NaN pass.
    return [p for p in _hyper_cases()
            if "step" not in p.values[1]
            and not (p.values[0] is SGD and any(v != v for v in p.values[1].values()))]


@pytest.mark.parametrize("family,bad,name", _torch_checked_cases())
def test_hyperparameter_messages_use_torch_wording(torch, family, bad, name, rng):
    # Where torch.optim refuses the same value, its message is part of ours.
    opts = dict(FULL_OPTS[family.short], **bad)
    try:
        if family is SGD:
            torch.optim.SGD([torch.zeros(3)], **opts)
        else:
            o = dict(opts)
            betas = (o.pop("beta1", 0.9), o.pop("beta2", 0.999))
            cls = torch.optim.Adam if family is ADAM else torch.optim.AdamW
            cls([torch.zeros(3)], betas=betas, **o)
    except ValueError as exc:
        theirs = str(exc)
    else:
        pytest.fail(f"torch.optim accepts {bad}")
    with pytest.raises(ValueError) as info:
        family.run(True, _bufs(rng, family), 1, opts)
    assert theirs in str(info.value)


@pytest.mark.parametrize("step", [1.9, 2.0, np.float64(2.0), "2", None])
def test_step_must_be_an_integer(step, rng):
    # A float step would be truncated by the C conversion (1.9 -> 1 would even
    # re-initialise SGD's momentum buffer): it is refused before any write.
    p, g, buf = (random_array(rng, 5, np.float32) for _ in range(3))
    snap = [a.copy() for a in (p, g, buf)]
    with pytest.raises(TypeError, match="step"):
        optcore.sgd_step(p, g, buf, step=step, lr=0.1, momentum=0.9)
    for a, b in zip((p, g, buf), snap):
        np.testing.assert_array_equal(a, b)
    optcore.sgd_step(p, g, buf, step=np.int64(2), lr=0.1, momentum=0.9)   # NumPy ints are fine


# ==== RMSprop, Adagrad, Adadelta, Adamax, NAdam, RAdam =======================

N_GRID = 37


def _problem(opt, rng, dtype=np.float32, n=N_GRID, k=None):
    """Arguments of one all-options call: one array per buffer, or lists of
    `k` arrays."""
    opts = all_on(opt)
    if k is None:
        param, grad = random_array(rng, n, dtype), random_array(rng, n, dtype)
        states = random_states(opt, rng, n, dtype, opts)
    else:
        param = [random_array(rng, n + t, dtype) for t in range(k)]
        grad = [random_array(rng, n + t, dtype) for t in range(k)]
        per = [random_states(opt, rng, n + t, dtype, opts) for t in range(k)]
        states = {s: (None if per[0][s] is None else [d[s] for d in per])
                  for s in opt.states}
    return param, grad, states, opts


def _arrays_grid(*objs):
    out = []
    for o in objs:
        if isinstance(o, dict):
            out += _arrays_grid(*o.values())
        elif isinstance(o, (list, tuple)):
            out += _arrays_grid(*o)
        elif isinstance(o, np.ndarray):
            out.append(o)
    return out


def _raises_and_keeps(exc, match, opt, param, grad, states, step=1, opts=None, **kw):
    """The call raises `exc` matching `match`, and no buffer changed."""
    buffers = _arrays_grid(param, grad, states)
    before = [a.tobytes() for a in buffers]
    opts = dict(opts or {}, **kw)
    with pytest.raises(exc, match=match):
        call_with_states(opt.fast, opt, param, grad, states, step, opts)
    for a, b in zip(buffers, before):
        assert a.tobytes() == b


# ---- missing state buffers ---------------------------------------------------

MISSING = [pytest.param(opt, s, id=f"{opt}-{s}") for opt in OPTIMIZERS
           for s in opt.required(all_on(opt))]


@pytest.mark.parametrize("multi", [False, True], ids=["single", "multi"])
@pytest.mark.parametrize("opt, state", MISSING)
def test_missing_state_is_named(opt, state, multi, rng):
    param, grad, states, opts = _problem(opt, rng, k=3 if multi else None)
    states[state] = None
    _raises_and_keeps(ValueError, rf"{state}.* is required", opt, param, grad,
                      states, opts=opts)


@pytest.mark.parametrize("option, state", [("momentum", "momentum_buffer"),
                                           ("centered", "grad_avg")])
def test_rmsprop_state_required_only_with_its_option(option, state, rng):
    opt = BY_NAME["rmsprop"]
    param, grad, states, opts = _problem(opt, rng)
    states[state] = None
    _raises_and_keeps(ValueError, state, opt, param, grad, states, opts=opts)
    opts[option] = 0.0 if option == "momentum" else False
    call_with_states(opt.fast, opt, param, grad, states, 1, opts)     # not needed: accepted


# ---- hyperparameters ---------------------------------------------------------

COMMON_BAD = [
    ({"lr": -1e-3}, r"^Invalid learning rate: -0\.001 \(lr must be >= 0\)$"),
    ({"lr": float("nan")}, r"^Invalid learning rate: nan"),
    ({"weight_decay": -0.5}, r"^Invalid weight_decay value: -0\.5"),
    ({"step": 0}, r"^Invalid step: 0"),
    ({"step": -3}, r"^Invalid step: -3"),
]
EPS_BAD = [({"eps": -1e-8}, r"^Invalid epsilon value: -1e-08"),
           ({"eps": float("nan")}, r"^Invalid epsilon value: nan")]
BETAS_BAD = [
    ({"beta1": 1.0}, r"^Invalid beta parameter at index 0: 1\.0"),
    ({"beta1": -0.1}, r"^Invalid beta parameter at index 0: -0\.1"),
    ({"beta2": 1.0}, r"^Invalid beta parameter at index 1: 1\.0"),
    ({"beta2": float("nan")}, r"^Invalid beta parameter at index 1: nan"),
]
BAD = {
    "rmsprop": COMMON_BAD + EPS_BAD + [
        ({"momentum": -0.9}, r"^Invalid momentum value: -0\.9"),
        ({"alpha": -0.01}, r"^Invalid alpha value: -0\.01"),
    ],
    "adagrad": COMMON_BAD + EPS_BAD + [
        ({"lr_decay": -0.1}, r"^Invalid lr_decay value: -0\.1"),
    ],
    "adadelta": COMMON_BAD + EPS_BAD + [
        ({"rho": 1.5}, r"^Invalid rho value: 1\.5"),
        ({"rho": -0.5}, r"^Invalid rho value: -0\.5"),
    ],
    "adamax": COMMON_BAD + EPS_BAD + BETAS_BAD,
    "nadam": COMMON_BAD + EPS_BAD + BETAS_BAD + [
        ({"momentum_decay": -4e-3}, r"^Invalid momentum_decay value: -0\.004"),
    ],
    "radam": COMMON_BAD + EPS_BAD + BETAS_BAD,
}
HYPER_CASES = [pytest.param(BY_NAME[name], bad, match, id=f"{name}-{bad}")
               for name, cases in BAD.items() for bad, match in cases]


@pytest.mark.parametrize("opt, bad, match", HYPER_CASES)
def test_bad_hyperparameter(opt, bad, match, rng):
    param, grad, states, opts = _problem(opt, rng)
    bad = dict(bad)
    step = bad.pop("step", 1)
    _raises_and_keeps(ValueError, match, opt, param, grad, states, step=step,
                      opts=dict(opts, **bad))


def test_edge_hyperparameters_accepted(rng):
    """The closed ends torch accepts: lr = eps = weight_decay = 0, beta = 0,
    Adadelta's rho in [0, 1], RMSprop's alpha = 0."""
    accepted = {
        "rmsprop": [{"alpha": 0.0}, {"lr": 0.0, "eps": 0.0}],
        "adagrad": [{"lr_decay": 0.0, "eps": 0.0}],
        "adadelta": [{"rho": 0.0}, {"rho": 1.0}],
        "adamax": [{"beta1": 0.0, "beta2": 0.0}],
        "nadam": [{"beta1": 0.0, "momentum_decay": 0.0}],
        "radam": [{"beta1": 0.0, "beta2": 0.0}],
    }
    for name, cases in accepted.items():
        opt = BY_NAME[name]
        for extra in cases:
            param, grad, states, opts = _problem(opt, rng)
            call_with_states(opt.fast, opt, param, grad, states, 1, dict(opts, **extra))


# ---- buffers (bind()'s checks, through every optimizer) -----------------------

def _first_state(opt):
    return opt.states[0]


@pytest.mark.parametrize("opt", OPTIMIZERS, ids=str)
def test_bad_buffers_change_nothing(opt, rng):
    s = _first_state(opt)

    param, grad, states, opts = _problem(opt, rng)
    states[s] = states[s].astype(np.float64)
    _raises_and_keeps(TypeError, f"{s}.*float64", opt, param, grad, states, opts=opts)

    param, grad, states, opts = _problem(opt, rng)
    _raises_and_keeps(TypeError, "param.*int64", opt, param.astype(np.int64), grad,
                      states, opts=opts)

    param, grad, states, opts = _problem(opt, rng)
    states[s] = random_array(rng, N_GRID + 1, np.float32)
    _raises_and_keeps(ValueError, s, opt, param, grad, states, opts=opts)

    param, grad, states, opts = _problem(opt, rng)
    states[s].flags.writeable = False
    _raises_and_keeps(ValueError, s, opt, param, grad, states, opts=opts)

    param, grad, states, opts = _problem(opt, rng)
    states[s] = random_array(rng, 2 * N_GRID, np.float32)[::2]
    _raises_and_keeps(ValueError, s, opt, param, grad, states, opts=opts)

    param, grad, states, opts = _problem(opt, rng)
    states[s] = param
    _raises_and_keeps(ValueError, "overlap", opt, param, grad, states, opts=opts)


@pytest.mark.parametrize("opt", OPTIMIZERS, ids=str)
def test_bad_list_changes_nothing(opt, rng):
    """A multi-tensor call whose LAST tensor is bad writes none of them."""
    s = _first_state(opt)
    for dtype in DTYPES:
        param, grad, states, opts = _problem(opt, rng, dtype=dtype, k=4)
        states[s][-1] = states[s][-1][:-1].copy()
        _raises_and_keeps(ValueError, rf"{s}\[3\]", opt, param, grad, states, opts=opts)

        param, grad, states, opts = _problem(opt, rng, dtype=dtype, k=4)
        states[s] = states[s][:3]
        _raises_and_keeps(ValueError, s, opt, param, grad, states, opts=opts)

        param, grad, states, opts = _problem(opt, rng, dtype=dtype, k=4)
        grad = grad[0]
        _raises_and_keeps(ValueError, "grad", opt, param, grad, states, opts=opts)


@pytest.mark.parametrize("opt", OPTIMIZERS, ids=str)
def test_nan_gradient_propagates_like_reference(opt, rng):
    """NaN/Inf in a gradient is not an error: it flows through the update as in
    the reference (and torch)."""
    for dtype in DTYPES:
        param, grad, states, opts = _problem(opt, rng, dtype=dtype)
        grad[3], grad[10], grad[-1] = np.nan, np.inf, -np.inf
        ref = (param.copy(), {k: (None if v is None else v.copy())
                              for k, v in states.items()})
        a = call_with_states(opt.fast, opt, param, grad, states, 7, opts)
        with np.errstate(all="ignore"):
            b = call_with_states(opt.ref, opt, ref[0], grad, ref[1], 7, opts)
        assert a == b
        np.testing.assert_array_equal(np.isnan(param), np.isnan(ref[0]))
        assert np.isnan(param[3])
        np.testing.assert_allclose(param, ref[0], rtol=1e-6, equal_nan=True)


# ==== Lion and LAMB ==========================================================

def _bufs_lion_lamb(dtype=np.float64, n=5):
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
    p, g, m, v = _bufs_lion_lamb()
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
    p, g, m, v = _bufs_lion_lamb()
    with pytest.raises(ValueError, match="epsilon"):
        optcore.lamb_step(p, g, m, v, step=1, eps=-1e-8)


@pytest.mark.parametrize("kind", ["lion", "lamb"])
def test_bad_buffers_change_nothing_lion_lamb(kind):
    def call(p, g, m, v):
        if kind == "lion":
            optcore.lion_step(p, g, m, step=1, lr=0.1)
        else:
            optcore.lamb_step(p, g, m, v, step=1, lr=0.1)

    cases = []
    p, g, m, v = _bufs_lion_lamb()
    cases.append(((p, g, m.astype(np.float32), v.astype(np.float32)), TypeError, "dtype"))
    p, g, m, v = _bufs_lion_lamb()
    cases.append(((p, g[:4], m, v), ValueError, "elements"))
    p, g, m, v = _bufs_lion_lamb()
    p.flags.writeable = False
    cases.append(((p, g, m, v), ValueError, "read-only"))
    p, g, m, v = _bufs_lion_lamb(n=10)
    cases.append(((p[::2], g[:5], m[:5], v[:5]), ValueError, "contiguous"))
    p, g, m, v = _bufs_lion_lamb()
    cases.append(((p, g, p, v), ValueError, "overlap"))
    p, g, m, v = _bufs_lion_lamb()
    cases.append((([p, p], [g, g], [m, m.copy()], [v, v.copy()]), ValueError,
                  "overlap"))
    p, g, m, v = _bufs_lion_lamb()
    cases.append((([p], [g, g], [m], [v]), ValueError, "tensors"))
    p, g, m, v = _bufs_lion_lamb()
    cases.append(((p, g, None, v), ValueError, "None"))
    p, g, m, v = _bufs_lion_lamb()
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
