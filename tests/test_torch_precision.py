"""optcore.torch with bfloat16/float16 parameters and the storage options
(state_dtype, master_weights, rounding, seed): parity with torch.optim within
the measured tolerances, bit for bit with the functional kernels on the same
NumPy views, state_dict round trips and interchange, autocast and GradScaler."""

from __future__ import annotations

import copy
import io

import ml_dtypes
import numpy as np
import pytest
import torch

import optcore
import optcore.torch as ot
from optcore.precision import QuantizedState
from optcore.precision import MIN_QUANTIZED_SIZE
from optcore.precision import parameter_seed

BIG = MIN_QUANTIZED_SIZE + 300       # quantized (and a partial last block)
SMALL = 37                           # below MIN_QUANTIZED_SIZE: float32 states

# (class, options, the kernel, its state keys in kernel order, torch's kwargs)
CASES = {
    "Adam": (dict(lr=1e-2), optcore.adam_step, ("exp_avg", "exp_avg_sq"), {}),
    "AdamW": (dict(lr=1e-2, weight_decay=0.1), optcore.adam_step,
              ("exp_avg", "exp_avg_sq"), {"decoupled_weight_decay": True}),
    "SGD": (dict(lr=1e-2, momentum=0.9), optcore.sgd_step, ("momentum_buffer",), {}),
    "RMSprop": (dict(lr=1e-3), optcore.rmsprop_step, ("square_avg",), {}),
    "Adagrad": (dict(lr=1e-2), optcore.adagrad_step, ("sum",), {}),
}
UNSIGNED = {"exp_avg_sq", "square_avg", "sum"}


def _np(t):
    t = t.detach()
    if t.dtype is torch.bfloat16:
        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


def _bits(t):
    return t.detach().reshape(-1).contiguous().view(torch.uint8).numpy().copy()


def _params(dtype, sizes=(BIG, SMALL), seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(n, generator=g).to(dtype)) for n in sizes]


def _grads(params, step):
    g = torch.Generator().manual_seed(1000 + step)
    return [torch.randn(p.shape, generator=g).to(p.dtype) for p in params]


def _train(opt, params, steps):
    for k in range(steps):
        for p, g in zip(params, _grads(params, k)):
            p.grad = g
        opt.step()


# ---- 1. bfloat16 parameters, torch.optim's defaults --------------------------------

#: max |optcore - torch| / max(1, |torch|) after 20 steps on bfloat16 params,
#: measured (lr 1e-2, 1e-3 for RMSprop; N(0, 1) params and grads): Adagrad
#: 0.0075, Adam 0.0078, RMSprop 0.012, SGD(momentum 0.9) 0.023, AdamW 0.065 --
#: torch rounds every intermediate to bfloat16 (AdamW's ``param *= 1 - lr * wd``
#: alone rounds back to the param for |param| < 4: its decay is lost), optcore
#: computes in float32 and rounds each stored element once. The bounds are
#: about twice the measurements; optcore is also never further than torch from
#: the float64 run of the same steps.
TORCH_TOLERANCE = {"Adagrad": 2.0 ** -6, "Adam": 2.0 ** -6, "RMSprop": 2.0 ** -5,
                   "SGD": 2.0 ** -4, "AdamW": 2.0 ** -3}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bf16_parity_with_torch(name):
    options, _, keys, _ = CASES[name]
    ours, theirs = _params(torch.bfloat16), _params(torch.bfloat16)
    exact = [torch.nn.Parameter(p.detach().double()) for p in _params(torch.bfloat16)]
    opt = getattr(ot, name)(ours, **options)
    ref = getattr(torch.optim, name)(theirs, **options)
    ref64 = getattr(torch.optim, name)(exact, **options)
    _train(opt, ours, 20)
    _train(ref, theirs, 20)
    for k in range(20):
        for p, g in zip(exact, _grads(ours, k)):
            p.grad = g.double()
        ref64.step()
    with torch.no_grad():
        for a, b, e in zip(ours, theirs, exact):
            assert a.dtype is torch.bfloat16
            assert [opt.state[a][k].dtype for k in keys] == [torch.bfloat16] * len(keys)
            dev = float(((a.float() - b.float()).abs() / b.float().abs().clamp(min=1)).max())
            assert dev <= TORCH_TOLERANCE[name], dev
            ours_err = float((a.double() - e).abs().max())
            torch_err = float((b.double() - e).abs().max())
            assert ours_err <= torch_err * 1.01 + 1e-6, (ours_err, torch_err)


