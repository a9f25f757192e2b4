"""Bad input to the RMSprop, Adagrad, Adadelta, Adamax, NAdam and RAdam
kernels: a clear error (torch's wording for hyperparameters), and every buffer
left exactly as it was (SPEC §8)."""

import numpy as np
import pytest

from support import DTYPES, random_array
from family import OPTIMIZERS, BY_NAME, all_on, random_states, call

N = 37


def _problem(opt, rng, dtype=np.float32, n=N, k=None):
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


def _arrays(*objs):
    out = []
    for o in objs:
        if isinstance(o, dict):
            out += _arrays(*o.values())
        elif isinstance(o, (list, tuple)):
            out += _arrays(*o)
        elif isinstance(o, np.ndarray):
            out.append(o)
    return out


def _raises_and_keeps(exc, match, opt, param, grad, states, step=1, opts=None, **kw):
    """The call raises `exc` matching `match`, and no buffer changed."""
    buffers = _arrays(param, grad, states)
    before = [a.tobytes() for a in buffers]
    opts = dict(opts or {}, **kw)
    with pytest.raises(exc, match=match):
        call(opt.fast, opt, param, grad, states, step, opts)
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
    call(opt.fast, opt, param, grad, states, 1, opts)     # not needed: accepted


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
            call(opt.fast, opt, param, grad, states, 1, dict(opts, **extra))


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
    states[s] = random_array(rng, N + 1, np.float32)
    _raises_and_keeps(ValueError, s, opt, param, grad, states, opts=opts)

    param, grad, states, opts = _problem(opt, rng)
    states[s].flags.writeable = False
    _raises_and_keeps(ValueError, s, opt, param, grad, states, opts=opts)

    param, grad, states, opts = _problem(opt, rng)
    states[s] = random_array(rng, 2 * N, np.float32)[::2]
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
        a = call(opt.fast, opt, param, grad, states, 7, opts)
        with np.errstate(all="ignore"):
            b = call(opt.ref, opt, ref[0], grad, ref[1], 7, opts)
        assert a == b
        np.testing.assert_array_equal(np.isnan(param), np.isnan(ref[0]))
        assert np.isnan(param[3])
        np.testing.assert_allclose(param, ref[0], rtol=1e-6, equal_nan=True)
