"""Low-precision step kernels against their NumPy twins, bit for bit.

Every tiled kernel (the optimizer steps) takes bfloat16/float16 params and
grads, bfloat16 and block-quantized int8 states (LAMB: float32 states only),
a float32 master copy, stochastic and Kahan rounding. optcore.reference's twin widens to
float32, runs the float32 reference and rounds every stored element with
optcore.precision's definitions; the kernels must give its bits for every
storage combination, option set, size (vector width, tile, quantization
block, threading threshold), single and multi-tensor calls, several steps,
any thread count; and the rule's errors, raised before any write.
optcore.precision's own definitions: tests/test_precision_formats.py."""

import ml_dtypes
import numpy as np
import pytest

import optcore
import optcore.reference  # noqa: F401  (the twins)
from optcore import _spec
from optcore import precision as pr
from optcore.precision import QBLOCK, QuantizedState

from registry import (ADAM, ADAMW, LAMB, NADAM, OPTIMIZER_STEPS, RMSPROP, SGD, options_id,
                      shaped_buffers)
from support import assert_same_bits

TILED = list(OPTIMIZER_STEPS)
# The state storages each kernel's spec allows (LAMB: float32 only).
KIND_OF = {"float32": "f32", "bfloat16": "bf16", "int8": "int8"}
STATE_STORAGES = {n: {KIND_OF[d] for d in k.state_dtypes}
                  for k in _spec.KERNELS for n in (k.name, *k.aliases)}
KINDS = ("f32", "bf16", "f16")
STATE_KINDS = ("f32", "bf16", "int8")
BF16 = np.dtype(ml_dtypes.bfloat16)
T = optcore.get_parallel_threshold()
LARGE = T + 1000

# A multi-tensor call: an empty tensor, sizes around the vector width, the
# tile (512) and the block (256), none a multiple of 256 but one.
MIXED = [(1000,), (0,), (7,), (3, 100), (257,), (1,), (256,), (17,)]
# (param, grad, states) low-precision combinations: every param, grad and
# state storage at least once.
COVER = [("bf16", "f32", "int8"), ("f16", "bf16", "bf16"), ("f32", "f16", "int8"),
         ("bf16", "bf16", "f32"), ("f16", "f16", "int8"), ("bf16", "f16", "bf16")]
SCALAR_START = 0.95        # NAdam's mu_product


def ids(entries):
    return [e.short for e in entries]


# ---- buffers in any storage ---------------------------------------------------

def to_storage(x, kind, signed=True):
    x = np.asarray(x, dtype=np.float32)
    if kind == "f32":
        return x.copy()
    if kind == "bf16":
        return pr.bfloat16_array(x)
    if kind == "f16":
        return x.astype(np.float16)
    if kind == "f64":
        return x.astype(np.float64)
    if kind == "u8":
        return (np.abs(x) * 100).astype(np.uint8)
    assert kind == "int8"
    return QuantizedState.from_float(x, signed=signed)


def _each(v, fn):
    if v is None:
        return None
    return [fn(a) for a in v] if isinstance(v, list) else fn(v)


def make_buffers(rng, entry, shapes, opts, param="f32", grad="f32", state="f32",
                 master=False, kahan=False):
    """Fresh random buffers (never zero; sums of squares positive) in the
    given storages; states these options do not use are None, states in a
    storage the kernel does not take are float32 (LAMB). ``master``:
    a float32 master copy (the param is its rounding); ``kahan``: a small
    random compensation of the param's dtype."""
    multi = isinstance(shapes, list)
    b32 = shaped_buffers(rng, entry, shapes, np.float32, multi)
    if "grad_avg" in b32:           # RMSprop: keep square_avg - grad_avg**2 > 0
        def bounded(sq):
            return (rng.uniform(-0.5, 0.5, sq.shape) * np.sqrt(sq)).astype(np.float32)
        b32["grad_avg"] = _each(b32["square_avg"], bounded)
    bufs = {}
    for name, v in b32.items():
        if name in entry.states and not entry.buf(name).needed(opts):
            bufs[name] = None
            continue
        kind = param if name == "param" else grad if name == "grad" else state
        if name in entry.states and kind not in STATE_STORAGES[entry.name]:
            kind = "f32"
        signed = not entry.buf(name).positive
        bufs[name] = _each(v, lambda a: to_storage(a, kind, signed))
    if master:
        bufs["master_param"] = _each(b32["param"], lambda a: a.copy())
    if kahan:
        bufs["compensation"] = _each(
            b32["param"], lambda a: to_storage(a * rng.uniform(-1, 1, a.shape) * 2.0**-10,
                                               param))
    return bufs


