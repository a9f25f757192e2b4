"""The stateful optimizers (optcore.SGD, Adam, ...): trajectories against the
functional kernels (bitwise) and torch.optim, parameter groups, state_dict
round trips and validation, the state arenas, and bad input."""

import contextlib
import copy

import numpy as np
import pytest

import optcore
from support import DTYPES, TORCH_RTOL, random_array

ALL = [optcore.SGD, optcore.Adam, optcore.AdamW, optcore.RMSprop, optcore.Adagrad,
       optcore.Adadelta, optcore.Adamax, optcore.NAdam, optcore.RAdam, optcore.Lion,
       optcore.LAMB]
IN_TORCH = [c for c in ALL if c not in (optcore.Lion, optcore.LAMB)]
SHAPES = [(7,), (3, 5), (0,), (33,), (2, 2, 9)]


def ids(classes):
    return [c.__name__ for c in classes]


# ---- the contract, restated: options, state and kernel arguments -----------

def random_options(cls, rng):
    """Random torch.optim constructor options for ``cls`` (torch's names)."""
    u = lambda lo, hi: float(rng.uniform(lo, hi))   # noqa: E731
    flag = lambda: bool(rng.integers(2))            # noqa: E731
    betas = (u(0.5, 0.95), u(0.9, 0.999))
    if cls is optcore.SGD:
        momentum = [0.0, u(0.5, 0.95)][rng.integers(2)]
        nesterov = bool(momentum) and flag()
        return dict(lr=u(1e-3, 0.1), momentum=momentum, nesterov=nesterov,
                    dampening=0.0 if nesterov else [0.0, u(0.0, 0.5)][rng.integers(2)],
                    weight_decay=[0.0, u(0, 0.1)][rng.integers(2)], maximize=flag())
    common = dict(weight_decay=[0.0, u(0, 0.1)][rng.integers(2)], maximize=flag())
    if cls is optcore.Adam:
        return dict(common, lr=u(1e-3, 0.05), betas=betas, eps=u(1e-8, 1e-6),
                    amsgrad=flag(), decoupled_weight_decay=flag())
    if cls is optcore.AdamW:
        return dict(common, lr=u(1e-3, 0.05), betas=betas, eps=u(1e-8, 1e-6),
                    amsgrad=flag())
    if cls is optcore.RMSprop:
        return dict(common, lr=u(1e-3, 0.02), alpha=u(0.8, 0.99), eps=u(1e-8, 1e-6),
                    momentum=[0.0, u(0.5, 0.9)][rng.integers(2)], centered=flag())
    if cls is optcore.Adagrad:
        return dict(common, lr=u(1e-3, 0.1), lr_decay=[0.0, u(0, 0.01)][rng.integers(2)],
                    initial_accumulator_value=[0.0, u(0, 0.5)][rng.integers(2)],
                    eps=u(1e-10, 1e-8))
    if cls is optcore.Adadelta:
        return dict(common, lr=u(0.1, 1.0), rho=u(0.8, 0.95), eps=u(1e-6, 1e-5))
    if cls is optcore.Adamax:
        return dict(common, lr=u(1e-3, 0.02), betas=betas, eps=u(1e-8, 1e-6))
    if cls is optcore.NAdam:
        return dict(common, lr=u(1e-3, 0.02), betas=betas, eps=u(1e-8, 1e-6),
                    momentum_decay=u(1e-3, 1e-2), decoupled_weight_decay=flag())
    if cls is optcore.RAdam:
        return dict(common, lr=u(1e-3, 0.02), betas=betas, eps=u(1e-8, 1e-6),
                    decoupled_weight_decay=flag())
    if cls is optcore.Lion:
        return dict(common, lr=u(1e-4, 1e-2), betas=(u(0.8, 0.95), u(0.9, 0.999)))
    if cls is optcore.LAMB:
        return dict(common, lr=u(1e-3, 0.02), betas=betas, eps=u(1e-6, 1e-4))
    raise AssertionError(cls)


def group_options(cls, rng):
    """Hyperparameters for a second group that differ from the first's."""
    opts = {"lr": float(rng.uniform(1e-3, 0.01))}
    if cls is not optcore.SGD or rng.integers(2):
        opts["weight_decay"] = float(rng.uniform(0.0, 0.05))
    return opts


# state key -> kernel argument, for the state each group's options need
def state_args(cls, group):
    if cls is optcore.SGD:
        return {"momentum_buffer": "momentum_buffer"} if group["momentum"] else {}
    if cls in (optcore.Adam, optcore.AdamW):
        keys = ["exp_avg", "exp_avg_sq"] + (["max_exp_avg_sq"] if group["amsgrad"] else [])
    elif cls is optcore.RMSprop:
        keys = ["square_avg"] + (["momentum_buffer"] if group["momentum"] else []) \
            + (["grad_avg"] if group["centered"] else [])
    elif cls is optcore.Adagrad:
        return {"sum": "state_sum"}
    elif cls is optcore.Adadelta:
        keys = ["square_avg", "acc_delta"]
    elif cls is optcore.Adamax:
        keys = ["exp_avg", "exp_inf"]
    elif cls is optcore.Lion:
        keys = ["exp_avg"]
    else:
        keys = ["exp_avg", "exp_avg_sq"]
    return {k: k for k in keys}


def kernel_hyper(cls, group):
    out = {}
    for k, v in group.items():
        if k == "params" or k == "initial_accumulator_value":
            continue
        if k == "decoupled_weight_decay" and cls is optcore.AdamW:
            continue
        if k == "betas":
            out["beta1"], out["beta2"] = v
        else:
            out[k] = v
    return out


class Replay:
    """The same training run driven through the functional kernels directly:
    separate state arrays per parameter, one multi-tensor call per group."""

    def __init__(self, cls, groups):
        self.cls = cls
        self.fn = getattr(optcore, cls.__name__.lower() + "_step")
        self.groups = [dict(g, params=[p.copy() for p in g["params"]]) for g in groups]
        self.state = []
        for g in self.groups:
            fill = g.get("initial_accumulator_value", 0.0)
            self.state.append({arg: [np.full_like(p, fill) for p in g["params"]]
                               for arg in state_args(cls, g).values()})
        self.t = 0
        self.mu = [1.0] * len(self.groups)

    def step(self, grads_per_group):
        self.t += 1
        for i, (g, gs) in enumerate(zip(self.groups, grads_per_group)):
            kw = dict(kernel_hyper(self.cls, g), step=self.t, **self.state[i])
            if self.cls is optcore.NAdam:
                # torch.optim.NAdam's mu_product: `mu_product *= mu` rounded to
                # float32 (torch's default dtype); the kernel multiplies in
                # double, so it gets the factor that gives the rounded product.
                mu = kw["beta1"] * (1.0 - 0.5 * 0.96 ** (self.t * kw["momentum_decay"]))
                product = float(np.float32(self.mu[i]) * np.float32(mu))
                self.fn(g["params"], gs, mu_product=product / mu, **kw)
                self.mu[i] = product
            else:
                self.fn(g["params"], gs, **kw)


