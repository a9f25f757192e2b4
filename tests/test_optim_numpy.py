"""The stateful NumPy optimizers (optcore.SGD, Adam, ...): trajectories against
the functional kernels (bitwise) and torch.optim, parameter groups, the state
arenas and state_dict round trips."""

import contextlib
import copy

import numpy as np
import pytest

import optcore
from support import DTYPES, TORCH_RTOL, random_array
from optim_numpy_support import (ALL, IN_TORCH, Replay, all_params, assert_unchanged,
    grads_like, ids, make_groups, random_options, snapshot, state_args)


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
                    # Scalar state (NAdam's mu_product): torch keeps it in its
                    # default dtype (float32 here for float32 parameters), where
                    # a long product underflows to zero; optcore keeps double.
                    tiny = 0.0 if dtype == np.float64 else float(np.finfo(np.float32).tiny)
                    assert value == pytest.approx(float(tstate[key]), abs=tiny,
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
    scalars = {optcore.SGD: set(), optcore.NAdam: {"step", "mu_product"},
               optcore.ASGD: {"step", "eta", "mu"}}.get(cls, {"step"})
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
