"""The functional kernels against torch.optim (single-tensor foreach=False path),
step after step with random options from the registry's sampler, and the same
hyperparameter errors. Required in CI (OPTCORE_REQUIRE_TORCH=1)."""

import numpy as np
import pytest

import optcore

from registry import (ADAM, ADAMW, BY_NAME, FAMILIES, OPTIMIZERS, SGD, call_with_states,
    deviation, draw_options, random_states, torch_options, torch_trajectory)
from support import DTYPES, TORCH_RTOL


# ==== SGD, Adam, AdamW =======================================================

pytestmark = pytest.mark.torch

STEPS = 60

# torch evaluates the same update with a few operations fused (fmadd in its
# vectorised add/lerp/addcmul) where optcore rounds twice, so trajectories
# differ by ulps: after 100 steps at most 3.2e-7 (float32) and 4.8e-16
# (float64) of the parameter scale over 20 random option draws per optimizer
# (benchmarks/deviation.py --api functional). The bounds leave ~30x / ~200x room; a formula
# difference (bias correction, weight-decay form, lerp branch) shows at 1e-3.
# Tighter than support.TORCH_RTOL, which also serves optimizers whose torch
# form is further from a single-tensor elementwise update.
SGD_ADAM_TORCH_RTOL = {np.float32: 1e-5, np.float64: 1e-13}
SEEDS = range(8)
SHAPES = [(33,), (4, 17), (1,), (1000,)]


def _flat(v):
    return v if isinstance(v, list) else [v]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.short)
def test_step_after_step(torch, family, dtype, seed, rng):
    # Alternate seeds pin beta1 to either side of 0.5 (both lerp branches).
    opts = draw_options(family, rng, lerp_branch=("low", "high")[seed % 2])
    shapes = SHAPES if seed % 4 else SHAPES[3]          # some single-tensor runs
    for step, bufs, twin in torch_trajectory(torch, family, opts, dtype, shapes,
                                             STEPS, rng):
        dev = deviation(_flat(bufs["param"]), [p.numpy() for p in twin.params])
        assert dev <= SGD_ADAM_TORCH_RTOL[dtype], (
            f"step {step}: param deviates from torch by {dev:.3g} of its scale; {opts}")
    # The state torch keeps under the same names.
    for name in family.needed_states(opts):
        dev = deviation(_flat(bufs[name]), twin.state(name))
        assert dev <= SGD_ADAM_TORCH_RTOL[dtype], f"{name} deviates by {dev:.3g}; {opts}"


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("family,opts", [
    (SGD, dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01)),
    (SGD, dict(lr=0.05, momentum=0.9, nesterov=True, maximize=True)),
    (ADAM, dict(lr=0.01, beta1=0.9, beta2=0.999, amsgrad=True, weight_decay=0.01)),
    (ADAM, dict(lr=0.01, beta1=0.2, beta2=0.99, decoupled_weight_decay=True,
                weight_decay=0.05, maximize=True)),
    (ADAMW, dict(lr=0.01, beta1=0.9, amsgrad=True)),
    (ADAMW, dict(lr=0.01, beta1=0.4, weight_decay=0.1)),
], ids=["sgd-dampening", "sgd-nesterov-max", "adam-amsgrad-l2", "adam-decoupled-b1low",
        "adamw-amsgrad", "adamw-b1low"])
def test_large_multi_tensor_against_torch(torch, family, opts, dtype, rng):
    # Above the parallel threshold: threads split the call, torch does not.
    shapes = [(30_000,), (100, 300), (5,)]
    for step, bufs, twin in torch_trajectory(torch, family, opts, dtype, shapes, 50, rng):
        pass
    dev = deviation(bufs["param"], [p.numpy() for p in twin.params])
    assert dev <= SGD_ADAM_TORCH_RTOL[dtype], f"{dev:.3g}"


# ==== RMSprop, Adagrad, Adadelta, Adamax, NAdam, RAdam =======================


STEPS_GRID = 100
CHECK_AT = (1, 5, 50, 100)
SEEDS_GRID = [0, 1, 2]
FORMS = {"single": [1000], "multi": [3, 17, 1000, 4099]}


@pytest.fixture
def torch_env(torch):
    """One torch thread (these tensors are small; several OpenMP runtimes
    spinning on a busy 2-core machine cost far more than they give), and
    torch's default dtype set per run: torch keeps scalar state (NAdam's
    mu_product) in it, and optcore keeps it in double, so float64 runs use
    float64 there too."""
    prev_dtype, prev_threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_num_threads(1)

    def use(dtype):
        torch.set_default_dtype(torch.float64 if dtype == np.float64 else torch.float32)
    yield use
    torch.set_default_dtype(prev_dtype)
    torch.set_num_threads(prev_threads)


def _scale_close(ours, theirs, dtype, what):
    """|ours - theirs| <= TORCH_RTOL * max|theirs| (rounding differences of a
    few ulps per step accumulate, relative to the buffer's scale)."""
    theirs = np.asarray(theirs)
    scale = float(np.max(np.abs(theirs))) if theirs.size else 0.0
    np.testing.assert_allclose(ours, theirs, rtol=0,
                               atol=TORCH_RTOL[dtype] * max(scale, 1e-30),
                               err_msg=what)


