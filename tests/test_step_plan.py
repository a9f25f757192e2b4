"""The cached step plans (optcore.kernels._plan) are invalidated whenever what
they were built from changes: every step of an optimizer that may use its plan
equals, bit for bit, the step of a twin that never does (the general path,
which checks and rebuilds everything), including the errors raised."""

import numpy as np
import pytest

import optcore

torch = pytest.importorskip("torch")
import optcore.torch as ot  # noqa: E402

STEPS = 6
CHANGE_AT = 3        # the change happens before this step (the plan is in use)


def _outcome(fn):
    try:
        fn()
    except Exception as exc:             # the same error type from both twins
        return type(exc)
    return None


# ---- NumPy classes -----------------------------------------------------------

def _numpy_params():
    rng = np.random.default_rng(0)
    return [rng.standard_normal(s) for s in [(4, 3), (3,), (5,)]]


def _numpy_grads(params, k):
    rng = np.random.default_rng(100 + k)
    return [rng.standard_normal(p.shape) for p in params]


def _np_replace_param(opt, params, grads):
    opt.param_groups[0]["params"][1] = params[1].copy()


def _np_grad_none(opt, params, grads):
    grads[0] = None


def _np_grad_dtype(opt, params, grads):
    grads[1] = grads[1].astype(np.float32)


def _np_grad_shape(opt, params, grads):
    grads[0] = grads[0].reshape(-1)


def _np_grad_strided(opt, params, grads):
    grads[2] = np.repeat(grads[2], 2)[::2]


def _np_lr(opt, params, grads):
    opt.param_groups[0]["lr"] = 0.05


def _np_betas_list(opt, params, grads):
    opt.param_groups[0]["betas"] = [0.8, 0.9]


def _np_bad_lr(opt, params, grads):
    opt.param_groups[0]["lr"] = -1.0


def _np_add_group(opt, params, grads):
    extra = np.ones(3)
    opt.add_param_group({"params": [extra], "lr": 0.1})
    grads.append(np.full(3, 0.5))


def _np_load_state_dict(opt, params, grads):
    other = optcore.Adam([p.copy() for p in params], lr=0.02)
    other.step(_numpy_grads(params, 99))
    opt.load_state_dict(other.state_dict())


def _np_state_replaced(opt, params, grads):
    opt.state[0]["exp_avg"] = np.zeros_like(params[0])


def _np_state_zeroed(opt, params, grads):
    opt.zero_state()


def _np_step_diverged(opt, params, grads):
    opt.state[1]["step"] = 1


def _np_step_bad(opt, params, grads):
    opt.state[2]["step"] = 2.5


def _np_grad_fortran(opt, params, grads):
    grads[0] = np.asfortranarray(grads[0])          # same shape, not C-contiguous


def _np_grad_views_param(opt, params, grads):
    grads[2] = opt.param_groups[0]["params"][2][:]  # overlaps a written buffer


def _np_grad_is_state(opt, params, grads):
    grads[1] = opt.state[1]["exp_avg"]


def _np_param_read_only(opt, params, grads):
    opt.param_groups[0]["params"][0].flags.writeable = False


def _np_state_read_only(opt, params, grads):
    opt.state[2]["exp_avg_sq"].flags.writeable = False


def _np_state_reshaped(opt, params, grads):
    opt.state[0]["exp_avg"].shape = (12,)           # in place: same data and size


NUMPY_CHANGES = [_np_replace_param, _np_grad_none, _np_grad_dtype, _np_grad_shape,
                 _np_grad_strided, _np_lr, _np_betas_list, _np_bad_lr, _np_add_group,
                 _np_load_state_dict, _np_state_replaced, _np_state_zeroed,
                 _np_step_diverged, _np_step_bad, _np_grad_fortran, _np_grad_views_param,
                 _np_grad_is_state, _np_param_read_only, _np_state_read_only,
                 _np_state_reshaped]