def _kernel_run(name, params, steps, state_of, extra_of=lambda i: {}):
    """The functional kernel over NumPy views, as the class should step: one
    call per parameter (the class groups them, bitwise the same)."""
    options, kernel, keys, fixed = CASES[name]
    kw = {"lr": options["lr"]}
    if "weight_decay" in options:
        kw["weight_decay"] = options["weight_decay"]
    if "momentum" in options:
        kw["momentum"] = options["momentum"]
    kw.update(fixed)
    for k in range(steps):
        grads = _grads(params, k)
        for i, (p, g) in enumerate(zip(params, grads)):
            kernel(_np(p), _np(g), *state_of(i), step=k + 1, **kw, **extra_of(i))


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("state_dtype", [None, "float32", "bfloat16", "int8"])
def test_bitwise_with_kernel(name, state_dtype):
    options, _, keys, _ = CASES[name]
    ours, mine = _params(torch.bfloat16), _params(torch.bfloat16)
    opt = getattr(ot, name)(ours, **options, state_dtype=state_dtype)
    states = []
    for p in mine:
        row = []
        for key in keys:
            if state_dtype == "int8" and p.numel() >= MIN_QUANTIZED_SIZE:
                row.append(QuantizedState.zeros(p.shape, signed=key not in UNSIGNED))
            elif state_dtype in ("float32", "int8"):
                row.append(np.zeros(p.shape, np.float32))
            else:
                row.append(np.zeros(p.shape, ml_dtypes.bfloat16))
        states.append(row)
    _train(opt, ours, 5)
    _kernel_run(name, mine, 5, lambda i: states[i])
    for i, (a, b) in enumerate(zip(ours, mine)):
        assert np.array_equal(_bits(a), _bits(b))
        for key, s in zip(keys, states[i]):
            got = opt.state[a][key]
            if isinstance(s, QuantizedState):
                assert got.dtype is torch.uint8
                assert np.array_equal(got.numpy(), s.codes)
                assert np.array_equal(opt.state[a][key + ".absmax"].numpy(), s.absmax)
            else:
                assert np.array_equal(_bits(got), s.view(np.uint8))


def test_float16_stochastic_rounding_is_the_kernels():
    # one kernel call per parameter, seeded parameter_seed(seed, index)
    ours, mine = _params(torch.float16), _params(torch.float16)
    opt = ot.Adam(ours, **CASES["Adam"][0], rounding="stochastic", seed=11)
    states = [[np.zeros(p.shape, np.float32) for _ in range(2)] for p in mine]
    _train(opt, ours, 4)
    _kernel_run("Adam", mine, 4, lambda i: states[i],
                lambda i: {"rounding": "stochastic", "seed": parameter_seed(11, i)})
    for a, b in zip(ours, mine):
        assert a.dtype is torch.float16
        assert np.array_equal(_bits(a), _bits(b))
    nearest = _params(torch.float16)
    _train(ot.Adam(nearest, **CASES["Adam"][0]), nearest, 4)
    assert any(not np.array_equal(_bits(a), _bits(b)) for a, b in zip(ours, nearest))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_stochastic_rounding_draws_the_numpy_classes_bits(dtype):
    # one seed scheme (optcore.precision.parameter_seed) in both class layers:
    # the same seed gives the same bits
    ours = _params(dtype)
    arrays = [_np(p).copy() for p in ours]
    opt = ot.AdamW(ours, lr=1e-2, rounding="stochastic", seed=2**63 + 5)
    twin = optcore.AdamW(arrays, lr=1e-2, rounding="stochastic", seed=2**63 + 5)
    for k in range(3):
        grads = _grads(ours, k)
        for p, g in zip(ours, grads):
            p.grad = g
        opt.step()
        twin.step([_np(g) for g in grads])
    for a, b in zip(ours, arrays):
        assert np.array_equal(_bits(a), b.view(np.uint8).reshape(-1))
    nearest = _params(dtype)
    _train(ot.AdamW(nearest, lr=1e-2), nearest, 3)
    assert any(not np.array_equal(_bits(a), _bits(b)) for a, b in zip(ours, nearest))