def make_groups(cls, rng, dtype, nparams=(3, 2)):
    """Two groups of fresh random parameters; the second with its own
    hyperparameters. Returns (constructor options, groups)."""
    opts = random_options(cls, rng)
    shapes = iter(SHAPES * 3)
    groups = []
    for i, n in enumerate(nparams):
        params = [random_array(rng, int(np.prod(s)), dtype).reshape(s)
                  for s in [next(shapes) for _ in range(n)]]
        groups.append(dict({"params": params}, **(group_options(cls, rng) if i else {})))
    return opts, groups


def grads_like(rng, groups):
    return [[random_array(rng, p.size, p.dtype).reshape(p.shape) for p in g["params"]]
            for g in groups]


def all_params(opt):
    return [p for g in opt.param_groups for p in g["params"]]


# ---- trajectories ----------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls", ALL, ids=ids(ALL))
def test_matches_functional_kernels_bitwise(cls, dtype, rng):
    for _ in range(3):                               # three random option draws
        opts, groups = make_groups(cls, rng, dtype)
        opt = cls(copy.deepcopy(groups), **opts)
        replay = Replay(cls, opt.param_groups)
        for _ in range(30):
            grads = grads_like(rng, groups)
            opt.step(grads)
            replay.step(grads)
        for g, rg, rs in zip(opt.param_groups, replay.groups, replay.state):
            for j, (p, q) in enumerate(zip(g["params"], rg["params"])):
                np.testing.assert_array_equal(p, q, err_msg=f"param {j} {opts}")
                st = opt.state.get(p, {})
                assert st.get("step", 30) == 30
                for key, arg in state_args(cls, g).items():
                    np.testing.assert_array_equal(st[key], rs[arg][j], err_msg=key)


