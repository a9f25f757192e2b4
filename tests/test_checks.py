"""Wrongly typed hyperparameters of the functional kernels raise TypeError
naming the argument, before anything is written.

The argument lists are written here by hand (not read from optcore._spec), so
that the spec does not grade itself.
"""

import numpy as np
import pytest

import optcore

# kernel -> (number of positional buffers to pass, required keywords,
#            real-valued hyperparameters, flags)
KERNELS = {
    "sgd_step": (2, {"lr": 0.1}, ("lr", "momentum", "dampening", "weight_decay"),
                 ("nesterov", "maximize")),
    "adam_step": (4, {}, ("lr", "beta1", "beta2", "eps", "weight_decay"),
                  ("decoupled_weight_decay", "amsgrad", "maximize")),
    "adamw_step": (4, {}, ("lr", "beta1", "beta2", "eps", "weight_decay"),
                   ("amsgrad", "maximize")),
    "rmsprop_step": (3, {}, ("lr", "alpha", "eps", "weight_decay", "momentum"),
                     ("centered", "maximize")),
    "adagrad_step": (3, {}, ("lr", "lr_decay", "weight_decay", "eps"), ("maximize",)),
    "adadelta_step": (4, {}, ("lr", "rho", "eps", "weight_decay"), ("maximize",)),
    "adamax_step": (4, {}, ("lr", "beta1", "beta2", "eps", "weight_decay"), ("maximize",)),
    "nadam_step": (4, {"mu_product": 1.0},
                   ("mu_product", "lr", "beta1", "beta2", "eps", "weight_decay",
                    "momentum_decay"), ("decoupled_weight_decay", "maximize")),
    "radam_step": (4, {}, ("lr", "beta1", "beta2", "eps", "weight_decay"),
                   ("decoupled_weight_decay", "maximize")),
    "rprop_step": (4, {}, ("etaminus", "etaplus", "step_size_min", "step_size_max"),
                   ("maximize",)),
    "asgd_step": (3, {"eta": 0.01, "mu": 1.0}, ("eta", "mu", "lambd", "weight_decay"),
                  ("maximize",)),
    "lion_step": (3, {}, ("lr", "beta1", "beta2", "weight_decay"), ("maximize",)),
    "lamb_step": (4, {}, ("lr", "beta1", "beta2", "eps", "weight_decay"), ("maximize",)),
}

BAD_REALS = [None, "0.1", np.array([1e-3]), [0.1], 1j]
BAD_FLAGS = ["yes", None, 2, 0.5, np.array([True])]


def _buffers(count, dtype=np.float32):
    rng = np.random.default_rng(0)
    return [np.abs(rng.standard_normal(16)).astype(dtype) for _ in range(count)]


def _raises_unchanged(kernel, kwargs, error, match):
    count, required, _, _ = KERNELS[kernel]
    bufs = _buffers(count)
    before = [b.copy() for b in bufs]
    with pytest.raises(error, match=match):
        getattr(optcore, kernel)(*bufs, step=1, **dict(required, **kwargs))
    for b, b0 in zip(bufs, before):
        assert np.array_equal(b, b0)


@pytest.mark.parametrize("kernel", sorted(KERNELS))
def test_valid_call_runs(kernel):
    count, required, _, _ = KERNELS[kernel]
    getattr(optcore, kernel)(*_buffers(count), step=1, **required)


@pytest.mark.parametrize("value", BAD_REALS, ids=repr)
@pytest.mark.parametrize("kernel,name", [(k, n) for k, v in sorted(KERNELS.items())
                                         for n in v[2]])
def test_real_type_error_names_argument(kernel, name, value):
    _raises_unchanged(kernel, {name: value}, TypeError,
                      f"^{name} must be a real number, got ")


@pytest.mark.parametrize("value", BAD_FLAGS, ids=repr)
@pytest.mark.parametrize("kernel,name", [(k, n) for k, v in sorted(KERNELS.items())
                                         for n in v[3]])
def test_flag_type_error_names_argument(kernel, name, value):
    _raises_unchanged(kernel, {name: value}, TypeError, f"^{name} must be a bool, got ")