def test_float16_default_states_are_float32():
    ps = _params(torch.float16)
    opt = ot.Adam(ps, lr=1e-2)
    _train(opt, ps, 3)
    assert opt.state[ps[0]]["exp_avg"].dtype is torch.float32
    assert ps[0].dtype is torch.float16


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_master_weights(dtype):
    ours, mine = _params(dtype), _params(dtype)
    opt = ot.AdamW(ours, lr=1e-2, weight_decay=0.1, master_weights=True)
    masters = [_np(p).astype(np.float32) for p in mine]
    states = [[np.zeros(p.shape, np.float32 if dtype is torch.float16 else
                        ml_dtypes.bfloat16) for _ in range(2)] for p in mine]
    _train(opt, ours, 4)
    _kernel_run("AdamW", mine, 4, lambda i: states[i],
                lambda i: {"master_param": masters[i]})
    for a, b, m in zip(ours, mine, masters):
        assert np.array_equal(_bits(a), _bits(b))
        assert np.array_equal(opt.state[a]["master_param"].numpy(), m)


def test_kahan_and_stochastic():
    ours, mine = _params(torch.bfloat16), _params(torch.bfloat16)
    opt = ot.SGD(ours, lr=1e-2, momentum=0.9, rounding="kahan")
    comps = [np.zeros(p.shape, ml_dtypes.bfloat16) for p in mine]
    bufs = [[np.zeros(p.shape, ml_dtypes.bfloat16)] for p in mine]
    _train(opt, ours, 3)
    _kernel_run("SGD", mine, 3, lambda i: bufs[i],
                lambda i: {"rounding": "kahan", "compensation": comps[i]})
    for a, b, c in zip(ours, mine, comps):
        assert np.array_equal(_bits(a), _bits(b))
        assert np.array_equal(_bits(opt.state[a]["compensation"]), c.view(np.uint8))
    # stochastic: deterministic for a seed, different for another; each
    # parameter its own stream (two equal parameters round differently)
    runs = []
    for seed in (1, 1, 2):
        ps = [torch.nn.Parameter(torch.full((5000,), 1.0, dtype=torch.bfloat16))
              for _ in range(2)]
        o = ot.Adam(ps, lr=1e-3, rounding="stochastic", seed=seed)
        for _ in range(3):
            for p in ps:
                p.grad = torch.full_like(p, 0.5)
            o.step()
        runs.append([_bits(p) for p in ps])
    assert all(np.array_equal(x, y) for x, y in zip(runs[0], runs[1]))
    assert not np.array_equal(runs[0][0], runs[2][0])
    assert not np.array_equal(runs[0][0], runs[0][1])
    # SGD keeps no step count: a rounding count varies the bits step to step
    p = torch.nn.Parameter(torch.ones(5000, dtype=torch.bfloat16))
    o = ot.SGD([p], lr=1e-3, rounding="stochastic")
    for _ in range(2):
        p.grad = torch.full_like(p, 0.25)
        o.step()
    assert int(o.state[p]["rounding_step"]) == 2