def new_grads(rng, bufs):
    bufs["grad"] = _each(bufs["grad"], lambda g: to_storage(
        rng.standard_normal(g.shape) + 1e-3, "f32").astype(g.dtype)
        if g.dtype != BF16 else pr.bfloat16_array(rng.standard_normal(g.shape) + 1e-3))


def copy_buffers(bufs):
    return {k: _each(v, lambda a: a.copy()) for k, v in bufs.items()}


def leaves(bufs):
    """(label, array) of every buffer (a QuantizedState as codes and absmax)."""
    out = []
    for k, v in bufs.items():
        if v is None:
            continue
        for i, a in enumerate(v if isinstance(v, list) else [v]):
            label = f"{k}[{i}]" if isinstance(v, list) else k
            if isinstance(a, QuantizedState):
                out += [(label + ".codes", a.codes), (label + ".absmax", a.absmax)]
            else:
                out.append((label, a))
    return out


def assert_same(a_bufs, b_bufs, what="", nan_sign=False):
    """Every buffer bit for bit (``nan_sign``: a NaN's sign and payload may
    differ, as the float32 math's NaNs do between NumPy and C)."""
    la, lb = leaves(a_bufs), leaves(b_bufs)
    assert [x for x, _ in la] == [x for x, _ in lb]
    for (label, a), (_, b) in zip(la, lb):
        if nan_sign and a.dtype in (np.float16, np.float32, BF16):
            fa, fb = a.astype(np.float32), b.astype(np.float32)
            both = np.isnan(fa) & np.isnan(fb)
            a, b = np.where(both, np.float32(0), fa), np.where(both, np.float32(0), fb)
        assert_same_bits(a, b, what=f"{what} {label}")


def call(entry, fast, bufs, step, opts, prec, scalar=None):
    """One step (kernel or twin); returns the scalar state (NAdam) or None."""
    hp = dict(opts, step=step, **prec)
    for name in ("master_param", "compensation"):
        if bufs.get(name) is not None:
            hp[name] = bufs[name]
    if entry.scalar_state:
        hp[entry.scalar_state] = scalar
    out = entry.call(entry.fast if fast else entry.ref, bufs, hp)
    if not entry.scalar_state:
        assert out is None
    return out


def run_both(rng, entry, bufs, opts, steps=(1, 2, 3), prec=None, what=""):
    """Kernel and twin side by side on copies, a fresh gradient each step,
    every buffer compared after every step; returns the kernel's buffers."""
    prec = prec or {}
    fast, ref = copy_buffers(bufs), copy_buffers(bufs)
    s_fast = s_ref = SCALAR_START
    for step in steps:
        new_grads(rng, fast)
        ref["grad"] = fast["grad"]
        s_fast = call(entry, True, fast, step, opts, prec, s_fast)
        with np.errstate(all="ignore"):
            s_ref = call(entry, False, ref, step, opts, prec, s_ref)
        assert s_fast == s_ref
        assert_same(fast, ref, what=f"{entry.short} {what} step {step} {opts} {prec}")
    return fast


def base_opts(entry):
    """An option set using every state buffer of ``entry``."""
    full = {"sgd": dict(lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01),
            "adam": dict(lr=0.01, amsgrad=True, weight_decay=0.01),
            "adamw": dict(lr=0.01, amsgrad=True),
            "rmsprop": dict(lr=0.01, momentum=0.9, centered=True, weight_decay=0.1),
            "adagrad": dict(lr=0.1, lr_decay=0.05)}
    return full.get(entry.short, entry.combos()[-1])


class threads:
    def __init__(self, n):
        self.n = n

    def __enter__(self):
        optcore.set_num_threads(self.n)

    def __exit__(self, *exc):
        optcore.set_num_threads(None)


# ---- the registry's tiled kernels are the spec's ---------------------------------

def test_registry_knows_the_tiled_kernels():
    spec = {n: k for k in _spec.KERNELS if k.tiled for n in (k.name, *k.aliases)}
    assert set(spec) == {e.name for e in TILED}
    for e in TILED:
        for b in spec[e.name].buffers:
            if b.name in e.states:       # the unsigned map is the registry's "positive"
                assert b.unsigned == e.buf(b.name).positive, (e, b.name)


# ---- every storage combination --------------------------------------------------

