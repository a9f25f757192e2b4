"""Property-based fuzzing of every public kernel (driven by registry.py).

Each example draws a call (dtype, list structure, shapes, hyperparameters
including NaN/inf/negative/huge values, number of threads) and at most one
buffer fault: a wrong dtype (ints, float16, complex, object, bfloat16,
big-endian, structured, mixed float widths), a wrong size, a list of the wrong
length, a layout (Fortran order, strides, negative strides, broadcast, read-only,
unaligned, memoryview / array.array / bytes / Python objects), or aliasing
between arguments (the same array, overlapping or disjoint views of one block).

An independent oracle (written from docs/contract.md §8, not from bind()) says whether the
call is valid. Invariant:
  * valid: the result equals optcore.reference bit for bit (NaN where NaN), and
    every byte of every buffer equals what the reference left;
  * invalid: TypeError/ValueError whose message names an offending argument,
    and every byte of every buffer is unchanged (never a partial write).

Examples per function: OPTCORE_FUZZ_EXAMPLES (default 300, the CI setting);
`pytest --hypothesis-show-statistics` prints the counts and the fault mix.
"""

import array
import math
import os
import re
import warnings
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import optcore
import optcore.reference as reference
from registry import KERNELS, READ, WILD, WRITE

EXAMPLES = int(os.environ.get("OPTCORE_FUZZ_EXAMPLES", "300"))

try:
    import ml_dtypes
    BFLOAT16 = [np.dtype(ml_dtypes.bfloat16)]
except ImportError:           # optional: the test extra installs it
    BFLOAT16 = []

BAD_DTYPES = [np.dtype(t) for t in (np.int8, np.uint8, np.int32, np.int64, np.bool_,
                                    np.float16, np.complex64, np.complex128,
                                    np.longdouble, object, ">f4", ">f8")]
BAD_DTYPES += [np.dtype([("a", "<f4")])] + BFLOAT16


def _tiled(entry):
    """Whether the kernel takes low-precision buffers (optcore._spec)."""
    from optcore import _spec
    kernel = next((k for k in _spec.KERNELS if entry.name in (k.name, *k.aliases)), None)
    return kernel is not None and kernel.tiled

_T = optcore.get_parallel_threshold()
SIZES_1D = [0, 1, 2, 7, 8, 9, 15, 16, 17, 1023, 1025, _T + 1]

LAYOUTS = ["fortran", "strided", "reversed", "broadcast", "readonly", "unaligned",
           "memoryview", "array.array", "bytes", "pylist", "float", "none"]


# ---- a call, as plain data ---------------------------------------------------

@dataclass
class Spec:
    hp: dict
    dtype: np.dtype
    as_list: bool
    shapes: list                     # one shape per tensor
    seed: int
    threads: int
    fault: str = "none"
    target: tuple = None             # (buffer name, tensor index)
    detail: object = None
    out_none: bool = False


def _shape_strategy():
    nd = st.lists(st.integers(0, 4), max_size=3).map(tuple)
    return st.one_of(nd, st.sampled_from(SIZES_1D).map(lambda n: (n,)))