def _numpy_twins_agree(make, change):
    """Step a planned optimizer and its twin that never uses a plan (the
    general path) alike, ``change`` applied to both before step CHANGE_AT,
    which first takes one step through the plan itself (and the twin's
    general path): every outcome, parameter and state_dict agrees. Returns
    whether that step ran through the plan."""
    twins = []
    for planned in (True, False):
        params = _numpy_params()
        twins.append((planned, params, make(params)))
    used = False
    for k in range(STEPS):
        results = []
        for planned, params, opt in twins:
            grads = _numpy_grads(params, k)
            if planned and k == CHANGE_AT:
                plan = opt.__dict__.get("_step_plan")
                used = plan is not None and plan.run(opt, _numpy_grads(params, 50)) is True
                if not used:
                    opt.step(_numpy_grads(params, 50))
                general = twins[1][2]
                general.__dict__.pop("_step_plan", None)
                general.step(_numpy_grads(twins[1][1], 50))
            if k == CHANGE_AT:
                change(opt, params, grads)
            if not planned:
                opt.__dict__.pop("_step_plan", None)
            results.append(_outcome(lambda: opt.step(grads)))
        assert results[0] == results[1]
        a, b = twins[0][2], twins[1][2]
        for pa, pb in zip([p for g in a.param_groups for p in g["params"]],
                          [p for g in b.param_groups for p in g["params"]]):
            np.testing.assert_array_equal(pa, pb)
        assert repr(a.state_dict()) == repr(b.state_dict())
    return used


@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("change", NUMPY_CHANGES, ids=lambda f: f.__name__[4:])
def test_numpy_plan_matches_general_path(change, amsgrad):
    assert _numpy_twins_agree(lambda ps: optcore.Adam(ps, lr=0.01, amsgrad=amsgrad), change)


def test_numpy_plan_is_used():
    params = _numpy_params()
    opt = optcore.Adam(params, lr=0.01)
    for k in range(3):
        opt.step(_numpy_grads(params, k))
    plan = opt.__dict__.get("_step_plan")
    assert plan is not None and plan.compiled     # the kernel call bound once
    assert plan.run(opt, _numpy_grads(params, 3)) is True


