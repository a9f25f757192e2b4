"""optcore.schedules against torch.optim.lr_scheduler over 1000 steps, as
plain functions and attached to optcore and torch optimizers."""

import math
import warnings

import numpy as np
import pytest

import optcore
from optcore import schedules as S

STEPS = 1000
BASE_LRS = (0.1, 0.03)            # two parameter groups with their own rates

# torch's StepLR, ExponentialLR, MultiStepLR, LinearLR and CosineAnnealingLR
# compute each rate from the previous one when step() is called; optcore uses
# the closed forms (torch's _get_closed_form_lr). Each recursive step rounds a
# handful of operations (<= ~4 ulp of the rate) and a cosine restart adds one
# ulp of base_lr absolutely, so after 1000 steps the two differ by less than
# 1000 * 8 * 2**-53 * base_lr ~= 1e-12 * base_lr (measured worst case: 2.3e-13,
# cosine restarting every 100 steps). Absolute, not relative: near a cosine
# minimum the closed form is exactly eta_min while the recursion is not.
RECURSIVE_ATOL = 1e-12


def torch_schedulers(torch):
    L = torch.optim.lr_scheduler
    return {
        "constant": (S.constant(None), lambda o: L.ConstantLR(o, 1.0, 0)),
        "constant_factor": (S.constant(None, 0.3, 100), lambda o: L.ConstantLR(o, 0.3, 100)),
        "step": (S.step_decay(None, 30, 0.5), lambda o: L.StepLR(o, 30, 0.5)),
        "step_0.9": (S.step_decay(None, 7, 0.9), lambda o: L.StepLR(o, 7, 0.9)),
        "multi_step": (S.multi_step(None, [700, 100, 300, 300], 0.3),
                       lambda o: L.MultiStepLR(o, [700, 100, 300, 300], 0.3)),
        "exponential": (S.exponential(None, 0.995), lambda o: L.ExponentialLR(o, 0.995)),
        "cosine": (S.cosine_annealing(None, 1000), lambda o: L.CosineAnnealingLR(o, 1000)),
        "cosine_eta_min": (S.cosine_annealing(None, 1000, 1e-4),
                           lambda o: L.CosineAnnealingLR(o, 1000, 1e-4)),
        "cosine_periodic": (S.cosine_annealing(None, 100),
                            lambda o: L.CosineAnnealingLR(o, 100)),
        "cosine_333": (S.cosine_annealing(None, 333, 1e-3),
                       lambda o: L.CosineAnnealingLR(o, 333, 1e-3)),
        "warmup_cosine": (
            S.warmup_cosine(None, 50, 1000, start_factor=0.01, eta_min=1e-5),
            lambda o: L.SequentialLR(o, [L.LinearLR(o, 0.01, 1.0, 50),
                                         L.CosineAnnealingLR(o, 950, 1e-5)], [50])),
        "warmup_cosine_default": (
            S.warmup_cosine(None, 100, 600),
            lambda o: L.SequentialLR(o, [L.LinearLR(o, total_iters=100),
                                         L.CosineAnnealingLR(o, 500)], [100])),
        "one_cycle": (S.one_cycle(None, STEPS),
                      lambda o: L.OneCycleLR(o, list(BASE_LRS), STEPS)),
        "one_cycle_linear_3phase": (
            S.one_cycle(None, STEPS, pct_start=0.25, anneal_strategy="linear",
                        three_phase=True, div_factor=10.0, final_div_factor=100.0),
            lambda o: L.OneCycleLR(o, list(BASE_LRS), STEPS, pct_start=0.25,
                                   anneal_strategy="linear", three_phase=True,
                                   div_factor=10.0, final_div_factor=100.0)),
        "one_cycle_no_momentum": (
            S.one_cycle(None, STEPS, cycle_momentum=False),
            lambda o: L.OneCycleLR(o, list(BASE_LRS), STEPS, cycle_momentum=False)),
    }


NAMES = ["constant", "constant_factor", "step", "step_0.9", "multi_step", "exponential",
         "cosine", "cosine_eta_min", "cosine_periodic", "cosine_333", "warmup_cosine",
         "warmup_cosine_default", "one_cycle", "one_cycle_linear_3phase",
         "one_cycle_no_momentum"]