@st.composite
def specs(draw, entry, faults=True):
    """A call to ``entry``: with ``faults``, at most one buffer fault and few
    wild hyperparameters; without, clean buffers and many wild values."""
    hp = {k: draw(s) for k, s in entry.hyper.items()}
    if faults:
        wild = [k for k in sorted(entry.wild) if draw(st.integers(0, 7)) == 0]
    elif entry.wild:
        # one or two wild values at a time, so that valid combinations
        # (e.g. lr=inf with weight_decay=0) are drawn often
        wild = sorted(draw(st.sets(st.sampled_from(sorted(entry.wild)), min_size=1,
                                   max_size=2)))
    else:
        wild = []
    for k in wild:
        hp[k] = draw(WILD)
    if entry.reduction and draw(st.integers(0, 7 if faults else 2)) == 0:
        hp["reduction"] = draw(st.sampled_from(["MEAN", "avg", "", None, "elementwise_mean"]))
    as_list = entry.multi and draw(st.booleans())
    k = draw(st.integers(0, 4)) if as_list else 1
    shapes = [draw(_shape_strategy()) for _ in range(k)]
    spec = Spec(hp=hp, dtype=np.dtype(draw(st.sampled_from([np.float32, np.float64]))),
                as_list=as_list, shapes=shapes, seed=draw(st.integers(0, 2**32 - 1)),
                threads=draw(st.sampled_from([1, 2])))
    outputs = [b for b in entry.buffers if b.output]
    if outputs:
        spec.out_none = draw(st.booleans())
    fault = "none"
    if faults:
        fault = draw(st.sampled_from(["none", "dtype", "size", "layout", "alias", "list"]))
    names = [b.name for b in entry.buffers if not (b.output and spec.out_none)]
    if fault == "list" and not entry.multi:
        # lists of arrays given to a single-array function
        spec.as_list = True
        spec.shapes = [draw(_shape_strategy()) for _ in range(draw(st.integers(1, 3)))]
        spec.fault, spec.detail = "list", "multi"
        return spec
    if fault != "none" and k > 0:
        spec.fault = fault
        spec.target = (draw(st.sampled_from(names)), draw(st.integers(0, k - 1)))
        if fault == "dtype":
            other = np.float64 if spec.dtype == np.float32 else np.float32
            bad = BAD_DTYPES
            if spec.dtype == np.float32 and _tiled(entry) and k == 1:
                # bfloat16/float16 buffers beside float32 ones are a valid
                # low-precision call (tests/test_precision.py)
                bad = [d for d in BAD_DTYPES if d != np.float16 and d not in BFLOAT16]
            spec.detail = draw(st.sampled_from(bad + [np.dtype(other)] * 3))
        elif fault == "size":
            spec.detail = draw(st.sampled_from([-1, 1, 16]))
        elif fault == "layout" and spec.detail is None:
            spec.detail = draw(st.sampled_from(LAYOUTS))
        elif fault == "alias":
            others = [n for n in names if n != spec.target[0]] or names
            spec.detail = (draw(st.sampled_from(others)),
                           draw(st.sampled_from(["same", "overlap", "disjoint", "self_list"])))
        elif fault == "list":
            spec.detail = draw(st.sampled_from(["shorter", "longer", "single", "tuple"]))
    return spec


# ---- building the objects of a call (twice: kernel and reference) ----------------

def _values(rng, n, dtype, positive):
    a = rng.uniform(0.1, 2.0, n) if positive else rng.standard_normal(n)
    if not positive:
        a[a == 0] = 0.5
    if dtype.kind == "O":
        return a.astype(object)
    if dtype.kind == "b":
        return a > 0
    if dtype.kind in "iu":
        return (a * 10).astype(dtype)
    if dtype.names:
        out = np.zeros(n, dtype)
        out["a"] = a
        return out
    return a.astype(dtype)


class Built:
    def __init__(self):
        self.objs = {}
        self.owners = []          # every allocation whose bytes the call might touch

    def own(self, a):
        self.owners.append(a)
        return a


def _tensor(built, rng, shape, dtype, positive, layout):
    n = int(np.prod(shape))
    if layout == "fortran":
        # (copy, not asfortranarray: that turns a 0-d array into a 1-d one)
        return built.own(_values(rng, n, dtype, positive).reshape(shape).copy(order="F"))
    if layout == "strided":
        base = built.own(_values(rng, 2 * n, dtype, positive))
        return base[::2].reshape(shape) if n else base[:0].reshape(shape)
    if layout == "reversed":
        base = built.own(_values(rng, n, dtype, positive))
        return base[::-1].reshape(shape)
    if layout == "broadcast":
        base = built.own(_values(rng, 1, dtype, positive))
        return np.broadcast_to(base.reshape(()), shape)
    if layout == "unaligned":
        raw = built.own(np.zeros(n * dtype.itemsize + 1, np.uint8))
        a = np.frombuffer(raw, dtype=dtype, count=n, offset=1)
        a[...] = _values(rng, n, dtype, positive)
        return a.reshape(shape)
    a = built.own(_values(rng, n, dtype, positive).reshape(shape))
    if layout == "readonly":
        a.flags.writeable = False
    elif layout == "memoryview":
        return memoryview(a)
    elif layout == "array.array" and dtype.kind == "f" and dtype.itemsize in (4, 8):
        arr = array.array("f" if dtype.itemsize == 4 else "d", a.ravel().tolist())
        built.owners[-1] = arr
        return arr
    elif layout == "bytes":
        built.owners.pop()
        return a.tobytes()
    elif layout == "pylist":
        built.owners.pop()
        return a.ravel().tolist()
    elif layout == "float":
        built.owners.pop()
        return 1.5
    elif layout == "none":
        built.owners.pop()
        return None
    return a