@contextlib.contextmanager
def torch_scalar_dtype(torch, dtype):
    """torch keeps scalar state (step, NAdam's mu_product) in its default
    dtype; optcore.NAdam rounds mu_product as torch does with the default
    float32, so compare against torch with that default for every dtype."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def torch_copy(torch, groups):
    return [dict(g, params=[torch.tensor(p.copy()) for p in g["params"]]) for g in groups]


@pytest.mark.torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls", IN_TORCH, ids=ids(IN_TORCH))
def test_matches_torch_optim(cls, dtype, torch, rng):
    for _ in range(2):
        opts, groups = make_groups(cls, rng, dtype)
        opt = cls(copy.deepcopy(groups), **opts)
        tgroups = torch_copy(torch, groups)
        with torch_scalar_dtype(torch, dtype):
            topt = getattr(torch.optim, cls.__name__)(tgroups, **opts, foreach=False)
            for _ in range(100):
                grads = grads_like(rng, groups)
                opt.step(grads)
                for tg, gs in zip(tgroups, grads):
                    for tp, gr in zip(tg["params"], gs):
                        tp.grad = torch.from_numpy(gr)
                topt.step()
        scale = max(float(np.abs(p).max(initial=0)) for p in all_params(opt))
        for j, (p, tp) in enumerate(zip(all_params(opt),
                                        [p for g in tgroups for p in g["params"]])):
            np.testing.assert_allclose(p, tp.numpy(), rtol=TORCH_RTOL[dtype],
                                       atol=TORCH_RTOL[dtype] * scale,
                                       err_msg=f"{cls.__name__} param {j} {opts}")
            tstate = topt.state[tp]
            for key, value in opt.state.get(j, {}).items():
                if isinstance(value, np.ndarray):
                    ref = tstate[key].numpy()
                    np.testing.assert_allclose(
                        value, ref, rtol=TORCH_RTOL[dtype],
                        atol=TORCH_RTOL[dtype] * float(np.abs(ref).max(initial=0)),
                        err_msg=f"{cls.__name__} state {key} of param {j}")
                elif key == "step":
                    assert value == int(tstate[key]) == 100
                else:
                    assert value == pytest.approx(float(tstate[key]), abs=0,
                                                  rel=1e-12 if dtype == np.float64 else 1e-5)
            assert set(opt.state.get(j, {})) == set(tstate), "state keys differ from torch's"


@pytest.mark.torch
@pytest.mark.parametrize("dtype", DTYPES)
def test_add_param_group_mid_training_matches_torch(dtype, torch, rng):
    groups = [{"params": [random_array(rng, 50, dtype)]},
              {"params": [random_array(rng, 20, dtype), random_array(rng, 9, dtype)],
               "lr": 0.003, "betas": (0.8, 0.99)}]
    opt = optcore.Adam([groups[0]["params"][0].copy()], lr=0.01, amsgrad=True)
    tgroups = torch_copy(torch, groups)
    topt = torch.optim.Adam(tgroups[:1], lr=0.01, amsgrad=True, foreach=False)
    for t in range(60):
        if t == 20:
            opt.add_param_group(dict(groups[1], params=[p.copy()
                                                        for p in groups[1]["params"]]))
            topt.add_param_group(tgroups[1])
        grads = grads_like(rng, opt.param_groups)
        opt.step(grads)
        for tg, gs in zip(topt.param_groups, grads):
            for tp, gr in zip(tg["params"], gs):
                tp.grad = torch.from_numpy(gr)
        topt.step()
    assert opt.param_groups[1]["eps"] == 1e-8 and opt.param_groups[1]["lr"] == 0.003
    assert opt.state[0]["step"] == 60 and opt.state[1]["step"] == 40
    for p, tp in zip(all_params(opt), [p for g in tgroups for p in g["params"]]):
        np.testing.assert_allclose(p, tp.numpy(), rtol=TORCH_RTOL[dtype],
                                   atol=TORCH_RTOL[dtype])


def test_group_hyperparameters_apply_per_group(rng):
    a, b = random_array(rng, 40, np.float64), random_array(rng, 40, np.float64)
    opt = optcore.SGD([{"params": [a.copy()]}, {"params": [b.copy()], "lr": 0.5,
                                                  "momentum": 0.9}], lr=0.1)
    ga, gb = random_array(rng, 40, np.float64), random_array(rng, 40, np.float64)
    opt.step([ga, gb])
    np.testing.assert_array_equal(opt.param_groups[0]["params"][0], a - 0.1 * ga)
    np.testing.assert_array_equal(opt.param_groups[1]["params"][0], b - 0.5 * gb)
    assert 0 not in opt.state                       # SGD without momentum: no state
    np.testing.assert_array_equal(opt.state[1]["momentum_buffer"], gb)


def test_parameters_are_updated_in_place_never_copied(rng):
    w = random_array(rng, 100, np.float32).reshape(10, 10)
    before = w.copy()
    opt = optcore.Adam([w], lr=0.1)
    assert opt.param_groups[0]["params"][0] is w
    opt.step([np.ones_like(w)])
    assert opt.param_groups[0]["params"][0] is w
    assert not np.array_equal(w, before)
    assert opt.state[w] is opt.state[0]


def test_grads_forms_and_none_skips(rng):
    ps = [random_array(rng, 10, np.float64) for _ in range(3)]
    gs = [random_array(rng, 10, np.float64) for _ in range(3)]
    results = []
    for form in ("flat", "nested", "dict"):
        params = [p.copy() for p in ps]
        opt = optcore.Adam([{"params": params[:2]}, {"params": params[2:]}], lr=0.1)
        grads = {"flat": gs, "nested": [gs[:2], gs[2:]],
                 "dict": {0: gs[:2], 1: gs[2:]}}[form]
        opt.step(grads)
        results.append(params)
    for params in results[1:]:
        for p, q in zip(params, results[0]):
            np.testing.assert_array_equal(p, q)

    # None skips a parameter (no state, no change); dict steps only its groups.
    params = [p.copy() for p in ps]
    opt = optcore.Adam([{"params": params[:2]}, {"params": params[2:]}], lr=0.1)
    opt.step([gs[0], None, None])
    np.testing.assert_array_equal(params[1], ps[1])
    np.testing.assert_array_equal(params[2], ps[2])
    assert list(opt.state) == [0]
    opt.step({1: [gs[2]]})
    assert list(opt.state) == [0, 2]
    # A parameter that joins later starts at its own step 1 (torch's per-parameter
    # step): two step counts in one group, two kernel calls.
    opt.step([gs[0], gs[1], gs[2]])
    assert [opt.state[i]["step"] for i in range(3)] == [2, 1, 2]
    ref = ps[1].copy()
    m, v = np.zeros_like(ref), np.zeros_like(ref)
    optcore.adam_step(ref, gs[1], m, v, step=1, lr=0.1)
    np.testing.assert_array_equal(params[1], ref)


def test_mixed_dtypes_in_a_group(rng):
    p32, p64 = random_array(rng, 30, np.float32), random_array(rng, 30, np.float64)
    opt = optcore.AdamW([p32, p64], lr=0.01)
    r32, r64 = p32.copy(), p64.copy()
    s32 = [np.zeros_like(r32) for _ in range(2)]
    s64 = [np.zeros_like(r64) for _ in range(2)]
    for t in range(1, 6):
        g32, g64 = random_array(rng, 30, np.float32), random_array(rng, 30, np.float64)
        opt.step([g32, g64])
        optcore.adamw_step([r32], [g32], [s32[0]], [s32[1]], step=t, lr=0.01)
        optcore.adamw_step([r64], [g64], [s64[0]], [s64[1]], step=t, lr=0.01)
    np.testing.assert_array_equal(p32, r32)
    np.testing.assert_array_equal(p64, r64)
    assert opt.arena(0, "exp_avg", np.float32).dtype == np.float32
    assert opt.arena(0, "exp_avg", np.float64).dtype == np.float64
    with pytest.raises(KeyError, match="several dtypes"):
        opt.arena(0, "exp_avg")


# ---- state: laziness, arenas, reset ----------------------------------------

@pytest.mark.parametrize("cls", ALL, ids=ids(ALL))
def test_state_is_created_lazily_with_torch_keys(cls, rng):
    opts = dict(random_options(cls, rng))
    if cls is optcore.SGD:
        opts.update(momentum=0.9)
    p = random_array(rng, 12, np.float32)
    opt = cls([p], **opts)
    if cls is optcore.Adagrad:                      # created at construction, as torch
        assert opt.state[0]["step"] == 0
        assert np.all(opt.state[0]["sum"] == np.float32(opts["initial_accumulator_value"]))
    else:
        assert len(opt.state) == 0
    opt.step([random_array(rng, 12, np.float32)])
    group = opt.param_groups[0]
    scalars = {optcore.SGD: set(), optcore.NAdam: {"step", "mu_product"}}.get(cls, {"step"})
    expected = set(state_args(cls, group)) | scalars
    assert set(opt.state[0]) == expected


@pytest.mark.parametrize("cls", [optcore.Adam, optcore.RMSprop, optcore.Adagrad,
                                 optcore.NAdam], ids=["Adam", "RMSprop", "Adagrad", "NAdam"])
def test_state_lives_in_one_arena_per_group_and_kind(cls, rng, monkeypatch):
    opts = {"Adam": dict(amsgrad=True), "RMSprop": dict(momentum=0.9, centered=True),
            "Adagrad": {}, "NAdam": {}}[cls.__name__]
    groups = [{"params": [random_array(rng, n, np.float32).reshape(s)
                          for n, s in [(7, (7,)), (15, (3, 5)), (0, (0,)), (100, (10, 10))]]},
              {"params": [random_array(rng, 33, np.float32)], "lr": 1e-3}]
    opt = cls(groups, **opts)

    calls = []
    real = opt._rules.kernel

    def counting(*args, **kwargs):
        calls.append((args, kwargs))
        return real(*args, **kwargs)
    monkeypatch.setattr(opt._rules, "kernel", counting)
    opt.step(grads_like(rng, groups))
    assert len(calls) == 2, "one multi-tensor kernel call per group"

    for g, group in enumerate(opt.param_groups):
        args, kwargs = calls[g]
        assert all(a is b for a, b in zip(args[0], group["params"])), "params not copied"
        start = sum(len(gr["params"]) for gr in opt.param_groups[:g])
        for kind in state_args(cls, group):
            arena = opt.arena(g, kind)
            assert arena.ndim == 1 and arena.flags.c_contiguous
            assert arena.ctypes.data % 64 == 0
            lo, hi = arena.ctypes.data, arena.ctypes.data + arena.nbytes
            prev_end = lo
            for j, p in enumerate(group["params"]):
                view = opt.state[start + j][kind]
                assert view.shape == p.shape and view.dtype == p.dtype
                assert view.base is not None and not view.flags.owndata
                if not view.size:
                    continue                     # no bytes, no address to check
                addr = view.ctypes.data
                assert lo <= addr and addr + view.nbytes <= hi, "view outside the arena"
                assert addr >= prev_end and (addr - lo) % 64 == 0
                prev_end = addr + view.nbytes
                assert np.shares_memory(view, arena)
            # the kernel was handed exactly these views
            arg = state_args(cls, group)[kind]
            for view, st_j in zip(kwargs[arg], range(start, start + len(group["params"]))):
                assert view is opt.state[st_j][kind]


def test_zero_state_resets(rng):
    p = random_array(rng, 20, np.float64)
    opt = optcore.Adam([p], lr=0.01)
    g = random_array(rng, 20, np.float64)
    opt.step([g])
    opt.step([g])
    opt.zero_state()
    assert len(opt.state) == 0
    before = p.copy()
    opt.step([g])
    ref, m, v = before.copy(), np.zeros_like(before), np.zeros_like(before)
    optcore.adam_step(ref, g, m, v, step=1, lr=0.01)
    np.testing.assert_array_equal(p, ref)
    assert opt.state[0]["step"] == 1

    q = random_array(rng, 5, np.float32)
    ada = optcore.Adagrad([q], initial_accumulator_value=0.25)
    ada.state[0]["sum"][:] = 7
    ada.zero_state()
    assert ada.state[0]["step"] == 0 and np.all(ada.state[0]["sum"] == 0.25)


def test_options_switched_on_later_get_fresh_state(rng):
    p = random_array(rng, 16, np.float64)
    opt = optcore.Adam([p], lr=0.01)
    g = random_array(rng, 16, np.float64)
    opt.step([g])
    opt.param_groups[0]["amsgrad"] = True
    opt.step([g])
    assert np.shares_memory(opt.state[0]["max_exp_avg_sq"], opt.arena(0, "max_exp_avg_sq"))
    # SGD: momentum turned on later starts its buffer from the gradient (torch)
    q = random_array(rng, 16, np.float64)
    sgd = optcore.SGD([q], lr=0.1)
    sgd.step([g])
    sgd.param_groups[0]["momentum"] = 0.9
    sgd.step([g])
    np.testing.assert_array_equal(sgd.state[0]["momentum_buffer"], g)


# ---- state_dict ------------------------------------------------------------

def plain(obj):
    """Only Python containers, numbers, strings and NumPy arrays."""
    if isinstance(obj, dict):
        return all(isinstance(k, (int, str)) and plain(v) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return all(plain(v) for v in obj)
    return isinstance(obj, (bool, int, float, str, np.ndarray, type(None)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls", ALL, ids=ids(ALL))
def test_state_dict_round_trip_continues_identically(cls, dtype, rng):
    opts, groups = make_groups(cls, rng, dtype)
    opt = cls(copy.deepcopy(groups), **opts)
    for _ in range(7):
        opt.step(grads_like(rng, groups))
    sd = opt.state_dict()
    assert plain(sd)
    assert sorted(sd) == ["param_groups", "state"]
    assert [g["params"] for g in sd["param_groups"]] == [[0, 1, 2], [3, 4]]

    # a new optimizer over copies of the parameters, with other options
    params = [[p.copy() for p in g["params"]] for g in opt.param_groups]
    other = cls([{"params": params[0]}, {"params": params[1]}])
    other.load_state_dict(sd)
    for g_old, g_new in zip(opt.param_groups, other.param_groups):
        assert {k: v for k, v in g_old.items() if k != "params"} == \
            {k: v for k, v in g_new.items() if k != "params"}
    for _ in range(5):
        grads = grads_like(rng, groups)
        opt.step(grads)
        other.step(grads)
    for p, q in zip(all_params(opt), all_params(other)):
        np.testing.assert_array_equal(p, q)
    for i in opt.state:
        for key, value in opt.state[i].items():
            np.testing.assert_array_equal(value, other.state[i][key])
    # the loaded state lives in the new optimizer's arenas
    for kind in state_args(cls, other.param_groups[0]):
        assert np.shares_memory(other.state[0][kind], other.arena(0, kind)) \
            or other.state[0][kind].size == 0


def test_state_dict_is_a_deep_copy(rng):
    p = random_array(rng, 8, np.float32)
    opt = optcore.Adam([p], lr=0.01, betas=(0.8, 0.9))
    opt.step([random_array(rng, 8, np.float32)])
    sd = opt.state_dict()
    saved = sd["state"][0]["exp_avg"].copy()
    assert not np.shares_memory(sd["state"][0]["exp_avg"], opt.state[0]["exp_avg"])
    opt.step([random_array(rng, 8, np.float32)])
    np.testing.assert_array_equal(sd["state"][0]["exp_avg"], saved)
    assert sd["state"][0]["step"] == 1

    other = optcore.Adam([p.copy()])
    other.load_state_dict(sd)
    sd["state"][0]["exp_avg"][:] = 123
    sd["param_groups"][0]["lr"] = 5.0
    assert not np.any(other.state[0]["exp_avg"] == 123)
    assert other.param_groups[0]["lr"] == 0.01 and other.param_groups[0]["betas"] == (0.8, 0.9)


def snapshot(opt):
    return (copy.deepcopy([{k: v for k, v in g.items() if k != "params"}
                           for g in opt.param_groups]),
            {i: {k: (v.copy() if isinstance(v, np.ndarray) else v)
                 for k, v in st.items()} for i, st in opt.state.items()},
            {i: {k: v for k, v in st.items()} for i, st in opt.state.items()})


def assert_unchanged(opt, snap):
    groups, values, objects = snap
    assert [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups] == groups
    assert sorted(opt.state) == sorted(values)
    for i, st in opt.state.items():
        assert sorted(st) == sorted(values[i])
        for k, v in st.items():
            assert v is objects[i][k]                      # the same views, still live
            np.testing.assert_array_equal(v, values[i][k])


def bad_state_dicts(sd):
    """(description, corrupted copy, expected error) of a valid state_dict."""
    def edit(fn):
        d = copy.deepcopy(sd)
        fn(d)
        return d
    yield "not a dict", [sd], TypeError
    yield "no state", {"param_groups": sd["param_groups"]}, ValueError
    yield "no param_groups", {"state": sd["state"]}, ValueError
    yield "one group too many", edit(lambda d: d["param_groups"].append(
        dict(d["param_groups"][0], params=[9]))), ValueError
    yield "group count short", edit(lambda d: d["param_groups"].pop()), ValueError
    yield "param count", edit(lambda d: d["param_groups"][1]["params"].pop()), ValueError
    yield "wrong shape", edit(lambda d: d["state"][1].update(
        exp_avg=np.zeros(4, d["state"][1]["exp_avg"].dtype))), ValueError
    yield "wrong dtype", edit(lambda d: d["state"][3].update(
        exp_avg_sq=d["state"][3]["exp_avg_sq"].astype(np.float16))), TypeError
    yield "missing key", edit(lambda d: d["state"][2].pop("exp_avg_sq")), ValueError
    yield "amsgrad needs max_exp_avg_sq", edit(
        lambda d: d["param_groups"][0].update(amsgrad=True)), ValueError
    yield "unknown key", edit(lambda d: d["state"][0].update(bogus=np.zeros(1))), ValueError
    yield "not an array", edit(lambda d: d["state"][0].update(
        exp_avg=d["state"][0]["exp_avg"].tolist())), TypeError
    yield "negative step", edit(lambda d: d["state"][0].update(step=-1)), ValueError
    yield "fractional step", edit(lambda d: d["state"][0].update(step=1.5)), ValueError
    yield "unknown parameter", edit(lambda d: d["state"].update(
        {17: d["state"][0]})), ValueError
    yield "bad lr", edit(lambda d: d["param_groups"][1].update(lr=-1.0)), ValueError
    yield "bad betas", edit(lambda d: d["param_groups"][0].update(betas=(0.9, 1.5))), \
        ValueError
    yield "missing hyperparameter", edit(lambda d: d["param_groups"][0].pop("eps")), \
        ValueError


def test_load_state_dict_validates_and_changes_nothing(rng):
    groups = [{"params": [random_array(rng, 6, np.float32),
                          random_array(rng, 12, np.float32).reshape(3, 4)]},
              {"params": [random_array(rng, 5, np.float32),
                          random_array(rng, 2, np.float32)], "lr": 0.1}]
    source = optcore.Adam(copy.deepcopy(groups), lr=0.01)
    for _ in range(3):
        source.step(grads_like(rng, groups))
    sd = source.state_dict()

    target = optcore.Adam(copy.deepcopy(groups), lr=0.02, weight_decay=0.1)
    for _ in range(2):
        target.step(grads_like(rng, groups))
    snap = snapshot(target)
    params_before = [p.copy() for p in all_params(target)]
    for what, bad, error in bad_state_dicts(sd):
        with pytest.raises(error):
            target.load_state_dict(bad)
        assert_unchanged(target, snap)
    for p, q in zip(all_params(target), params_before):
        np.testing.assert_array_equal(p, q)
    target.load_state_dict(sd)                      # the valid one still loads
    assert target.param_groups[0]["lr"] == 0.01 and target.state[0]["step"] == 3


def test_load_into_optimizer_without_state_and_partial_state(rng):
    params = [random_array(rng, 4, np.float64) for _ in range(3)]
    source = optcore.RAdam
    src = source([p.copy() for p in params])
    src.step([random_array(rng, 4, np.float64), None, random_array(rng, 4, np.float64)])
    sd = src.state_dict()
    assert sorted(sd["state"]) == [0, 2]
    dst = source([p.copy() for p in all_params(src)])
    dst.load_state_dict(sd)
    assert sorted(dst.state) == [0, 2]
    g = [random_array(rng, 4, np.float64) for _ in range(3)]
    src.step(g)
    dst.step(g)
    for p, q in zip(all_params(src), all_params(dst)):
        np.testing.assert_array_equal(p, q)


# ---- bad input -------------------------------------------------------------

def test_bad_parameters_are_rejected(rng):
    good = random_array(rng, 10, np.float32)
    ro = random_array(rng, 10, np.float32)
    ro.flags.writeable = False
    base = random_array(rng, 20, np.float32)
    cases = [
        (good, TypeError, "single ndarray"),
        ([], ValueError, "empty parameter list"),
        ({"params": [good]}, TypeError, "pass a list of dicts"),
        ({good.tobytes()}, TypeError, "ordered collection"),
        ([good.tolist()], TypeError, "NumPy arrays"),
        ([good.astype(np.int32)], TypeError, "dtype int32"),
        ([good.astype(np.float16)], TypeError, "dtype float16"),
        ([random_array(rng, 20, np.float32)[::2]], ValueError, "not C-contiguous"),
        ([random_array(rng, 20, np.float32).reshape(4, 5).T], ValueError,
         "not C-contiguous"),
        ([ro], ValueError, "read-only"),
        ([good, good], ValueError, "same array"),
        ([base[:12], base[10:]], ValueError, "share memory"),
        ([{"params": [good]}, {"params": [good]}], ValueError, "same array"),
        ([{"lr": 0.1}], ValueError, "no 'params'"),
    ]
    for params, error, match in cases:
        with pytest.raises(error, match=match):
            optcore.Adam(params)
    # byte-swapped data is not float32 as the kernels read it
    with pytest.raises(TypeError):
        optcore.SGD([good.astype(">f4")])
    # non-overlapping views of one buffer are fine
    optcore.SGD([base[:10], base[10:]], lr=0.1)


def test_bad_hyperparameters_are_rejected(rng):
    p = random_array(rng, 4, np.float64)
    cases = [
        (optcore.Adam, dict(lr=-1.0), ValueError, "Invalid learning rate"),
        (optcore.Adam, dict(eps=-1e-8), ValueError, "Invalid epsilon value"),
        (optcore.Adam, dict(betas=(1.0, 0.9)), ValueError, "beta parameter at index 0"),
        (optcore.Adam, dict(betas=(0.9, -0.1)), ValueError, "beta parameter at index 1"),
        (optcore.Adam, dict(betas=0.9), TypeError, "pair"),
        (optcore.Adam, dict(lr=float("nan")), ValueError, "Invalid learning rate"),
        (optcore.Adam, dict(lr="0.1"), TypeError, "real number"),
        (optcore.Adam, dict(amsgrad="yes"), TypeError, "bool"),
        (optcore.Adam, dict(capturable=True), ValueError, "capturable"),
        (optcore.Adam, dict(differentiable=True), ValueError, "differentiable"),
        (optcore.AdamW, dict(weight_decay=-0.1), ValueError, "weight_decay"),
        (optcore.SGD, dict(momentum=-0.5), ValueError, "momentum"),
        (optcore.SGD, dict(nesterov=True), ValueError, "Nesterov"),
        (optcore.SGD, dict(nesterov=True, momentum=0.9, dampening=0.1), ValueError,
         "Nesterov"),
        (optcore.RMSprop, dict(alpha=-0.1), ValueError, "alpha"),
        (optcore.Adagrad, dict(lr_decay=-1), ValueError, "lr_decay"),
        (optcore.Adagrad, dict(initial_accumulator_value=-1), ValueError,
         "initial_accumulator_value"),
        (optcore.Adadelta, dict(rho=1.5), ValueError, "rho"),
        (optcore.NAdam, dict(momentum_decay=-1), ValueError, "momentum_decay"),
    ]
    for cls, opts, error, match in cases:
        with pytest.raises(error, match=match):
            cls([p], **opts)
    # per-group values are checked too, at add_param_group ...
    opt = optcore.Adam([p])
    with pytest.raises(ValueError, match="param group 1.*learning rate"):
        opt.add_param_group({"params": [random_array(rng, 3, np.float64)], "lr": -2})
    assert len(opt.param_groups) == 1
    # ... and at step, before anything is written
    opt.param_groups[0]["betas"] = (0.9, 2.0)
    before = p.copy()
    with pytest.raises(ValueError, match="beta parameter at index 1"):
        opt.step([np.ones_like(p)])
    np.testing.assert_array_equal(p, before)
    assert len(opt.state) == 0


def test_bad_grads_change_nothing(rng):
    groups = [{"params": [random_array(rng, 6, np.float32)]},
              {"params": [random_array(rng, 4, np.float32), random_array(rng, 3, np.float32)]}]
    opt = optcore.Adam(copy.deepcopy(groups), lr=0.1)
    opt.step(grads_like(rng, groups))
    snap = snapshot(opt)
    before = [p.copy() for p in all_params(opt)]
    g = grads_like(rng, groups)
    cases = [
        ([g[0][0], g[1][0]], ValueError, "2 entries but the optimizer has 3"),
        ([g[0][0], g[1][0], g[1][1].astype(np.float64)], TypeError, "dtype float64"),
        ([g[0][0], g[1][0], np.ones(4, np.float32)], ValueError, "shape"),
        ([g[0][0], g[1][0], g[1][1].astype(np.int32)], TypeError, "dtype int32"),
        ([g[0], g[1][:1]], ValueError, "group 1 has 1 entries"),
        ({5: g[0]}, ValueError, "not a parameter group"),
        (g[0][0], TypeError, "grads must be a list"),
    ]
    for grads, error, match in cases:
        with pytest.raises(error, match=match):
            opt.step(grads)
        assert_unchanged(opt, snap)
        for p, q in zip(all_params(opt), before):
            np.testing.assert_array_equal(p, q)


def test_optcore_import_does_not_import_torch():
    from support import run_python
    code = "import sys, optcore, optcore.schedules; assert 'torch' not in sys.modules"
    run_python(["-c", code], check=True)


def test_grad_overlapping_a_parameter_changes_nothing(rng):
    groups = [{"params": [random_array(rng, 6, np.float64)]},
              {"params": [random_array(rng, 4, np.float64)]}]
    opt = optcore.Adam(copy.deepcopy(groups), lr=0.1)
    opt.step(grads_like(rng, groups))
    snap = snapshot(opt)
    before = [p.copy() for p in all_params(opt)]
    p1 = opt.param_groups[1]["params"][0]
    for grads in ([np.ones(6), p1],                                   # a parameter
                  [np.ones(6), p1[::-1]],                             # reversed view
                  [opt.param_groups[0]["params"][0], np.ones(4)],
                  [np.ones(6), opt.arena(0, "exp_avg")[:4]]):         # optimizer state
        with pytest.raises(ValueError, match="share memory|overlap"):
            opt.step(grads)
        assert_unchanged(opt, snap)
        for p, q in zip(all_params(opt), before):
            np.testing.assert_array_equal(p, q)
    # gradients may share memory with each other
    g = np.ones(10)
    opt.step([g[:6], g[6:]])


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_copy_and_pickle_keep_the_arena_layout(how, rng):
    import pickle
    groups = [{"params": [random_array(rng, 9, np.float32), random_array(rng, 4, np.float32)]},
              {"params": [random_array(rng, 5, np.float32)], "lr": 0.3}]
    opt = optcore.RMSprop(copy.deepcopy(groups), lr=0.01, momentum=0.5, centered=True)
    for _ in range(3):
        opt.step(grads_like(rng, groups))
    twin = copy.deepcopy(opt) if how == "deepcopy" else pickle.loads(pickle.dumps(opt))
    assert all(p is not q and np.array_equal(p, q)
               for p, q in zip(all_params(opt), all_params(twin)))
    for i, st in twin.state.items():
        g = 0 if i < 2 else 1
        for key, value in st.items():
            if isinstance(value, np.ndarray):
                assert np.shares_memory(value, twin.arena(g, key))
    for _ in range(3):
        grads = grads_like(rng, groups)
        opt.step(grads)
        twin.step(grads)
    for p, q in zip(all_params(opt), all_params(twin)):
        np.testing.assert_array_equal(p, q)


def test_replaced_state_arrays_are_used(rng):
    """State entries are the truth even though a group's call arguments are
    cached: an array a user puts into the state is the one updated."""
    p = random_array(rng, 8, np.float64)
    opt = optcore.Adam([p], lr=0.1)
    g = random_array(rng, 8, np.float64)
    opt.step([g])
    mine = np.full(8, 0.5)
    opt.state[0]["exp_avg"] = mine
    ref, m, v = p.copy(), mine.copy(), opt.state[0]["exp_avg_sq"].copy()
    opt.step([g])
    optcore.adam_step(ref, g, m, v, step=2, lr=0.1)
    np.testing.assert_array_equal(p, ref)
    np.testing.assert_array_equal(mine, m)
    # and a step count set by hand is honoured
    opt.state[0]["step"] = 10
    opt.step([g])
    assert opt.state[0]["step"] == 11


# ---- a step that raises changes nothing, however many kernel calls ---------

def assert_params(opt, before):
    for p, q in zip(all_params(opt), before):
        np.testing.assert_array_equal(p, q)


def assert_same_state(opt, other):
    assert sorted(opt.state) == sorted(other.state)
    for i, st in opt.state.items():
        assert sorted(st) == sorted(other.state[i])
        for key, value in st.items():
            np.testing.assert_array_equal(value, other.state[i][key], err_msg=key)


@pytest.mark.parametrize("cls", ALL, ids=ids(ALL))
def test_a_refused_first_step_creates_no_state(cls, rng):
    """A first step the kernel refuses (a parameter passed as its own
    gradient) registers no state entry: the next step is still a first step."""
    opts = random_options(cls, rng)
    if cls is optcore.SGD:
        opts.update(momentum=0.9)
    params = [random_array(rng, 7, np.float64), random_array(rng, 5, np.float64)]
    opt = cls([p.copy() for p in params], **opts)
    twin = cls([p.copy() for p in params], **opts)
    snap = snapshot(opt)
    mine = all_params(opt)
    with pytest.raises(ValueError, match="overlap|share memory"):
        opt.step([random_array(rng, 7, np.float64), mine[1]])
    assert_unchanged(opt, snap)
    assert_params(opt, params)
    for _ in range(2):
        grads = [random_array(rng, 7, np.float64), random_array(rng, 5, np.float64)]
        opt.step(grads)
        twin.step(grads)
        assert_params(opt, all_params(twin))
        assert_same_state(opt, twin)


def test_sgd_momentum_starts_from_the_gradient_after_a_refused_step(rng):
    p = random_array(rng, 6, np.float64)
    before = p.copy()
    opt = optcore.SGD([p], lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="overlap"):
        opt.step([p])
    assert len(opt.state) == 0
    g = random_array(rng, 6, np.float64)
    opt.step([g])
    np.testing.assert_array_equal(opt.state[0]["momentum_buffer"], g)     # torch's first step
    np.testing.assert_array_equal(p, before - 0.1 * g)


def test_a_refused_first_step_next_to_stepped_parameters_changes_nothing(rng):
    """One group, two kernel calls (a parameter with state, a fresh one):
    the fresh one's refusal comes before the other call writes."""
    p0, p1 = random_array(rng, 6, np.float64), random_array(rng, 4, np.float64)
    opt = optcore.Adam([p0, p1], lr=0.1)
    opt.step([random_array(rng, 6, np.float64), None])
    snap, before = snapshot(opt), [p0.copy(), p1.copy()]
    with pytest.raises(ValueError, match="overlap|share memory"):
        opt.step([random_array(rng, 6, np.float64), p1])
    assert_unchanged(opt, snap)
    assert_params(opt, before)
    assert sorted(opt.state) == [0]