PRODUCT = [pytest.param(e, p, g, s, id=f"{e.short}-{p}-{g}-{s}")
           for e in (ADAM, SGD) for p in KINDS for g in KINDS for s in STATE_KINDS]


@pytest.mark.parametrize("entry,param,grad,state", PRODUCT)
def test_every_storage_combination(entry, param, grad, state, rng):
    opts = base_opts(entry)
    run_both(rng, entry, make_buffers(rng, entry, (300,), opts, param, grad, state), opts)
    run_both(rng, entry, make_buffers(rng, entry, MIXED, opts, param, grad, state), opts)


@pytest.mark.parametrize("param,grad,state", COVER, ids=["-".join(c) for c in COVER])
@pytest.mark.parametrize("entry", TILED, ids=ids(TILED))
def test_covering_storages(entry, param, grad, state, rng):
    opts = base_opts(entry)
    run_both(rng, entry, make_buffers(rng, entry, MIXED, opts, param, grad, state), opts)


OPTION_CASES = [pytest.param(e, o, COVER[i % len(COVER)],
                             id=f"{e.short}-{options_id(o)}-{i}-{'-'.join(COVER[i % len(COVER)])}")
                for e in TILED for i, o in enumerate(e.combos())]


@pytest.mark.parametrize("entry,opts,storage", OPTION_CASES)
def test_every_option_set(entry, opts, storage, rng):
    bufs = make_buffers(rng, entry, MIXED, opts, *storage)
    run_both(rng, entry, bufs, opts, range(entry.first_step, entry.first_step + 3))


# ---- master weights, Kahan, stochastic ----------------------------------------------

@pytest.mark.parametrize("param", ["bf16", "f16"])
@pytest.mark.parametrize("entry", TILED, ids=ids(TILED))
def test_master_param(entry, param, rng):
    opts = base_opts(entry)
    for shapes, state in (((513,), "int8"), (MIXED, "bf16")):
        bufs = make_buffers(rng, entry, shapes, opts, param, "bf16", state, master=True)
        out = run_both(rng, entry, bufs, opts)
        # the param is the master rounded to nearest
        listed = lambda v: v if isinstance(v, list) else [v]
        for p, m in zip(listed(out["param"]), listed(out["master_param"])):
            assert_same_bits(p, to_storage(m, param), what="param from master")


@pytest.mark.parametrize("param", ["bf16", "f16"])
@pytest.mark.parametrize("entry", TILED, ids=ids(TILED))
def test_kahan(entry, param, rng):
    opts = base_opts(entry)
    for shapes, state in (((513,), "f32"), (MIXED, "int8")):
        bufs = make_buffers(rng, entry, shapes, opts, param, "f32", state, kahan=True)
        run_both(rng, entry, bufs, opts, prec=dict(rounding="kahan"))


@pytest.mark.parametrize("param, grad", [("bf16", "f16"), ("f16", "bf16")])
@pytest.mark.parametrize("entry", TILED, ids=ids(TILED))
def test_stochastic(entry, param, grad, rng):
    opts = base_opts(entry)
    bufs = make_buffers(rng, entry, MIXED, opts, param, grad, "int8")
    outs = []
    for seed in (0, 12345):
        run_both(rng, entry, bufs, opts, prec=dict(rounding="stochastic", seed=seed))
        # 2 threads and 1 give the same bits (the random bits are per element)
        big = make_buffers(np.random.default_rng(seed), entry, [(LARGE,), (300,), (0,)],
                           opts, param, "bf16", "bf16")
        runs = []
        for n in (1, 2):
            b = copy_buffers(big)
            with threads(n):
                call(entry, True, b, 5, opts, dict(rounding="stochastic", seed=seed),
                     SCALAR_START)
            runs.append(b)
        assert_same(runs[0], runs[1], what="1 vs 2 threads")
        outs.append(runs[0]["param"][0])
    assert outs[0].tobytes() != outs[1].tobytes()   # another seed, other roundings


# ---- sizes, threads --------------------------------------------------------------------

SIZES = [1, 7, 8, 15, 16, 17, 255, 256, 257, 511, 512, 513, 1000]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("entry", TILED, ids=ids(TILED))
def test_sizes(entry, size, rng):
    opts = base_opts(entry)
    for param, grad, state in COVER[:3]:
        bufs = make_buffers(rng, entry, (size,), opts, param, grad, state)
        run_both(rng, entry, bufs, opts, (1, 2))