# Every NumPy class whose kernel has a bound call (_bound.pxd), with options
# that change the call (so every generated launch is run).
BOUND_CLASSES = [
    (optcore.Adam, dict(lr=0.01, weight_decay=0.1)),
    (optcore.Adam, dict(lr=0.01, amsgrad=True, maximize=True)),
    (optcore.AdamW, dict(lr=0.01)),
    (optcore.RMSprop, dict(lr=0.01, momentum=0.9, centered=True)),
    (optcore.Adagrad, dict(lr=0.1, lr_decay=0.01)),
    (optcore.Adadelta, dict(weight_decay=0.1)),
    (optcore.Adamax, dict(lr=0.01)),
    (optcore.NAdam, dict(lr=0.01)),
    (optcore.RAdam, dict(lr=0.01)),
    (optcore.Rprop, dict(lr=0.01)),
    (optcore.ASGD, dict(lr=0.01, t0=2.0)),
    (optcore.Lion, dict(lr=0.01, weight_decay=0.1)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cls, options", BOUND_CLASSES,
                         ids=[f"{c.__name__}-{i}" for i, (c, _) in enumerate(BOUND_CLASSES)])
def test_bound_plans_match_the_general_path(cls, options, dtype):
    # Sizes around the SIMD width and the parallel threshold, in one group.
    rng = np.random.default_rng(7)
    shapes = [(3,), (16,), (17, 3), (33000,)]
    params = [rng.standard_normal(s).astype(dtype) for s in shapes]
    twins = [(None, cls([p.copy() for p in params], **options)) for _ in range(2)]
    compiled = []
    for k in range(5):
        grads = [np.random.default_rng(50 + k).standard_normal(s).astype(dtype) for s in shapes]
        (_, planned), (_, general) = twins
        plan = planned.__dict__.get("_step_plan")
        compiled.append(plan is not None and plan.compiled)
        planned.step([g.copy() for g in grads])
        general.__dict__.pop("_step_plan", None)
        general.step([g.copy() for g in grads])
        for pa, pb in zip(planned.param_groups[0]["params"], general.param_groups[0]["params"]):
            np.testing.assert_array_equal(pa, pb)
        assert repr(planned.state_dict()) == repr(general.state_dict())
    # From the step after the plan is built; NAdam's and ASGD's scalar state
    # (mu_product; eta, mu, ax) is passed to each call, so their plans call the
    # kernel with it instead.
    assert compiled[2:] == [cls not in (optcore.NAdam, optcore.ASGD)] * 3


def _np_load_sgd_state_dict(opt, params, grads):
    other = optcore.SGD([p.copy() for p in params], lr=0.02, momentum=0.8)
    other.step(_numpy_grads(params, 99))
    opt.load_state_dict(other.state_dict())


SGD_OPTIONS = [dict(lr=0.01), dict(lr=0.01, momentum=0.9),
               dict(lr=0.01, momentum=0.9, nesterov=True, weight_decay=0.1),
               dict(lr=0.01, momentum=0.5, dampening=0.3, maximize=True)]
SGD_CHANGES = [_np_replace_param, _np_grad_none, _np_grad_dtype, _np_grad_shape,
               _np_grad_strided, _np_lr, _np_bad_lr, _np_add_group, _np_load_sgd_state_dict,
               _np_state_zeroed, _np_grad_fortran, _np_grad_views_param, _np_param_read_only]


@pytest.mark.parametrize("options", SGD_OPTIONS, ids=range(len(SGD_OPTIONS)))
@pytest.mark.parametrize("change", SGD_CHANGES, ids=lambda f: f.__name__[4:])
def test_numpy_sgd_plan_matches_general_path(change, options):
    # SGD keeps no step count (and without momentum no state at all): its
    # plan calls the kernel as the general path does, bit for bit, and gives
    # way to it on every change.
    assert _numpy_twins_agree(lambda ps: optcore.SGD(ps, **options), change)


# A schedule of learning rates: new floats each step, the kernel's default
# (left out of the cached keywords), a zero of each sign, refused values
# (NaN, negative: both twins raise and change nothing), then recovery.
LR_SCHEDULE = [0.01, 0.005, 0.001, 0.0025, 0.0, -0.0, 0.004, float("nan"), 0.003, -1.0,
               0.002, 0.002, 1e-4]


@pytest.mark.parametrize("cls, options", BOUND_CLASSES + [(optcore.SGD, dict(momentum=0.9))],
                         ids=[f"{c.__name__}-{i}" for i, (c, _) in enumerate(BOUND_CLASSES)]
                         + ["SGD-momentum"])
def test_numpy_plan_takes_a_new_lr_as_it_stands(cls, options):
    # A scheduler sets a new float lr each step: the plan takes it without
    # being rebuilt (its bound call's lr set and checked), bit for bit the
    # general path's step, refusals included.
    rng = np.random.default_rng(3)
    shapes = [(3,), (16,), (33000,)]
    params = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    options = {**options, "lr": 0.01}
    planned, general = (cls([p.copy() for p in params], **options) for _ in range(2))
    plans = []
    for k, lr in enumerate(LR_SCHEDULE):
        grads = [np.random.default_rng(60 + k).standard_normal(s).astype(np.float32)
                 for s in shapes]
        outcomes = []
        for opt in (planned, general):
            opt.param_groups[0]["lr"] = lr
            if opt is general:
                opt.__dict__.pop("_step_plan", None)
            before = [p.copy() for p in opt.param_groups[0]["params"]]
            outcome = _outcome(lambda: opt.step([g.copy() for g in grads]))
            if outcome is not None:
                for a, b in zip(before, opt.param_groups[0]["params"]):
                    np.testing.assert_array_equal(a, b)
            outcomes.append(outcome)
        assert outcomes[0] == outcomes[1]
        assert (outcomes[0] is None) == (lr == lr and lr >= 0)
        plans.append(planned.__dict__.get("_step_plan"))
        for pa, pb in zip(planned.param_groups[0]["params"], general.param_groups[0]["params"]):
            np.testing.assert_array_equal(pa, pb)
        assert repr(planned.state_dict()) == repr(general.state_dict())
    # (NAdam's and ASGD's plans pass their scalar state to each call; Rprop's
    # kernel takes no lr, only its first step's state does: their plans are
    # built again after an lr change.)
    if cls not in (optcore.NAdam, optcore.ASGD, optcore.Rprop):
        # From the step after the plan took the group's lr explicitly (the
        # default is left out of its keywords) until the first refusal, one
        # plan: nothing was rebuilt.
        assert plans[2] is not None and all(p is plans[2] for p in plans[2:7])
        assert plans[2].compiled == (cls is not optcore.SGD)


# ---- optcore.torch -----------------------------------------------------------

def _torch_params(dtype=torch.float64):
    gen = torch.Generator().manual_seed(0)
    return [torch.nn.Parameter(torch.randn(s, generator=gen, dtype=dtype))
            for s in [(4, 3), (3,), (5,)]]


def _set_grads(params, k):
    gen = torch.Generator().manual_seed(100 + k)
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype)