def misaligned(n, dtype=np.float64):
    """A writable C-contiguous array of n elements one byte off alignment."""
    itemsize = np.dtype(dtype).itemsize
    a = np.frombuffer(bytearray(itemsize * n + 1), dtype, n, 1)
    assert a.flags.writeable and a.flags.c_contiguous and not a.flags.aligned
    return a


def spoilers():
    """(what, spoil(opt) -> grads, error, match) for a two-group Adam whose
    group 1 (parameters 1 and 2) holds the defect: each would make group 1's
    kernel call fail, or alias a buffer group 0's call writes."""
    here = r"parameter 2 \(group 1, index 1\), state 'exp_avg'"
    as_buffer = r"the 'exp_avg' state of parameter 2 \(group 1, index 1\)"     # kernels' wording

    def state(key, make):
        def spoil(opt):
            opt.state[2][key] = make(opt.state[2][key])
        return spoil

    def delete(key):
        def spoil(opt):
            del opt.state[2][key]
        return spoil

    def readonly(a):
        a = a.copy()
        a.flags.writeable = False
        return a

    yield "state of the wrong dtype", state("exp_avg", lambda a: a.astype(np.float32)), \
        TypeError, as_buffer + " has dtype float32"
    yield "state of the wrong size", state("exp_avg", lambda a: np.zeros(a.size + 1)), \
        ValueError, as_buffer + " has 5 elements"
    yield "read-only state", state("exp_avg", readonly), ValueError, as_buffer + " is read-only"

    def freeze_view(opt):
        opt.state[2]["exp_avg"].flags.writeable = False
    yield "state view made read-only", freeze_view, ValueError, \
        r"'exp_avg' state of parameter 2 \(group 1, index 1\) is read-only"
    yield "strided state", state("exp_avg", lambda a: np.zeros(2 * a.size)[::2]), \
        ValueError, as_buffer + " is not C-contiguous"
    yield "misaligned state", state("exp_avg", lambda a: misaligned(a.size)), \
        ValueError, as_buffer + " is not aligned"
    yield "state not an array", state("exp_avg", lambda a: a.tolist()), TypeError, here
    yield "deleted state", delete("exp_avg"), ValueError, here + ": missing"
    yield "deleted step", delete("step"), ValueError, r"state 'step': missing"
    yield "fractional step", state("step", lambda s: 2.5), TypeError, r"'step': must be an int"
    yield "negative step", state("step", lambda s: -4), ValueError, r"'step': must be a non"
    yield "step not a number", state("step", lambda s: "2"), TypeError, r"'step'"

    def readonly_param(opt):
        opt.param_groups[1]["params"][0].flags.writeable = False
    yield "read-only parameter", readonly_param, ValueError, r"parameter 1 .*read-only"

    def state_is_a_parameter(opt):
        opt.state[1]["exp_avg"] = opt.param_groups[0]["params"][0]
    yield "state aliasing another group's parameter", state_is_a_parameter, ValueError, \
        "share memory"

    def state_of_two_parameters(opt):
        opt.state[1]["exp_avg_sq"] = opt.state[0]["exp_avg_sq"]
    yield "one state array for two parameters", state_of_two_parameters, ValueError, \
        "share memory"

    def grad_is_other_groups_state(opt):
        mine = np.zeros(6)
        opt.state[0]["exp_avg"] = mine
        return [np.ones(6), mine, np.ones(4)]
    yield "grad aliasing another group's replaced state", grad_is_other_groups_state, \
        ValueError, "share memory"