def build(entry, spec):
    """The buffer objects of the call described by ``spec`` (deterministic)."""
    rng = np.random.default_rng(spec.seed)
    built = Built()
    hp = spec.hp
    tname, tidx = spec.target or (None, None)
    for b in entry.buffers:
        if b.output and spec.out_none and tname != b.name:
            built.objs[b.name] = None
            continue
        tensors = []
        for t, shape in enumerate(spec.shapes):
            dtype, layout = spec.dtype, None
            if (b.name, t) == spec.target:
                if spec.fault == "dtype":
                    dtype = spec.detail
                elif spec.fault == "size":
                    n = int(np.prod(shape)) + spec.detail
                    shape = (n if n >= 0 else n + 2,)
                elif spec.fault == "layout":
                    layout = spec.detail
            tensors.append(_tensor(built, rng, shape, np.dtype(dtype), b.positive, layout))
        built.objs[b.name] = tensors if spec.as_list else tensors[0]
    if spec.fault == "alias":
        _alias(entry, spec, built, rng)
    elif spec.fault == "list" and spec.detail != "multi":
        objs = built.objs[tname]
        if not spec.as_list:
            built.objs[tname] = [objs]       # a list where one array is expected
        elif spec.detail == "shorter":
            built.objs[tname] = objs[:-1]
        elif spec.detail == "longer":
            built.objs[tname] = objs + [objs[-1].copy()]
            built.own(built.objs[tname][-1])
        elif spec.detail == "single":
            built.objs[tname] = objs[tidx]
        elif spec.detail == "tuple":
            built.objs[tname] = tuple(objs)
    return built


def _alias(entry, spec, built, rng):
    (tname, t), (oname, mode) = spec.target, spec.detail
    shape = spec.shapes[t]
    n = int(np.prod(shape))

    def put(name, idx, obj):
        if spec.as_list:
            built.objs[name][idx] = obj
        else:
            built.objs[name] = obj

    if mode == "self_list":
        # the same array twice in one argument's list (or the whole list shared)
        if spec.as_list and len(spec.shapes) > 1:
            u = (t + 1) % len(spec.shapes)
            if spec.shapes[u] == shape or int(np.prod(spec.shapes[u])) == n:
                built.objs[tname][u] = built.objs[tname][t]
        return
    if mode == "same":
        src = built.objs[oname][t] if spec.as_list else built.objs[oname]
        if src is not None:
            put(tname, t, src)
        return
    # two views of one block: overlapping by a few elements, or side by side
    off = max(n - 3, 1) if mode == "overlap" else n
    base = built.own(_values(rng, n + off, spec.dtype, False))
    put(tname, t, base[:n].reshape(shape))
    put(oname, t, base[off:off + n].reshape(shape))


# ---- the oracle ------------------------------------------------------------------

@dataclass
class Expect:
    errors: list = field(default_factory=list)      # (exception type, [names]) alternatives
    optional: list = field(default_factory=list)    # may raise these, or succeed


_FORMATS = {("f", 4): "float32", ("d", 8): "float64"}


def _info(obj):
    """(dtype name or None, size, contiguous, readonly, start, stop) of a buffer."""
    try:
        mv = memoryview(obj)
    except (TypeError, ValueError, BufferError):
        return None
    fmt = mv.format.lstrip("@=<")
    kind = _FORMATS.get((fmt, mv.itemsize))
    arr = np.asarray(obj) if kind else None
    if arr is not None and arr.size:
        lo, hi = np.lib.array_utils.byte_bounds(arr)
    elif arr is not None:
        lo = hi = arr.__array_interface__["data"][0]
    else:
        lo = hi = 0
    return dict(kind=kind, itemsize=mv.itemsize, size=mv.nbytes // max(mv.itemsize, 1),
                contiguous=mv.c_contiguous, readonly=mv.readonly, lo=lo, hi=hi)