@pytest.mark.parametrize("kwargs, dtype, error, word", [
    (dict(state_dtype="int8"), torch.float64, TypeError, "state_dtype"),
    (dict(state_dtype="bfloat16"), torch.float64, TypeError, "state_dtype"),
    (dict(rounding="stochastic", master_weights=True), torch.bfloat16, ValueError,
     "master_weights"),
    (dict(state_dtype="float16"), torch.bfloat16, ValueError, "state_dtype"),
    (dict(rounding="up"), torch.bfloat16, ValueError, "rounding"),
    (dict(seed=-1, rounding="stochastic"), torch.bfloat16, ValueError, "seed"),
    (dict(seed=1.5), torch.bfloat16, TypeError, "seed"),
])
def test_invalid_options_raise_at_construction(kwargs, dtype, error, word):
    p = torch.nn.Parameter(torch.ones(3, dtype=dtype))
    with pytest.raises(error, match=word):
        ot.Adam([p], **kwargs)


@pytest.mark.parametrize("kwargs", [dict(master_weights=True), dict(rounding="stochastic"),
                                    dict(rounding="kahan")])
@pytest.mark.parametrize("full", [torch.float32, torch.float64])
def test_master_weights_and_roundings_leave_full_precision_parameters_alone(kwargs, full):
    # A model with bfloat16 weights and norms kept in float32 (or float64):
    # the option applies to the bfloat16 parameter; the other one steps, and
    # keeps state, exactly as without it (as the NumPy classes do).
    gen = torch.Generator().manual_seed(4)
    w0 = torch.randn(BIG, generator=gen).to(torch.bfloat16)
    n0 = torch.randn(7, generator=gen, dtype=full)
    runs = []
    for options in (kwargs, {}):
        w, n = torch.nn.Parameter(w0.clone()), torch.nn.Parameter(n0.clone())
        opt = ot.AdamW([w, n], lr=1e-2, **options)
        for k in range(3):
            g = torch.Generator().manual_seed(40 + k)
            w.grad = torch.randn(BIG, generator=g).to(torch.bfloat16)
            n.grad = torch.randn(7, generator=g, dtype=full)
            opt.step()
        runs.append((w.detach().clone(), n.detach().clone(), opt.state[w], opt.state[n]))
    (w_opt, n_opt, sw, sn), (w_plain, n_plain, _, sn_plain) = runs
    torch.testing.assert_close(n_opt, n_plain, rtol=0, atol=0)
    assert sorted(sn) == sorted(sn_plain)
    for key in sn:
        torch.testing.assert_close(sn[key], sn_plain[key], rtol=0, atol=0)
    extra = {"master_weights": "master_param", "kahan": "compensation"}.get(
        "master_weights" if "master_weights" in kwargs else kwargs["rounding"])
    if extra is not None:
        assert extra in sw and extra not in sn
    # the bfloat16 parameter did take the option
    assert not torch.equal(w_opt, w_plain)


@pytest.mark.parametrize("kwargs", [{}, dict(state_dtype="bfloat16"),
                                    dict(master_weights=True)])