@pytest.mark.parametrize("num_threads", [1, 2])
@pytest.mark.parametrize("entry", TILED, ids=ids(TILED))
def test_above_the_threshold(entry, num_threads, rng):
    opts = base_opts(entry)
    storage = COVER[TILED.index(entry) % len(COVER)]
    with threads(num_threads):
        bufs = make_buffers(rng, entry, (LARGE,), opts, *storage)
        run_both(rng, entry, bufs, opts, (1, 2))
        bufs = make_buffers(rng, entry, [(T // 2 + 7,), (0,), (T // 2 + 300,), (5,)], opts,
                            "bf16", "bf16", "int8", master=True)
        run_both(rng, entry, bufs, opts, (1,))


STORAGES = {
    "bf16-param": (dict(param="bf16"), {}),
    "f16-param-and-grad": (dict(param="f16", grad="f16"), {}),
    "bf16-grad": (dict(grad="bf16"), {}),
    "bf16-states": (dict(state="bf16"), {}),
    "int8-states": (dict(state="int8"), {}),
    "master": (dict(param="bf16", master=True), {}),
    "kahan-bf16": (dict(param="bf16", kahan=True), dict(rounding="kahan")),
    "kahan-f16": (dict(param="f16", kahan=True), dict(rounding="kahan")),
    "stochastic": (dict(param="bf16", state="int8"), dict(rounding="stochastic", seed=7)),
}


@pytest.mark.parametrize("storage", list(STORAGES))
@pytest.mark.parametrize("entry", [ADAM, RMSPROP], ids=ids([ADAM, RMSPROP]))
def test_thread_count_independence(entry, storage, rng):
    kw, prec = STORAGES[storage]
    opts = base_opts(entry)
    bufs = make_buffers(rng, entry, [(LARGE + 1,), (1000,), (0,), (3 * QBLOCK + 5,)],
                        opts, **kw)
    runs = []
    for n in (1, 2):
        b = copy_buffers(bufs)
        with threads(n):
            for step in (1, 2):
                call(entry, True, b, step, opts, prec, SCALAR_START)
        runs.append(b)
    assert_same(runs[0], runs[1], what=f"{storage}: 1 vs 2 threads")


def test_state_carried_from_a_late_step(rng):
    opts = dict(lr=0.01, amsgrad=True, maximize=True, weight_decay=0.01)
    bufs = make_buffers(rng, ADAM, [(33,), (4, 300)], opts, "bf16", "bf16", "int8")
    run_both(rng, ADAM, bufs, opts, range(1000, 1006))


# ---- non-finite and extreme values -------------------------------------------------------

WILD = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-30, 1e-45, -1e-38, 3e38, 1.0],
                np.float32)


@pytest.mark.parametrize("entry", TILED, ids=ids(TILED))
def test_wild_values(entry, rng):
    # Blocks holding NaN, inf, zeros, tiny values, in the states and the
    # gradient; an all-zero block; the kernel follows the twin exactly.
    opts = base_opts(entry)
    n = 4 * QBLOCK + 9
    for state in [s for s in ("int8", "bf16") if s in STATE_STORAGES[entry.name]] or ["f32"]:
        bufs = make_buffers(rng, entry, (n,), opts, "bf16", "f32", "f32")
        for name in entry.states:
            if bufs.get(name) is None:
                continue
            x = bufs[name]
            x[:QBLOCK:7] = WILD[rng.integers(0, WILD.size, x[:QBLOCK:7].size)]
            x[QBLOCK:2 * QBLOCK] = 0.0
            x[2 * QBLOCK:3 * QBLOCK:3] = np.float32(1e-38)
            x[3 * QBLOCK:] = x[3 * QBLOCK:] * np.float32(1e-40)      # a subnormal block
            x[3 * QBLOCK + 1] = 0.0
            bufs[name] = to_storage(x, state, not entry.buf(name).positive)
        fast, ref = copy_buffers(bufs), copy_buffers(bufs)
        for step in (1, 2):
            g = rng.standard_normal(n).astype(np.float32)
            g[5::11] = WILD[rng.integers(0, WILD.size, g[5::11].size)]
            fast["grad"] = ref["grad"] = g
            call(entry, True, fast, step, opts, {}, SCALAR_START)
            with np.errstate(all="ignore"):
                call(entry, False, ref, step, opts, {}, SCALAR_START)
            assert_same(fast, ref, what=f"{entry.short} {state} wild step {step}",
                        nan_sign=True)