def _t_replace_param(opt, params, sched):
    opt.param_groups[0]["params"][1] = torch.nn.Parameter(params[1].detach().clone())
    opt.param_groups[0]["params"][1].grad = params[1].grad.clone()


def _t_grad_none(opt, params, sched):
    params[0].grad = None


def _t_grad_dtype(opt, params, sched):
    params[1].grad.data = params[1].grad.data.float()


def _t_grad_shape(opt, params, sched):
    params[0].grad.data = params[0].grad.data[:2]


def _t_grad_strided(opt, params, sched):
    params[2].grad = torch.stack([params[2].grad, params[2].grad], 1)[:, 0]


def _t_lr(opt, params, sched):
    opt.param_groups[0]["lr"] = 0.05


def _t_scheduler(opt, params, sched):
    pass                          # the scheduler steps after every step


def _t_tensor_lr(opt, params, sched):
    opt.param_groups[0]["lr"] = torch.tensor(0.02)


def _t_add_group(opt, params, sched):
    extra = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    extra.grad = torch.full((3,), 0.5, dtype=torch.float64)
    opt.add_param_group({"params": [extra], "lr": 0.1})


def _t_load_state_dict(opt, params, sched):
    copies = [torch.nn.Parameter(p.detach().clone()) for p in params]
    other = torch.optim.Adam(copies, lr=0.02)
    _set_grads(copies, 99)
    other.step()
    opt.load_state_dict(other.state_dict())


def _t_param_storage(opt, params, sched):
    params[0].data = params[0].data.clone()


def _t_param_view(opt, params, sched):
    params[2].data = params[2].data[:4]


def _t_state_storage(opt, params, sched):
    opt.state[params[1]]["exp_avg"].data = opt.state[params[1]]["exp_avg"].data.clone()


def _t_state_replaced(opt, params, sched):
    opt.state[params[1]]["exp_avg_sq"] = torch.ones_like(params[1])


def _t_state_cleared(opt, params, sched):
    opt.state.clear()


def _t_state_entry_dropped(opt, params, sched):
    del opt.state[params[2]]


def _t_state_zeroed_in_place(opt, params, sched):
    for st in opt.state.values():
        st["exp_avg"].zero_()


def _t_step_diverged(opt, params, sched):
    opt.state[params[1]]["step"].fill_(1.0)


def _t_state_entry_added(opt, params, sched):
    # (SGD without momentum keeps no state: an entry that appears is a change)
    opt.state[params[0]]["extra"] = torch.zeros(1)


def _t_grad_is_param(opt, params, sched):
    params[0].grad = params[0].detach()           # the gradient overlaps the parameter


def _t_grad_is_state(opt, params, sched):
    params[1].grad = opt.state[params[1]]["exp_avg"]


TORCH_CHANGES = [_t_replace_param, _t_grad_none, _t_grad_dtype, _t_grad_shape,
                 _t_grad_strided, _t_lr, _t_scheduler, _t_tensor_lr, _t_add_group,
                 _t_load_state_dict, _t_state_entry_added, _t_param_storage,
                 _t_param_view, _t_state_storage, _t_state_replaced, _t_state_cleared,
                 _t_state_entry_dropped, _t_state_zeroed_in_place, _t_step_diverged,
                 _t_grad_is_param, _t_grad_is_state]


@pytest.mark.parametrize("make", [lambda ps: ot.Adam(ps, lr=0.01),
                                  lambda ps: ot.NAdam(ps, lr=0.01),
                                  lambda ps: ot.SGD(ps, lr=0.01, momentum=0.9),
                                  lambda ps: ot.SGD(ps, lr=0.01, weight_decay=0.1)],
                         ids=["Adam", "NAdam", "SGD-momentum", "SGD"])