def torch_trajectory(torch, make, momentum_key="momentum"):
    """Rates (and momenta) of two torch SGD groups over STEPS scheduler steps."""
    params = [torch.nn.Parameter(torch.zeros(2)) for _ in BASE_LRS]
    if momentum_key == "betas":
        opt = torch.optim.Adam([{"params": [p], "lr": lr} for p, lr in zip(params, BASE_LRS)])
    else:
        opt = torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(params, BASE_LRS)],
                              momentum=0.9)
    sched = make(opt)
    lrs, moms = [], []
    for _ in range(STEPS + 1):
        lrs.append([g["lr"] for g in opt.param_groups])
        moms.append([g["betas"][0] if momentum_key == "betas" else g["momentum"]
                     for g in opt.param_groups])
        opt.step()                   # no gradients: a no-op, keeps torch's order check happy
        if len(lrs) <= STEPS:
            sched.step()
    return np.array(lrs), np.array(moms)


def closed_form(name):
    """The torch schedulers that use closed forms in step() match to the bit."""
    return name.startswith("one_cycle") or name == "constant"


@pytest.mark.torch
@pytest.mark.parametrize("name", NAMES)
def test_schedule_functions_match_torch(name, torch):
    schedule, make = torch_schedulers(torch)[name]
    expected, moms = torch_trajectory(torch, make)
    ours = np.array([[schedule.with_base_lr(lr)(t) for lr in BASE_LRS]
                     for t in range(STEPS + 1)])
    if closed_form(name):
        np.testing.assert_array_equal(ours, expected)
    else:
        for i, lr in enumerate(BASE_LRS):
            np.testing.assert_allclose(ours[:, i], expected[:, i], rtol=0,
                                       atol=RECURSIVE_ATOL * lr)
    if schedule._momentum is not None:
        np.testing.assert_array_equal(
            [schedule.momentum(t) for t in range(STEPS + 1)], moms[:, 0])


@pytest.mark.torch
@pytest.mark.parametrize("name", NAMES)
def test_attached_to_optcore_and_torch_optimizers(name, torch, rng):
    schedule, make = torch_schedulers(torch)[name]
    expected_lrs, expected_moms = torch_trajectory(torch, make)
    want = np.array([[schedule.with_base_lr(lr)(t) for lr in BASE_LRS]
                     for t in range(STEPS + 1)])

    # an optcore optimizer, stepping for real
    params = [rng.standard_normal(4) for _ in BASE_LRS]
    opt = optcore.SGD([{"params": [p], "lr": lr} for p, lr in zip(params, BASE_LRS)],
                      momentum=0.9)
    # a torch optimizer, driven by the optcore schedule
    tparams = [torch.nn.Parameter(torch.zeros(2)) for _ in BASE_LRS]
    topt = torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(tparams, BASE_LRS)],
                           momentum=0.9)
    attached = [schedule.attach(opt), schedule.attach(topt)]
    for t in range(STEPS + 1):
        for o, sched in zip((opt, topt), attached):
            got = [g["lr"] for g in o.param_groups]
            assert got == list(want[t]) == sched.get_last_lr(), (t, type(o))
            if schedule._momentum is not None:
                assert [g["momentum"] for g in o.param_groups] == list(expected_moms[t])
        if t < STEPS:
            opt.step([np.ones(4) for _ in BASE_LRS])
            for sched in attached:
                sched.step()
    assert attached[0].last_epoch == STEPS
    np.testing.assert_allclose(want, expected_lrs, rtol=0,
                               atol=RECURSIVE_ATOL * max(BASE_LRS))


@pytest.mark.torch
def test_one_cycle_cycles_adam_beta1(torch):
    schedule = S.one_cycle(None, STEPS, base_momentum=0.8, max_momentum=0.9)
    make = lambda o: torch.optim.lr_scheduler.OneCycleLR(  # noqa: E731
        o, list(BASE_LRS), STEPS, base_momentum=0.8, max_momentum=0.9)
    lrs, betas = torch_trajectory(torch, make, momentum_key="betas")
    opt = optcore.Adam([{"params": [np.zeros(3)], "lr": lr} for lr in BASE_LRS],
                       betas=(0.95, 0.98))
    sched = schedule.attach(opt)
    for t in range(STEPS + 1):
        assert [g["lr"] for g in opt.param_groups] == list(lrs[t])
        assert [g["betas"] for g in opt.param_groups] == [(b, 0.98) for b in betas[t]]
        if t < STEPS:
            opt.step([np.ones(3), np.ones(3)])
            sched.step()