def oracle(entry, hp, objs):
    exp = Expect()
    bad_hp = entry.invalid(hp)
    for name in sorted(bad_hp):
        exp.errors.append((ValueError, [name]))
    used = [b for b in entry.used(hp) if not (b.output and objs[b.name] is None)]
    first = used[0]
    is_list = isinstance(objs[first.name], (list, tuple))
    if not entry.multi:
        listed = [b.name for b in used if isinstance(objs[b.name], (list, tuple))]
        if listed:
            exp.errors.append((TypeError, listed))
            exp.errors.append((ValueError, listed))
            return exp
    if entry.reduction:
        # losses pair pred and target element by element: same shape, no broadcasting
        ps, ts = getattr(objs["pred"], "shape", None), getattr(objs["target"], "shape", None)
        if ps is not None and ts is not None and tuple(ps) != tuple(ts):
            exp.errors.append((ValueError, ["pred", "target"]))
    k = len(objs[first.name]) if is_list else 1
    structure = []
    for b in used:
        o = objs[b.name]
        if o is None:
            structure.append(b.name)
        elif isinstance(o, (list, tuple)) != is_list or (is_list and len(o) != k):
            structure += [b.name, first.name]
    if structure:
        exp.errors.append((ValueError, structure))
        return exp

    def label(name, t):
        return f"{name}[{t}]" if is_list else name

    dtype_first = None
    intervals = []
    for t in range(k):
        size0 = None
        for b in used:
            o = objs[b.name][t] if is_list else objs[b.name]
            lab = label(b.name, t)
            if o is None:
                exp.errors.append((ValueError, [lab]))
                continue
            info = _info(o)
            if info is None or info["kind"] is None:
                exp.errors.append((TypeError, [lab]))
                continue
            if dtype_first is None:
                dtype_first = (info["kind"], lab)
            elif info["kind"] != dtype_first[0]:
                exp.errors.append((TypeError, [lab, dtype_first[1]]))
            copied = False
            if not info["contiguous"]:
                if b.role == WRITE:
                    exp.errors.append((ValueError, [lab]))
                else:
                    copied = True          # a read-only input may be copied
            if b.role == WRITE and info["readonly"]:
                exp.errors.append((ValueError, [lab]))
            # An empty buffer is never read or written: its alignment is moot.
            if not copied and info["size"] and info["lo"] % info["itemsize"]:
                exp.errors.append((ValueError, [lab]))
            if b is first:
                size0 = info["size"]
            elif size0 is not None and info["size"] != size0:
                exp.errors.append((ValueError, [lab, label(first.name, t)]))
            if info["size"] and info["hi"] > info["lo"]:
                intervals.append((info["lo"], info["hi"], b.role == WRITE, copied, lab))
    for i, (lo1, hi1, w1, c1, lab1) in enumerate(intervals):
        for lo2, hi2, w2, c2, lab2 in intervals[i + 1:]:
            if (w1 or w2) and lo1 < hi2 and lo2 < hi1:
                alt = (ValueError, [lab1, lab2])
                # docs/contract.md §8 says ValueError; a strided input that the call copies
                # before any write is read as it was, so success is also correct.
                (exp.optional if (c1 or c2) else exp.errors).append(alt)
    return exp


def _names_in(message, names):
    for name in names:
        base = re.escape(name)
        if re.search(rf"(?<![\w]){base}(?![\w])", message, flags=re.IGNORECASE):
            return True
    return False


# ---- comparing -------------------------------------------------------------------

def _snapshot(owner):
    if isinstance(owner, np.ndarray):
        if owner.dtype.kind == "O":
            return ("obj", [id(x) for x in owner.ravel()], owner.ravel().tolist())
        return ("bytes", np.ascontiguousarray(owner).view(np.uint8).tobytes())
    return ("bytes", bytes(memoryview(owner).cast("B")))


def _as_float(owner):
    if isinstance(owner, array.array):
        return np.frombuffer(owner, np.float32 if owner.typecode == "f" else np.float64)
    return np.asarray(owner)


def assert_same_bits(actual, expected, what):
    a, e = np.asarray(actual), np.asarray(expected)
    assert a.dtype == e.dtype and a.size == e.size, (what, a.dtype, e.dtype, a.shape, e.shape)
    if a.dtype.kind != "f":
        assert np.array_equal(a, e), what
        return
    a, e = a.ravel(), e.ravel()
    uint = {2: np.uint16, 4: np.uint32, 8: np.uint64}.get(a.dtype.itemsize)
    if uint is None:
        # float128 (x87 extended) carries padding bytes with no meaning: compare
        # values, signs and NaN-ness instead of raw bytes.
        same = ((a == e) & (np.signbit(a) == np.signbit(e))) | (np.isnan(a) & np.isnan(e))
        assert same.all(), what
        return
    same = (a.view(uint) == e.view(uint)) | (np.isnan(a) & np.isnan(e))
    if not same.all():
        i = int(np.flatnonzero(~same)[0])
        raise AssertionError(f"{what}: {int((~same).sum())} elements differ, first at "
                             f"{i}: {a[i]!r} vs reference {e[i]!r}")