# ---- errors before any write ----------------------------------------------------------------

N = 300


def _adam_bufs(rng, param="bf16", grad="bf16", state="int8", multi=False):
    opts = dict(lr=0.01)
    return make_buffers(rng, ADAM, [(N,), (7,)] if multi else (N,), opts, param, grad,
                        state), opts


def _set(bufs, name, value, t=None):
    if t is None:
        bufs[name] = value
    else:
        bufs[name][t] = value


def _overlapping_state(rng):
    # the absmax inside the memory of the codes
    raw = np.zeros(N + 8, np.uint8)
    codes = raw[:N]
    codes[...] = rng.integers(1, 255, N)
    absmax = raw[:8].view(np.float32)
    q = QuantizedState(codes, absmax[:2], signed=True)
    return q


def _wrong_length(rng, n=N):
    q = QuantizedState.from_float(rng.standard_normal(n).astype(np.float32), signed=True)
    q.absmax = np.ones(q.absmax.size + 1 if n < QBLOCK else 1, np.float32)
    return q


ERRORS = {
    "float64-param-bf16-grad": (
        TypeError, "grad", dict(param="f64", grad="bf16", state="f64"), {}),
    "float64-param-int8-state": (
        TypeError, "exp_avg", dict(param="f64", grad="f64", state="int8"), {}),
    "float64-grad": (TypeError, "grad", dict(grad="f64"), {}),
    "float16-state": (TypeError, "exp_avg", dict(state="f16"), {}),
    "uint8-state": (TypeError, "exp_avg", dict(state="u8"), {}),
    "wrong-map": (TypeError, "exp_avg_sq", dict(exp_avg_sq="signed"), {}),
    "master-with-float32-param": (TypeError, "master_param", dict(param="f32", master="f32"),
                                  {}),
    "master-float64": (TypeError, "master_param", dict(master="f64"), {}),
    "master-with-stochastic": (ValueError, "master_param", dict(master="f32"),
                               dict(rounding="stochastic")),
    "stochastic-float32-param": (TypeError, "rounding", dict(param="f32"),
                                 dict(rounding="stochastic")),
    "kahan-without-compensation": (ValueError, "compensation", {}, dict(rounding="kahan")),
    "kahan-float32-param": (TypeError, "kahan", dict(param="f32", comp="f32"),
                            dict(rounding="kahan")),
    "compensation-other-dtype": (TypeError, "compensation", dict(comp="f16"),
                                 dict(rounding="kahan")),
    "compensation-without-kahan": (ValueError, "compensation", dict(comp="bf16"), {}),
    "rounding-bogus": (ValueError, "rounding", {}, dict(rounding="bogus")),
    "rounding-bogus-float32": (ValueError, "rounding", dict(param="f32", grad="f32",
                                                            state="f32"),
                               dict(rounding="bogus")),
    "rounding-none": (ValueError, "rounding", {}, dict(rounding=None)),
    "seed-negative": (ValueError, "seed", {}, dict(rounding="stochastic", seed=-1)),
    "seed-too-large": (ValueError, "seed", {}, dict(rounding="stochastic", seed=2**64)),
    "seed-str": (TypeError, "seed", {}, dict(rounding="stochastic", seed="x")),
    "seed-float": (TypeError, "seed", {}, dict(rounding="stochastic", seed=1.0)),
    "absmax-wrong-length": (ValueError, r"^exp_avg\.absmax has 1 blocks",
                            dict(exp_avg="short"), {}),
    "absmax-overlaps-codes": (ValueError, r"exp_avg\.absmax overlap", dict(exp_avg="overlap"),
                              {}),
    "multi-absmax-wrong-length": (ValueError, r"^exp_avg\.absmax\[1\] has",
                                  dict(multi=True, last="short"), {}),
    "multi-half-quantized": (TypeError, "exp_avg", dict(multi=True, last="f32"), {}),
    "multi-last-grad-float64": (TypeError, "grad", dict(multi=True, last_grad="f64"), {}),
}