@pytest.mark.parametrize("seed", SEEDS_GRID)
@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("opt", OPTIMIZERS, ids=str)
def test_trajectory_matches_torch(opt, dtype, form, seed, torch, torch_env):
    torch_env(dtype)
    rng = np.random.default_rng([seed, OPTIMIZERS.index(opt), DTYPES.index(dtype)])
    sizes = FORMS[form]
    opts = draw_options(opt, rng)
    topts = torch_options(opts)
    states = [{s: np.zeros(n, dtype) for s in opt.states} for n in sizes]
    if opt.short == "adagrad":
        # torch's initial_accumulator_value is optcore's caller's state init
        init = float(rng.uniform(0.0, 0.5))
        topts["initial_accumulator_value"] = init
        for st_ in states:
            st_["state_sum"][...] = init
    need = opt.required(opts)
    states = [{s: (a if s in need else None) for s, a in st_.items()} for st_ in states]

    params = [rng.standard_normal(n).astype(dtype) for n in sizes]
    tparams = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in params]
    topt = getattr(torch.optim, opt.torch_class)(tparams, foreach=False, **topts)
    mu_product = 1.0
    single = form == "single"
    for step in range(1, STEPS_GRID + 1):
        grads = [rng.standard_normal(n).astype(dtype) for n in sizes]
        for tp, g in zip(tparams, grads):
            tp.grad = torch.from_numpy(g.copy())
        topt.step()
        if single:
            mu_product = call_with_states(opt.fast, opt, params[0], grads[0], states[0], step,
                              opts, mu_product)
        else:
            lists = {s: (None if states[0][s] is None else [d[s] for d in states])
                     for s in opt.states}
            mu_product = call_with_states(opt.fast, opt, params, grads, lists, step, opts,
                              mu_product)
        if step not in CHECK_AT:
            continue
        for t, tp in enumerate(tparams):
            what = f"{opt} {opts} step {step} tensor {t}"
            _scale_close(params[t], tp.detach().numpy(), dtype, f"param: {what}")
            tstate = topt.state[tp]
            for s in need:
                _scale_close(states[t][s], tstate[opt.torch_key(s)].numpy(), dtype,
                             f"{s}: {what}")
            if opt.scalar_state:
                # float32 runs: torch rounds it to float32 (down to subnormals)
                theirs = tstate[opt.scalar_state].item()
                f32 = dtype == np.float32
                np.testing.assert_allclose(mu_product, theirs, rtol=1e-6 if f32 else 1e-15,
                                           atol=1e-37 if f32 else 0)


# Our hyperparameter errors begin with torch's message for the same value.
TORCH_BAD = {
    "rmsprop": [{"lr": -0.5}, {"eps": -1.0}, {"weight_decay": -1.0},
                {"momentum": -0.5}, {"alpha": -0.5}],
    "adagrad": [{"lr": -0.5}, {"eps": -1.0}, {"weight_decay": -1.0},
                {"lr_decay": -0.5}],
    "adadelta": [{"lr": -0.5}, {"eps": -1.0}, {"weight_decay": -1.0},
                 {"rho": 1.5}, {"rho": -0.5}],
    "adamax": [{"lr": -0.5}, {"eps": -1.0}, {"weight_decay": -1.0},
               {"beta1": 1.0}, {"beta2": -0.5}],
    "nadam": [{"lr": -0.5}, {"eps": -1.0}, {"weight_decay": -1.0},
              {"beta1": 1.0}, {"beta2": 1.5}, {"momentum_decay": -0.1}],
    "radam": [{"lr": -0.5}, {"eps": -1.0}, {"weight_decay": -1.0},
              {"beta1": -0.1}, {"beta2": 1.0}],
}


@pytest.mark.parametrize("name, bad", [pytest.param(n, b, id=f"{n}-{b}")
                                       for n, cases in TORCH_BAD.items() for b in cases])
def test_error_wording_is_torchs(name, bad, torch):
    opt = BY_NAME[name]
    topts = torch_options(dict({"beta1": 0.9, "beta2": 0.999} if "beta1" in bad
                               or "beta2" in bad else {}, **bad))
    with pytest.raises(ValueError) as theirs:
        getattr(torch.optim, opt.torch_class)([torch.nn.Parameter(torch.zeros(2))],
                                              **topts)
    rng = np.random.default_rng(0)
    p, g = np.ones(4, np.float32), np.ones(4, np.float32)
    states = random_states(opt, rng, 4, np.float32)
    with pytest.raises(ValueError) as ours:
        call_with_states(opt.fast, opt, p, g, states, 1, bad)
    assert str(ours.value).startswith(str(theirs.value)), (str(ours.value),
                                                           str(theirs.value))


@pytest.mark.parametrize("dtype, big", [(np.float32, 1e22), (np.float64, 1e160)])
def test_centered_rmsprop_where_the_square_overflows(torch, dtype, big):
    # grad_avg**2 overflows while square_avg is already +inf: torch's fused
    # addcmul keeps +inf (no update), an unfused subtraction would give NaN.
    p = np.array([0.5, -0.25], dtype)
    g = np.array([big, -big], dtype)
    sq, ga = np.zeros(2, dtype), np.zeros(2, dtype)
    optcore.rmsprop_step(p, g, sq, None, ga, step=1, centered=True)
    t = torch.tensor([0.5, -0.25], dtype=getattr(torch, np.dtype(dtype).name),
                     requires_grad=True)
    opt = torch.optim.RMSprop([t], centered=True, foreach=False)
    t.grad = torch.from_numpy(g.copy())
    opt.step()
    np.testing.assert_array_equal(p, t.detach().numpy())