def assert_near(actual, expected, what):
    """Equal within a few ulps of the dtype, NaN and infinities in the same
    places (for kernels whose norms are summed in another order)."""
    a, e = np.asarray(actual), np.asarray(expected)
    if a.dtype.kind != "f" or a.dtype.itemsize not in (4, 8):
        return assert_same_bits(a, e, what)
    rtol = 1e-5 if a.dtype.itemsize == 4 else 1e-12
    fin = np.abs(e[np.isfinite(e)])
    atol = rtol * float(fin.max()) if fin.size else 0.0   # cancellation: vs the scale
    np.testing.assert_allclose(a, e, rtol=rtol, atol=atol, equal_nan=True, err_msg=what)


def _same_value(actual, expected, what):
    if isinstance(expected, float) or isinstance(actual, float):
        assert isinstance(actual, float), (what, type(actual))
        if math.isnan(expected):
            assert math.isnan(actual), (what, actual, expected)
        else:
            assert actual == pytest.approx(expected, rel=1e-12, abs=0), (what, actual, expected)
    elif expected is None:
        assert actual is None, what
    else:
        assert_same_bits(actual, expected, what)


def _reference_objs(entry, hp, objs):
    """Reference inputs: read-only arguments as flat independent copies (the
    kernel reads them as flat, before any write); other buffer objects as
    NumPy views of the same memory."""
    out = {}
    for b in entry.buffers:
        o = objs[b.name] if b.needed(hp) else None     # unused: ignored by both
        if b.role == READ and o is not None:
            if isinstance(o, (list, tuple)):
                o = [np.array(np.asarray(x)).reshape(-1) for x in o]
            else:
                o = np.array(np.asarray(o)).reshape(-1)
        elif o is not None and not isinstance(o, (np.ndarray, list, tuple)):
            o = np.asarray(o)        # a memoryview / array.array: a view of it
        out[b.name] = o
    return out


def check_call(entry, spec):
    a = build(entry, spec)
    before = [_snapshot(o) for o in a.owners]
    exp = oracle(entry, spec.hp, a.objs)
    event(f"fault={spec.fault}:{spec.detail if spec.fault in ('layout', 'list') else ''}")
    optcore.set_num_threads(spec.threads)
    try:
        result = entry.call(entry.fast, a.objs, dict(spec.hp))
    except (TypeError, ValueError) as exc:
        msg = str(exc)
        alts = [(t, n) for t, n in exp.errors + exp.optional if isinstance(exc, t)]
        assert alts, f"{entry.name} raised {exc!r} for a valid call {spec}"
        assert any(_names_in(msg, names) for _, names in alts), (
            f"{entry.name}: message {msg!r} names none of {[n for _, n in alts]}")
        after = [_snapshot(o) for o in a.owners]
        assert before == after, f"{entry.name} raised {exc!r} but changed a buffer"
        event("outcome=rejected")
        return
    finally:
        optcore.set_num_threads(None)
    assert not exp.errors, f"{entry.name} accepted an invalid call: expected {exp.errors}"
    event("outcome=accepted")
    # The reference on a second, identical build.
    r = build(entry, spec)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        expected = entry.call(entry.ref, _reference_objs(entry, spec.hp, r.objs), dict(spec.hp))
    for i, (x, y) in enumerate(zip(a.owners, r.owners)):
        if entry.exact:
            assert_same_bits(_as_float(x), _as_float(y), f"{entry.name}: buffer {i}")
        else:
            assert_near(_as_float(x), _as_float(y), f"{entry.name}: buffer {i}")
    _compare_result(entry, spec, a, result, expected)