SPOILERS = list(spoilers())


@pytest.mark.parametrize("what, spoil, error, match", SPOILERS, ids=[s[0] for s in SPOILERS])
def test_a_refused_step_over_several_groups_changes_nothing(what, spoil, error, match, rng):
    """SPEC §8 across kernel calls: group 0's call must not run when group
    1's would be refused (or would alias what group 0's call writes)."""
    groups = [{"params": [random_array(rng, 6, np.float64)]},
              {"params": [random_array(rng, 6, np.float64), random_array(rng, 4, np.float64)],
               "lr": 0.01}]
    opt = optcore.Adam(copy.deepcopy(groups), lr=0.1)
    for _ in range(2):
        opt.step(grads_like(rng, groups))
    grads = spoil(opt) or [random_array(rng, 6, np.float64), random_array(rng, 6, np.float64),
                           random_array(rng, 4, np.float64)]
    snap, before = snapshot(opt), [p.copy() for p in all_params(opt)]
    with pytest.raises(error, match=match):
        opt.step(grads)
    assert_unchanged(opt, snap)
    assert_params(opt, before)


def test_a_refused_step_over_several_dtypes_changes_nothing(rng):
    """One group, a float32 and a float64 parameter: two kernel calls."""
    spoilers = [(lambda st: st.pop("momentum_buffer"), ValueError),
                (lambda st: st.update(square_avg=np.zeros(3, np.float32)), TypeError),
                (lambda st: st.update(step=1.0), TypeError)]
    for spoil, error in spoilers:
        p32, p64 = random_array(rng, 5, np.float32), random_array(rng, 3, np.float64)
        opt = optcore.RMSprop([p32, p64], lr=0.01, momentum=0.5)
        opt.step([random_array(rng, 5, np.float32), random_array(rng, 3, np.float64)])
        spoil(opt.state[1])
        snap, before = snapshot(opt), [p32.copy(), p64.copy()]
        with pytest.raises(error, match=r"(parameter 1 \(group 0, index 1\), state|state of "
                                        r"parameter 1 \(group 0, index 1\))"):
            opt.step([random_array(rng, 5, np.float32), random_array(rng, 3, np.float64)])
        assert_unchanged(opt, snap)
        assert_params(opt, before)