def _error_case(rng, spec):
    opts = dict(lr=0.01)
    multi = spec.get("multi", False)
    kinds = dict(param=spec.get("param", "bf16"), grad=spec.get("grad", "bf16"))
    b32 = make_buffers(rng, ADAM, [(N,), (7,)] if multi else (N,), opts)
    bufs = {}
    for name, v in b32.items():
        kind = kinds.get(name, spec.get("state", "int8"))
        signed = name != "exp_avg_sq" or spec.get("exp_avg_sq") == "signed"
        bufs[name] = _each(v, lambda a: to_storage(a, kind, signed))
    if spec.get("exp_avg") == "short":
        bufs["exp_avg"] = _wrong_length(rng)
    if spec.get("exp_avg") == "overlap":
        bufs["exp_avg"] = _overlapping_state(rng)
    if spec.get("last") == "short":
        bufs["exp_avg"][1] = _wrong_length(rng, n=7)
    if spec.get("last") == "f32":
        bufs["exp_avg"][1] = bufs["exp_avg"][1].dequantize()
    if spec.get("last_grad") == "f64":
        bufs["grad"][1] = bufs["grad"][1].astype(np.float64)
    if "master" in spec:
        bufs["master_param"] = to_storage(b32["param"], spec["master"])
    if "comp" in spec:
        bufs["compensation"] = to_storage(np.full(N, 1e-3, np.float32), spec["comp"])
    return bufs, opts


@pytest.mark.parametrize("case", list(ERRORS))
def test_errors_before_any_write(case, rng):
    exc, pattern, spec, prec = ERRORS[case]
    bufs, opts = _error_case(rng, spec)
    before = [(label, a.copy()) for label, a in leaves(bufs)]
    with pytest.raises(exc, match=pattern):
        call(ADAM, True, bufs, 1, opts, prec)
    after = leaves(bufs)
    assert [x for x, _ in before] == [x for x, _ in after]
    for (label, a), (_, b) in zip(before, after):
        assert a.tobytes() == b.tobytes(), f"{case}: {label} written before the error"


@pytest.mark.parametrize("entry", [SGD, ADAMW, NADAM], ids=ids([SGD, ADAMW, NADAM]))
def test_errors_in_other_kernels(entry, rng):
    opts = base_opts(entry)
    bufs = make_buffers(rng, entry, (N,), opts, "bf16", "f32", "int8")
    state = entry.states[0]
    for mutate, exc, pattern, prec in (
            (lambda b: b.__setitem__(state, b[state].dequantize().astype(np.float16)),
             TypeError, state, {}),
            (lambda b: None, ValueError, "rounding", dict(rounding="bogus")),
            (lambda b: b.__setitem__("master_param", b["param"].astype(np.float64)),
             TypeError, "master_param", {})):
        b = copy_buffers(bufs)
        mutate(b)
        before = [(label, a.copy()) for label, a in leaves(b)]
        with pytest.raises(exc, match=pattern):
            call(entry, True, b, 1, opts, prec, SCALAR_START)
        for (label, a), (_, c) in zip(before, leaves(b)):
            assert a.tobytes() == c.tobytes(), label


@pytest.mark.parametrize("state", ["bf16", "int8"])
def test_lamb_refuses_low_precision_states(state, rng):
    # LAMB's trust ratio needs its update's norm before the step: its moments
    # stay float32 (a bfloat16 or int8 moment is a TypeError before any write).
    opts = base_opts(LAMB)
    bufs = make_buffers(rng, LAMB, [(300,), (7,)], opts, "bf16", "bf16", "f32")
    bufs["exp_avg_sq"] = [to_storage(a, state, signed=False) for a in bufs["exp_avg_sq"]]
    before = [(label, a.copy()) for label, a in leaves(bufs)]
    with pytest.raises(TypeError, match=r"^exp_avg_sq\S* has dtype .*in float32"):
        call(LAMB, True, bufs, 1, opts, {})
    for (label, a), (_, b) in zip(before, leaves(bufs)):
        assert a.tobytes() == b.tobytes(), label


def test_lamb_chunks_of_tensors(rng):
    # LAMB runs its two passes over 128 tensors at a time: the storage of each
    # chunk (master, compensation, sizes, the random bits' tensor index)
    # starts at its first tensor
    shapes = [(int(n),) for n in rng.integers(0, 700, 300)]
    opts = base_opts(LAMB)
    for param, grad, kw, prec in (("bf16", "bf16", dict(master=True), {}),
                                  ("f16", "f32", {}, dict(rounding="stochastic", seed=9)),
                                  ("bf16", "f16", dict(kahan=True), dict(rounding="kahan")),
                                  ("f32", "bf16", {}, {})):
        bufs = make_buffers(rng, LAMB, shapes, opts, param, grad, "f32", **kw)
        run_both(rng, LAMB, bufs, opts, (1, 2), prec=prec)