def _compare_result(entry, spec, a, result, expected):
    pred = a.objs.get("pred")
    if entry.returns == "none":
        assert result is None
    elif entry.returns == "loss":
        _check_loss(spec, pred, result, expected)
    elif entry.returns == "array":
        _check_grad(a, pred, result, expected)
    elif entry.returns == "loss_grad":
        assert isinstance(result, tuple) and len(result) == 2
        _check_loss(spec, pred, result[0], expected[0])
        _check_grad(a, pred, result[1], expected[1])
    else:
        _same_value(result, expected, entry.name)


def _check_loss(spec, pred, loss, expected):
    if spec.hp["reduction"] == "none":
        assert isinstance(loss, np.ndarray) and loss.shape == np.shape(pred)
        assert_same_bits(loss, expected, "loss")
    else:
        _same_value(loss, expected, "loss")


def _check_grad(a, pred, grad, expected):
    out = a.objs.get("out")
    if out is not None:
        assert grad is out
    else:
        assert isinstance(grad, np.ndarray) and grad.shape == np.shape(pred)
    assert_same_bits(grad, expected, "grad")


# ---- the tests ---------------------------------------------------------------------

FUZZ_SETTINGS = settings(max_examples=EXAMPLES, deadline=None,
                         suppress_health_check=[HealthCheck.too_slow,
                                                HealthCheck.data_too_large])


@pytest.mark.parametrize("entry", KERNELS, ids=lambda e: e.name)
@FUZZ_SETTINGS
@given(data=st.data())
def test_fuzz_buffers(entry, data):
    check_call(entry, data.draw(specs(entry, faults=True), label="call"))


@pytest.mark.parametrize("entry", KERNELS, ids=lambda e: e.name)
@FUZZ_SETTINGS
@given(data=st.data())
def test_fuzz_hyperparameters(entry, data):
    check_call(entry, data.draw(specs(entry, faults=False), label="call"))


def test_oracle_detects_each_fault():
    # The oracle itself: each fault kind must be classified as an error, and a
    # clean call as valid (otherwise the fuzz test could not fail).
    from registry import ADAM, typical_hyper
    hp = typical_hyper(ADAM)
    base = dict(hp=hp, dtype=np.dtype(np.float32), as_list=True, shapes=[(3, 4), (5,)],
                seed=1, threads=1)
    assert not oracle(ADAM, hp, build(ADAM, Spec(**base)).objs).errors
    faults = [("dtype", np.dtype(np.int32)), ("dtype", np.dtype(np.float64)),
              ("size", 1), ("layout", "fortran"), ("layout", "readonly"),
              ("layout", "unaligned"), ("layout", "bytes"), ("layout", "none"),
              ("alias", ("param", "same")), ("alias", ("param", "overlap")),
              ("list", "shorter"), ("list", "single")]
    for fault, detail in faults:
        spec = Spec(**base, fault=fault, target=("exp_avg", 0), detail=detail)
        assert oracle(ADAM, hp, build(ADAM, spec).objs).errors, (fault, detail)
    for fault, detail in [("layout", "strided"), ("layout", "memoryview"),
                          ("alias", ("param", "disjoint"))]:
        spec = Spec(**base, fault=fault, target=("grad", 0), detail=detail)
        assert not oracle(ADAM, hp, build(ADAM, spec).objs).errors, (fault, detail)


# ---- linear_mse_grad: matrix shapes ---------------------------------------------------

@st.composite
def linear_calls(draw):
    n, d, k = draw(st.integers(0, 6)), draw(st.integers(1, 5)), draw(st.integers(1, 3))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    two_d = draw(st.booleans())
    shapes = {"X": (n, d), "w": (d, k) if two_d else (d,),
              "y": (n, k) if two_d else (n,)}
    b_shape = draw(st.sampled_from(["none", "scalar", "one", "k"]))
    if b_shape != "none":
        shapes["b"] = {"scalar": (), "one": (1,), "k": (k,) if two_d else (1,)}[b_shape]
    dtypes = {name: dtype for name in shapes}
    fault = draw(st.sampled_from(["none", "none", "dtype", "shape", "layout", "reduction"]))
    name = draw(st.sampled_from(sorted(shapes)))
    detail = None
    if fault == "dtype":
        detail = draw(st.sampled_from(BAD_DTYPES + [np.dtype(np.float64 if dtype == np.float32
                                                             else np.float32)]))
        dtypes[name] = detail
    elif fault == "shape":
        detail = draw(st.sampled_from(["grow", "ndim"]))
        s = shapes[name]
        shapes[name] = (s[:-1] + (s[-1] + 1,)) if (detail == "grow" and s) else s + (2,)
    elif fault == "layout":
        detail = draw(st.sampled_from(["fortran", "strided", "readonly", "list"]))
    reduction = draw(st.sampled_from(["mean", "sum"])) if fault != "reduction" else \
        draw(st.sampled_from(["none", "avg", None]))
    return dict(shapes=shapes, dtypes=dtypes, fault=fault, name=name, detail=detail,
                reduction=reduction, seed=draw(st.integers(0, 2**32 - 1)))