def plateau_metrics(rng, n=STEPS):
    """A loss that falls, stalls with noise, jumps, falls again."""
    t = np.arange(n)
    loss = np.where(t < 300, 1.0 / (1 + t), 1.0 / 300 + 1e-4 * rng.standard_normal(n))
    loss[600:650] += 0.5
    loss[800:] = np.linspace(0.003, 0.0001, n - 800)
    return loss


PLATEAU_SETTINGS = [
    {},
    dict(mode="max", factor=0.5, patience=5, threshold=1e-3),
    dict(threshold_mode="abs", threshold=1e-4, patience=3, cooldown=10, min_lr=1e-3),
    dict(factor=0.2, patience=0, min_lr=[1e-4, 2e-3], eps=1e-6),
]


@pytest.mark.torch
@pytest.mark.parametrize("settings", PLATEAU_SETTINGS, ids=["default", "max", "abs_cooldown",
                                                            "per_group_min_lr"])
def test_reduce_on_plateau_matches_torch(settings, torch, rng):
    metrics = plateau_metrics(rng)
    if settings.get("mode") == "max":
        metrics = -metrics
    tparams = [torch.nn.Parameter(torch.zeros(2)) for _ in BASE_LRS]
    topt = torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(tparams, BASE_LRS)])
    tsched = torch.optim.lr_scheduler.ReduceLROnPlateau(topt, **settings)

    opt = optcore.SGD([{"params": [np.zeros(2)], "lr": lr} for lr in BASE_LRS])
    attached = S.reduce_on_plateau(**settings).attach(opt)
    single = {k: (v[0] if k == "min_lr" and isinstance(v, list) else v)
              for k, v in settings.items()}
    standalone = S.reduce_on_plateau(BASE_LRS[0], **single)
    reductions = 0
    for m in metrics:
        tsched.step(float(m))
        attached.step(float(m))
        lr = standalone.step(float(m))
        assert [g["lr"] for g in opt.param_groups] == [g["lr"] for g in topt.param_groups]
        assert attached.get_last_lr() == tsched.get_last_lr()
        assert lr == topt.param_groups[0]["lr"]
        reductions += lr != BASE_LRS[0]
    assert reductions, "the metric sequence never triggered a reduction"
    assert attached.last_epoch == tsched.last_epoch == STEPS


# ---- behaviour without torch -----------------------------------------------

def test_plain_function_values():
    f = S.cosine_annealing(0.1, T_max=1000, eta_min=1e-4)
    assert f(0) == 0.1
    assert f(1000) == pytest.approx(1e-4, abs=1e-18)
    assert f(500) == pytest.approx(1e-4 + (0.1 - 1e-4) / 2, rel=1e-15)
    assert S.step_decay(1.0, 10, 0.5)(25) == 0.25
    assert S.multi_step(1.0, [5, 5, 8], 0.1)(7) == pytest.approx(0.01)
    assert S.exponential(2.0, 0.5)(3) == 0.25
    assert S.constant(0.3)(12345) == 0.3
    w = S.warmup_cosine(1.0, 10, 110, start_factor=0.1)
    assert w(0) == pytest.approx(0.1) and w(5) == pytest.approx(0.55)
    assert w(10) == 1.0 and w(110) == pytest.approx(0.0, abs=1e-16)
    oc = S.one_cycle(1.0, 100)
    assert oc(0) == pytest.approx(1 / 25) and max(oc(t) for t in range(101)) == 1.0
    assert oc(99) == pytest.approx(1 / 25 / 1e4)      # torch: the last step is total_steps - 1
    assert oc.momentum(0) == 0.95 and S.exponential(1.0, 0.9).momentum(3) is None
    assert isinstance(f(np.int64(3)), float)