@pytest.mark.parametrize("bad_dtype", [torch.float64, torch.int32])
def test_bad_grad_dtype_in_a_later_group_changes_nothing(kwargs, bad_dtype):
    # a float32 group (bfloat16 with master weights), then a bfloat16 one
    # whose grad has a dtype no kernel takes:
    # refused before the first group's call runs
    first = torch.bfloat16 if kwargs.get("master_weights") else torch.float32
    a = torch.nn.Parameter(torch.linspace(-1, 1, 10).to(first))
    b = torch.nn.Parameter(torch.linspace(-2, 2, BIG).to(torch.bfloat16))
    opt = ot.AdamW([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.1, **kwargs)
    a.grad = torch.full((10,), 0.3, dtype=first)
    b.grad = torch.full((BIG,), 0.3, dtype=torch.bfloat16)
    opt.step()
    saved = [a.detach().clone(), b.detach().clone(), copy.deepcopy(opt.state_dict())]
    b.grad_dtype = None                 # torch lets the grad's dtype differ then
    b.grad = torch.ones(BIG, dtype=bad_dtype)
    with pytest.raises(TypeError, match=r"the grad of param_groups\[1\]\['params'\]\[0\] "
                                        r"has dtype"):
        opt.step()
    assert torch.equal(a, saved[0]) and torch.equal(b, saved[1])
    now = opt.state_dict()
    for k, entry in saved[2]["state"].items():
        for key, value in entry.items():
            assert torch.equal(torch.as_tensor(now["state"][k][key]), torch.as_tensor(value)), key


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("kwargs", [{}, dict(state_dtype="float32"), dict(master_weights=True),
                                    dict(rounding="stochastic", seed=5),
                                    dict(rounding="kahan")], ids=str)
def test_lamb_low_precision_is_the_kernels(kwargs, dtype):
    # float32 moments whatever the parameter's dtype; one kernel call per
    # parameter (the class groups them: per-tensor trust ratios, the same bits)
    ours, mine = _params(dtype), _params(dtype)
    opt = ot.LAMB(ours, lr=1e-2, weight_decay=0.01, **kwargs)
    states = [[np.zeros(p.shape, np.float32) for _ in range(2)] for p in mine]
    extra = [{} for _ in mine]
    for i, p in enumerate(mine):
        if kwargs.get("master_weights"):
            extra[i]["master_param"] = _np(p).astype(np.float32)
        if kwargs.get("rounding") == "kahan":
            extra[i].update(rounding="kahan", compensation=np.zeros_like(_np(p)))
        if kwargs.get("rounding") == "stochastic":
            extra[i].update(rounding="stochastic", seed=parameter_seed(5, i))
    _train(opt, ours, 4)
    for k in range(4):
        for i, (p, g) in enumerate(zip(mine, _grads(mine, k))):
            optcore.lamb_step(_np(p), _np(g), *states[i], step=k + 1, lr=1e-2,
                              weight_decay=0.01, **extra[i])
    for i, (a, b) in enumerate(zip(ours, mine)):
        assert a.dtype is dtype
        assert np.array_equal(_bits(a), _bits(b)), i
        for key, s in zip(("exp_avg", "exp_avg_sq"), states[i]):
            assert opt.state[a][key].dtype is torch.float32
            assert np.array_equal(opt.state[a][key].numpy(), s), key
        for key in ("master_param", "compensation"):
            if key in extra[i]:
                assert np.array_equal(_bits(opt.state[a][key]),
                                      extra[i][key].reshape(-1).view(np.uint8)), key
    with pytest.raises(TypeError, match="state_dtype='int8': LAMB keeps its states in float32"):
        ot.LAMB(_params(dtype), state_dtype="int8")


# ---- 3. state_dict ------------------------------------------------------------------

def _saved(sd):
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    return torch.load(buf)


@pytest.mark.parametrize("kwargs", [dict(state_dtype="int8"),
                                    dict(state_dtype="int8", master_weights=True),
                                    dict(rounding="kahan", state_dtype="bfloat16")])
def test_state_dict_round_trip(kwargs):
    a = _params(torch.bfloat16)
    opt = ot.AdamW(a, lr=1e-2, **kwargs)
    _train(opt, a, 3)
    sd = _saved(opt.state_dict())
    if kwargs.get("state_dtype") == "int8":
        assert sd["state"][0]["exp_avg"].dtype is torch.uint8
        assert sd["state"][0]["exp_avg.absmax"].dtype is torch.float32
        assert sd["state"][1]["exp_avg"].dtype is torch.float32      # small: float32
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    opt2 = ot.AdamW(b, lr=1e-2, **kwargs)
    opt2.load_state_dict(sd)
    for k in range(3, 6):
        for ps in (a, b):
            for p, g in zip(ps, _grads(ps, k)):
                p.grad = g
        opt.step()
        opt2.step()
    for p, q in zip(a, b):
        assert np.array_equal(_bits(p), _bits(q))
        for key, t in opt.state[p].items():
            assert np.array_equal(_bits(t), _bits(opt2.state[q][key])), key


@pytest.mark.parametrize("state_dtype", ["int8", "bfloat16"])
def test_load_torch_checkpoint(state_dtype):
    ps = _params(torch.float32)
    ref = torch.optim.AdamW(ps, lr=1e-2)
    _train(ref, ps, 3)
    sd = _saved(ref.state_dict())
    opt = ot.AdamW(ps, lr=1e-2, state_dtype=state_dtype)
    opt.load_state_dict(sd)
    big, small = opt.state[ps[0]], opt.state[ps[1]]
    want = sd["state"][0]["exp_avg"]
    if state_dtype == "int8":
        q = QuantizedState.from_float(want.numpy(), signed=True)
        assert np.array_equal(big["exp_avg"].numpy(), q.codes)
        assert np.array_equal(big["exp_avg.absmax"].numpy(), q.absmax)
        assert small["exp_avg"].dtype is torch.float32
    else:
        assert torch.equal(big["exp_avg"], want.to(torch.bfloat16))
    _train(opt, ps, 2)


def test_torch_state_dict_loads_into_torch():
    ps = _params(torch.bfloat16)
    opt = ot.AdamW(ps, lr=1e-2, state_dtype="int8", master_weights=True)
    _train(opt, ps, 3)
    sd = opt.torch_state_dict()
    st = sd["state"][0]
    assert set(st) == {"step", "exp_avg", "exp_avg_sq"}
    assert st["exp_avg"].dtype is torch.bfloat16
    q = opt.state[ps[0]]
    assert torch.equal(st["exp_avg"], torch.from_numpy(QuantizedState(
        q["exp_avg"].numpy(), q["exp_avg.absmax"].numpy(), True).dequantize()
    ).to(torch.bfloat16))
    ref = torch.optim.AdamW(ps, lr=1e-2)
    ref.load_state_dict(copy.deepcopy(sd))
    _train(ref, ps, 2)
    assert int(ref.state[ps[0]]["step"]) == 5
    assert all(torch.isfinite(p.float()).all() for p in ps)


# ---- 4. autocast, GradScaler ---------------------------------------------------------

def _model(dtype=torch.float32):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(),
                               torch.nn.Linear(16, 1)).to(dtype)