def _linear_args(c):
    rng = np.random.default_rng(c["seed"])
    args = {}
    for name, shape in c["shapes"].items():
        a = _values(rng, int(np.prod(shape)), np.dtype(c["dtypes"][name]), False).reshape(shape)
        if c["fault"] == "layout" and name == c["name"]:
            if c["detail"] == "fortran":
                a = np.asfortranarray(a)
            elif c["detail"] == "strided":
                a = np.repeat(a[..., None], 2, axis=-1)[..., 0]
            elif c["detail"] == "readonly":
                a.flags.writeable = False
            elif c["detail"] == "list":
                a = a.tolist()
        args[name] = a
    return args


def _linear_expected_errors(c):
    """(exception type, names) that a faulty call may raise; [] when valid."""
    sh = c["shapes"]
    if c["fault"] == "reduction":
        return [(ValueError, ["reduction"])]
    if c["fault"] == "dtype":
        return [(TypeError, [c["name"], "X"])]
    if c["fault"] == "layout" and c["detail"] == "list":
        if 0 in sh[c["name"]]:
            return None           # [] has lost the shape: either outcome is right
        if c["dtypes"]["X"] == np.float32:
            return [(TypeError, [c["name"], "X"])]     # a list of floats is float64
    errors = []
    if len(sh["X"]) != 2 or len(sh["w"]) not in (1, 2) or sh["w"][0] != sh["X"][1]:
        errors.append((ValueError, ["X", "w"]))
    else:
        out = (sh["X"][0],) + sh["w"][1:]
        if "b" in sh and sh["b"] not in [(), (1,)] + [sh["w"][1:]] * (len(sh["w"]) == 2):
            errors.append((ValueError, ["b"]))
        if sh["y"] != out:
            errors.append((ValueError, ["y"]))
    return errors


@FUZZ_SETTINGS
@given(c=linear_calls())
def test_fuzz_linear_mse_grad(c):
    a = _linear_args(c)
    before = {k: copy_of(v) for k, v in a.items()}
    expected_errors = _linear_expected_errors(c)
    event(f"fault={c['fault']}:{c['detail'] or ''}")
    try:
        loss, gw, gb = optcore.linear_mse_grad(a["X"], a["y"], a["w"], a.get("b"),
                                               reduction=c["reduction"])
    except (TypeError, ValueError) as exc:
        if expected_errors is None:
            return
        alts = [n for t, n in expected_errors if isinstance(exc, t)]
        assert alts, f"raised {exc!r} for a valid call {c}"
        assert any(_names_in(str(exc), n) for n in alts), (str(exc), alts)
        return
    finally:
        for k, v in a.items():
            assert copy_of(v) == before[k], f"linear_mse_grad changed {k}"
    if expected_errors is None:
        return
    assert not expected_errors, f"accepted an invalid call {c}"
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        r_loss, r_gw, r_gb = reference.linear_mse_grad(
            np.asarray(a["X"]), np.asarray(a["y"]), np.asarray(a["w"]),
            None if "b" not in a else np.asarray(a["b"]), reduction=c["reduction"])
    _same_value(loss, r_loss, "loss")
    assert gw.shape == np.shape(a["w"]) and gw.dtype == np.asarray(a["w"]).dtype
    np.testing.assert_allclose(gw, r_gw, rtol=1e-5, atol=1e-6)
    if "b" in a:
        assert gb.shape == np.shape(a["b"])
        np.testing.assert_allclose(gb, r_gb, rtol=1e-5, atol=1e-6)
    else:
        assert gb is None


def copy_of(v):
    return repr(v) if isinstance(v, list) else (np.asarray(v).dtype.str, np.asarray(v).shape,
                                                 np.asarray(v).tobytes())