def test_a_refused_nadam_step_changes_nothing(rng):
    groups = [{"params": [random_array(rng, 4, np.float32)]},
              {"params": [random_array(rng, 3, np.float32)]}]
    opt = optcore.NAdam(copy.deepcopy(groups))
    opt.step(grads_like(rng, groups))
    opt.state[1]["mu_product"] = "0.9"
    snap, before = snapshot(opt), [p.copy() for p in all_params(opt)]
    with pytest.raises(TypeError, match=r"parameter 1 \(group 1, index 0\), state 'mu_product'"):
        opt.step(grads_like(rng, groups))
    assert_unchanged(opt, snap)
    assert_params(opt, before)


def test_misaligned_grads_are_read_through_an_aligned_copy(rng):
    """Gradients are only read: a misaligned one (in any group) is copied,
    and the step equals the step with an aligned gradient."""
    groups = [{"params": [random_array(rng, 6, np.float64)]},
              {"params": [random_array(rng, 4, np.float64)], "lr": 0.01}]
    opt = optcore.Adam(copy.deepcopy(groups), lr=0.1)
    twin = optcore.Adam(copy.deepcopy(groups), lr=0.1)
    for _ in range(3):
        g0, g1 = random_array(rng, 6, np.float64), random_array(rng, 4, np.float64)
        odd = misaligned(4)
        odd[:] = g1
        opt.step([g0, odd])
        twin.step([g0, g1])
        assert_params(opt, all_params(twin))
        assert_same_state(opt, twin)
    # one group too: the functional kernel would refuse the misaligned array
    p = random_array(rng, 4, np.float64)
    single, ref = optcore.SGD([p.copy()], lr=0.1), optcore.SGD([p.copy()], lr=0.1)
    single.step([odd])
    ref.step([np.array(odd)])
    assert_params(single, all_params(ref))