@pytest.mark.parametrize("change", TORCH_CHANGES, ids=lambda f: f.__name__[3:])
def test_torch_plan_matches_general_path(change, make):
    twins = []
    for planned in (True, False):
        params = _torch_params()
        opt = make(params)
        sched = (torch.optim.lr_scheduler.ExponentialLR(opt, 0.9)
                 if change is _t_scheduler else None)
        twins.append((planned, params, opt, sched))
    used = False
    for k in range(STEPS):
        results = []
        for planned, params, opt, sched in twins:
            _set_grads(params, k)
            if planned and k == CHANGE_AT:
                used = opt.__dict__.get("_optcore_plan") is not None
            if k == CHANGE_AT:
                results.append(_outcome(lambda: change(opt, params, sched)))
            if not planned:
                opt.__dict__.pop("_optcore_plan", None)
            results.append(_outcome(opt.step))
            if sched is not None:
                sched.step()
        half = len(results) // 2
        assert results[:half] == results[half:]
        a, b = twins[0][2], twins[1][2]
        assert ([{k: v for k, v in g.items() if k != "params"} for g in a.param_groups]
                == [{k: v for k, v in g.items() if k != "params"} for g in b.param_groups])
        for pa, pb in zip([p for g in a.param_groups for p in g["params"]],
                          [p for g in b.param_groups for p in g["params"]]):
            torch.testing.assert_close(pa, pb, rtol=0, atol=0)
            sa, sb = a.state.get(pa, {}), b.state.get(pb, {})
            assert sorted(sa) == sorted(sb)
            for key in sa:
                torch.testing.assert_close(sa[key], sb[key], rtol=0, atol=0)
    assert used


def test_torch_plan_is_used_and_hooks_run():
    params = _torch_params()
    opt = ot.Adam(params, lr=0.01)
    seen = []
    opt.register_step_pre_hook(lambda o, args, kwargs: seen.append("pre"))
    opt.register_step_post_hook(lambda o, args, kwargs: seen.append("post"))
    for k in range(3):
        _set_grads(params, k)
        opt.step()
    plan = opt.__dict__.get("_optcore_plan")
    assert plan is not None
    assert plan.columns[2] is not None            # the kernel call bound once
    assert seen == ["pre", "post"] * 3


@pytest.mark.parametrize("make", [lambda ps: ot.Adam(ps, lr=0.01),
                                  lambda ps: ot.AdamW(ps, lr=0.01),
                                  lambda ps: ot.SGD(ps, lr=0.01, momentum=0.9)],
                         ids=["Adam", "AdamW", "SGD-momentum"])
def test_torch_plan_takes_a_scheduler_lr_as_it_stands(make):
    # A scheduler's new lr each step keeps the plan and its bound call, bit
    # for bit the general path's steps.
    twins = []
    for _ in range(2):
        params = _torch_params()
        opt = make(params)
        twins.append((params, opt, torch.optim.lr_scheduler.ExponentialLR(opt, 0.9)))
    cached = []
    for k in range(8):
        for i, (params, opt, sched) in enumerate(twins):
            _set_grads(params, k)
            if i == 1:
                opt.__dict__.pop("_optcore_plan", None)
            opt.step()
            sched.step()
        plan = twins[0][1].__dict__.get("_optcore_plan")
        cached.append(None if plan is None else (plan, plan.columns[2] if plan.columns else None))
        a, b = twins[0][1], twins[1][1]
        assert a.param_groups[0]["lr"] == b.param_groups[0]["lr"]
        for pa, pb in zip(a.param_groups[0]["params"], b.param_groups[0]["params"]):
            torch.testing.assert_close(pa, pb, rtol=0, atol=0)
            for key in a.state[pa]:
                torch.testing.assert_close(a.state[pa][key], b.state[pb][key], rtol=0, atol=0)
    plan, bound = cached[2]
    assert all(c[0] is plan and c[1] is bound for c in cached[2:])
    assert (bound is not None) == (type(twins[0][1]) is not ot.SGD)


def test_torch_step_recorded_only_under_profiler():
    params = _torch_params()
    opt = ot.Adam(params, lr=0.01)
    _set_grads(params, 0)
    opt.step()
    with torch.profiler.profile() as prof:
        opt.step()
    names = [e.name for e in prof.events()]
    assert "Optimizer.step#Adam.step" in names