def test_autocast_bf16_training_loop():
    model = _model()
    opt = ot.AdamW(model.parameters(), lr=1e-2)
    x, y = torch.randn(64, 8), torch.randn(64, 1)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = torch.nn.functional.mse_loss(model(x).float(), y)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]


def test_bf16_model_training_loop():
    model = _model(torch.bfloat16)
    opt = ot.AdamW(model.parameters(), lr=1e-2, master_weights=True, state_dtype="int8")
    x, y = torch.randn(64, 8, dtype=torch.bfloat16), torch.randn(64, 1)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x).float(), y)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]


def test_grad_scaler_float16_autocast():
    # GradScaler refuses float16 gradients (torch's "Attempting to unscale FP16
    # gradients"): float32 parameters under float16 autocast, as torch's AMP recipe.
    model = _model()
    opt = ot.Adam(model.parameters(), lr=1e-2)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    x, y = torch.randn(64, 8), torch.randn(64, 1)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.float16):
            out = model(x)
            assert out.dtype is torch.float16
            loss = torch.nn.functional.mse_loss(out.float(), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]


def test_plan_falls_back_for_low_precision():
    ps = _params(torch.float32, sizes=(BIG,))
    opt = ot.Adam(ps, lr=1e-2, state_dtype="int8")
    _train(opt, ps, 3)
    assert opt.__dict__.get("_optcore_plan") is None
    plain = _params(torch.float32, sizes=(BIG,))
    o2 = ot.Adam(plain, lr=1e-2)
    _train(o2, plain, 3)
    assert o2.__dict__.get("_optcore_plan") is not None