def test_a_misaligned_grad_overlapping_a_parameter_is_refused(rng):
    """The aligned copy must not hide that the gradient shares memory with a
    parameter (which the kernel writes while the gradient would be read)."""
    raw = np.zeros(6 * 8 + 8, np.uint8)
    p = raw[:48].view(np.float64)
    p[:] = random_array(rng, 6, np.float64)
    before = p.copy()
    opt = optcore.Adam([p], lr=0.1)
    with pytest.raises(ValueError, match="share memory"):
        opt.step([raw[1:49].view(np.float64)])
    np.testing.assert_array_equal(p, before)
    assert len(opt.state) == 0


@pytest.mark.parametrize("cls, kind", [(optcore.Adam, "exp_avg"), (optcore.Adam, "exp_avg_sq"),
                                       (optcore.SGD, "momentum_buffer")])
def test_an_equal_valued_replacement_of_size_1_state_is_used(cls, kind):
    """The cached one-call step compares state arrays by identity: a copy
    put into the state (equal in value, one element) is the array updated,
    not the arena view it replaced."""
    opts = dict(lr=0.1, momentum=0.9) if cls is optcore.SGD else dict(lr=0.1)
    p, q = np.ones(1), np.ones(1)
    opt, twin = cls([p], **opts), cls([q], **opts)
    for _ in range(2):
        opt.step([np.ones(1)])
        twin.step([np.ones(1)])
    st = opt.state[0]
    st[kind] = st[kind].copy()
    arena = opt.arena(0, kind).copy()
    opt.step([np.ones(1)])
    twin.step([np.ones(1)])
    np.testing.assert_array_equal(p, q)
    np.testing.assert_array_equal(st[kind], twin.state[0][kind])
    assert not np.array_equal(st[kind], arena[:1])               # it was updated ...
    np.testing.assert_array_equal(opt.arena(0, kind), arena)      # ... not the old view


def test_a_strided_grad_spanning_a_parameter_without_sharing_is_fine(rng):
    """Across groups, memory is compared element-exactly: a strided gradient
    whose address range spans another group's parameter but shares no
    element with it is an ordinary input."""
    raw = random_array(rng, 5, np.float64)
    p0 = raw[2:3]                                   # between the gradient's elements
    opt = optcore.Adam([{"params": [p0]}, {"params": [random_array(rng, 2, np.float64)]}])
    twin = optcore.Adam([{"params": [p0.copy()]}, {"params": [all_params(opt)[1].copy()]}])
    g0 = random_array(rng, 1, np.float64)
    strided = raw.copy()[0::4]
    opt.step([g0, raw[0::4]])
    twin.step([g0, strided])
    assert_params(opt, all_params(twin))


def test_numpy_integer_step_counts_are_kept(rng):
    p = random_array(rng, 3, np.float32)
    opt = optcore.NAdam([p])
    opt.step([random_array(rng, 3, np.float32)])
    opt.state[0]["step"] = np.int64(10)
    opt.step([random_array(rng, 3, np.float32)])
    assert opt.state[0]["step"] == 11