@pytest.mark.parametrize("kernel", sorted(KERNELS))
@pytest.mark.parametrize("value", [1.0, "1", None])
def test_step_type_error(kernel, value):
    count, required, _, _ = KERNELS[kernel]
    bufs = _buffers(count)
    before = [b.copy() for b in bufs]
    with pytest.raises(TypeError, match="^step must be an integer"):
        getattr(optcore, kernel)(*bufs, step=value, **required)
    for b, b0 in zip(bufs, before):
        assert np.array_equal(b, b0)


@pytest.mark.parametrize("call,message", [
    (lambda b: optcore.adam_step(*b[:4], step=1, lr=None), "lr must be a real number, got None"),
    (lambda b: optcore.adam_step(*b[:4], step=1, lr="0.1"), "lr must be a real number, got '0.1'"),
    (lambda b: optcore.adam_step(*b[:4], step=1, beta1=None), "beta1 must be a real number"),
    (lambda b: optcore.adam_step(*b[:4], step=1, eps=None), "eps must be a real number"),
    (lambda b: optcore.adam_step(*b[:4], step=1, weight_decay=None),
     "weight_decay must be a real number"),
    (lambda b: optcore.adam_step(*b[:4], step=1, maximize="yes"),
     "maximize must be a bool, got 'yes'"),
    (lambda b: optcore.sgd_step(*b[:2], step=1, lr=None), "lr must be a real number, got None"),
    (lambda b: optcore.rmsprop_step(*b[:3], step=1, alpha=None),
     "alpha must be a real number, got None"),
])
def test_issue_examples(call, message):
    bufs = _buffers(4)
    before = [b.copy() for b in bufs]
    with pytest.raises(TypeError) as info:
        call(bufs)
    assert str(info.value).startswith(message)
    for b, b0 in zip(bufs, before):
        assert np.array_equal(b, b0)


@pytest.mark.parametrize("kwargs,message", [
    ({"lr": -1.0}, "Invalid learning rate: -1.0 (lr must be >= 0)"),
    ({"lr": float("nan")}, "Invalid learning rate: nan (lr must be >= 0)"),
    ({"beta1": 1.0}, "Invalid beta parameter at index 0: 1.0 (beta1 must be in [0, 1))"),
    ({"beta2": -0.5}, "Invalid beta parameter at index 1: -0.5 (beta2 must be in [0, 1))"),
    ({"eps": -1e-8}, "Invalid epsilon value: -1e-08 (eps must be >= 0)"),
    ({"weight_decay": -1}, "Invalid weight_decay value: -1.0 (weight_decay must be >= 0)"),
])
def test_value_errors_keep_torch_wording(kwargs, message):
    bufs = _buffers(4)
    before = [b.copy() for b in bufs]
    with pytest.raises(ValueError) as info:
        optcore.adam_step(*bufs, step=1, **kwargs)
    assert str(info.value) == message
    for b, b0 in zip(bufs, before):
        assert np.array_equal(b, b0)


@pytest.mark.parametrize("kwargs,message", [
    ({"etaminus": 1.0}, "Invalid etaminus value: 1.0 (etaminus must be in (0, 1))"),
    ({"etaminus": 0.0}, "Invalid etaminus value: 0.0 (etaminus must be in (0, 1))"),
    ({"etaplus": 1.0}, "Invalid etaplus value: 1.0 (etaplus must be > 1)"),
    ({"etaplus": float("nan")}, "Invalid etaplus value: nan (etaplus must be > 1)"),
])
def test_rprop_value_errors(kwargs, message):
    bufs = _buffers(4)
    before = [b.copy() for b in bufs]
    with pytest.raises(ValueError) as info:
        optcore.rprop_step(*bufs, step=1, **kwargs)
    assert str(info.value) == message
    for b, b0 in zip(bufs, before):
        assert np.array_equal(b, b0)


def test_accepted_real_and_flag_types_match_floats():
    # NumPy scalars and 0-d arrays are real numbers; NumPy bools and 0/1 are flags
    results = []
    for lr, amsgrad in [(1e-3, True), (np.float64(1e-3), np.True_), (np.array(1e-3), 1)]:
        bufs = _buffers(5, np.float64)
        optcore.adam_step(*bufs[:4], step=1, lr=lr, amsgrad=amsgrad, max_exp_avg_sq=bufs[4])
        results.append(bufs[0])
    assert np.array_equal(results[0], results[1])
    assert np.array_equal(results[0], results[2])
    bufs = _buffers(2)
    optcore.sgd_step(*bufs, step=1, lr=1)      # an int lr is a real number