def test_schedule_argument_errors():
    with pytest.raises(ValueError, match="no base_lr"):
        S.cosine_annealing(None, 10)(3)
    with pytest.raises(ValueError, match="step must be >= 0"):
        S.exponential(0.1, 0.9)(-1)
    with pytest.raises(TypeError, match="step must be an integer"):
        S.exponential(0.1, 0.9)(1.5)
    with pytest.raises(ValueError, match="T_max"):
        S.cosine_annealing(0.1, 0)
    with pytest.raises(ValueError, match="total_steps"):
        S.warmup_cosine(0.1, 100, 100)
    with pytest.raises(ValueError, match="start_factor"):
        S.warmup_cosine(0.1, 10, 100, start_factor=0.0)
    with pytest.raises(ValueError, match="anneal_strategy"):
        S.one_cycle(0.1, 100, anneal_strategy="cosine")
    with pytest.raises(ValueError, match="phases"):
        S.one_cycle(0.1, 10, pct_start=0.1)
    with pytest.raises(ValueError, match="total_steps=100"):
        S.one_cycle(0.1, 100)(101)
    with pytest.raises(ValueError, match="factor"):
        S.reduce_on_plateau(0.1, factor=1.0)
    with pytest.raises(ValueError, match="mode"):
        S.reduce_on_plateau(0.1, mode="lowest")
    with pytest.raises(TypeError, match="param_groups"):
        S.constant(0.1).attach(object())
    opt = optcore.SGD([np.zeros(2)], lr=0.1)
    with pytest.raises(ValueError, match="neither 'momentum' nor 'betas'"):
        S.one_cycle(None, 10).attach(optcore.Adagrad([np.zeros(2)]))
    with pytest.raises(ValueError, match="2 schedules for 1"):
        S.attach(opt, [S.constant(0.1), S.constant(0.2)])


def test_attach_semantics(rng):
    a, b = np.zeros(3), np.zeros(3)
    opt = optcore.Adam([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.1)
    # base_lr=None: each group's own rate, remembered as initial_lr (torch)
    sched = S.exponential(None, 0.5).attach(opt)
    sched.step()
    assert [g["lr"] for g in opt.param_groups] == [0.05, 0.25]
    assert [g["initial_lr"] for g in opt.param_groups] == [0.1, 0.5]
    # a group added later gets its own schedule from its own rate
    opt.add_param_group({"params": [np.zeros(2)], "lr": 0.8})
    sched.step()
    assert [g["lr"] for g in opt.param_groups] == [0.025, 0.125, 0.2]
    # state_dict round trip
    sd = sched.state_dict()
    sched.step()
    sched.load_state_dict(sd)
    assert sched.last_epoch == 2 and opt.param_groups[0]["lr"] == 0.025
    # a number: every group uses it
    S.exponential(1.0, 0.5).attach(opt)
    assert [g["lr"] for g in opt.param_groups] == [1.0, 1.0, 1.0]
    # plain callables, one per group
    sched = S.attach(opt, [lambda t: 0.1 * t, lambda t: 0.2, S.constant(0.3)])
    sched.step()
    sched.step()
    assert [g["lr"] for g in opt.param_groups] == [0.2, 0.2, 0.3]
    # the optimizer's next step uses the scheduled rates
    opt.step([np.ones(3), np.ones(3), np.ones(2)])
    assert opt.state[2]["step"] == 1


def test_warmup_and_cosine_are_continuous():
    f = S.warmup_cosine(2.0, 100, 1100, start_factor=0.05, eta_min=0.01)
    values = np.array([f(t) for t in range(1101)])
    assert values[0] == pytest.approx(0.1)
    assert np.argmax(values) == 100 and values[100] == 2.0
    assert np.all(np.diff(values[:101]) > 0) and np.all(np.diff(values[100:]) <= 0)
    assert values[-1] == pytest.approx(0.01)
    assert math.isclose(f(600), 0.01 + (2.0 - 0.01) / 2, rel_tol=1e-14)


def test_torch_warning_free_attachment(torch):
    # attaching an optcore schedule to a torch optimizer involves none of
    # torch's scheduler machinery (no order warnings)
    p = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([p], lr=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sched = S.cosine_annealing(None, 10).attach(opt)
        sched.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(S.cosine_annealing(0.1, 10)(2))
