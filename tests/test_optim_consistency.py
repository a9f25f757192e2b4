"""The three APIs agree: the functional kernels, the NumPy classes
(optcore.optim) and the torch classes (optcore.torch), and all of them with
torch.optim where torch has the optimizer.

- the same bad hyperparameter gets the same error from all three (torch's
  wording first; wrongly typed values a TypeError naming the argument);
- both class layers take the same constructor arguments (torch.optim's),
  including Lion's and LAMB's ``foreach``/``capturable``/``differentiable``;
- Adagrad fills ``sum`` with the constructor's ``initial_accumulator_value``
  (every group, also groups added later, which get state at their first step);
- NAdam's ``mu_product`` is rounded as torch.optim rounds it (float32, torch's
  default dtype) in both class layers.
"""

import inspect

import numpy as np
import pytest

STORAGE_OPTIONS = ("state_dtype", "master_weights", "rounding", "seed")

import optcore

torch = pytest.importorskip("torch")
ot = pytest.importorskip("optcore.torch")

NAMES = ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta", "Adamax", "NAdam",
         "RAdam", "Rprop", "ASGD", "Lion", "LAMB"]
IN_TORCH = NAMES[:11]


def _error(fn):
    try:
        fn()
    except Exception as exc:          # the error itself is what is compared
        return type(exc), str(exc)
    return None


# ---- the same bad value, the same message -----------------------------------

_BAD_ADAM = [
    dict(lr=-1.0), dict(lr=float("nan")), dict(eps=-1e-8), dict(weight_decay=-0.5),
    dict(beta1=1.0), dict(beta2=-0.1), dict(lr=None), dict(lr="0.1"), dict(eps=None),
    dict(weight_decay="0"), dict(beta1=None), dict(lr=np.array([1e-3])),
    dict(amsgrad="yes"), dict(maximize="yes"), dict(amsgrad=None),
]


def _class_options(bad):
    """adam_step's keywords as the classes' constructor options."""
    opts = dict(bad)
    if "beta1" in opts or "beta2" in opts:
        opts["betas"] = (opts.pop("beta1", 0.9), opts.pop("beta2", 0.999))
    return opts


def _adam_step_error(bad):
    p, g = np.zeros(3), np.ones(3)
    return _error(lambda: optcore.adam_step(p, g, np.zeros(3), np.zeros(3), step=1,
                                            **bad))


# Whether the functional wrappers check types with the shared checks yet
# (their value checks already do).
_FUNCTIONAL_TYPES_CHECKED = (_adam_step_error(dict(lr=None))
                             or ("", ""))[1].startswith("lr")


@pytest.mark.parametrize("bad", _BAD_ADAM, ids=[repr(b) for b in _BAD_ADAM])
def test_adam_bad_values_same_error_in_all_three_apis(bad):
    opts = _class_options(bad)
    numpy_cls = _error(lambda: optcore.Adam([np.zeros(3)], **opts))
    torch_cls = _error(lambda: ot.Adam([torch.zeros(3, requires_grad=True)], **opts))
    assert numpy_cls is not None and numpy_cls == torch_cls
    kind, message = numpy_cls
    name = next(iter(bad))
    # Each API names the argument as its caller spells it: adam_step's beta1 is
    # the classes' betas[0]; the rest of the message is the same.
    class_name = {"beta1": "betas[0]", "beta2": "betas[1]"}.get(name, name)
    if kind is TypeError:
        assert message.startswith(class_name), message    # names the argument
    else:
        assert f"({class_name} " in message, message
    if kind is TypeError and not _FUNCTIONAL_TYPES_CHECKED:
        pytest.skip("adam_step's wrapper does not check types with the shared checks yet")
    assert _adam_step_error(bad) == (kind, message.replace(class_name, name))


@pytest.mark.parametrize("bad", [dict(lr=-1.0), dict(eps=-1.0), dict(weight_decay=-0.1),
                                 dict(betas=(1.0, 0.999)), dict(betas=(0.9, -0.5))])
def test_range_errors_start_with_torch_message(bad):
    ref = _error(lambda: torch.optim.Adam([torch.zeros(3, requires_grad=True)], **bad))
    for ours in (_error(lambda: optcore.Adam([np.zeros(3)], **bad)),
                 _error(lambda: ot.Adam([torch.zeros(3, requires_grad=True)], **bad))):
        assert ours[0] is ref[0] and ours[1].startswith(ref[1]), (ours, ref)


@pytest.mark.parametrize("opts", [dict(nesterov=True), dict(nesterov=True, momentum=0.9,
                                                            dampening=0.1)])
def test_nesterov_rule_is_torchs_in_both_layers(opts):
    ref = _error(lambda: torch.optim.SGD([torch.zeros(3, requires_grad=True)], lr=0.1,
                                         **opts))
    assert ref == (ValueError, "Nesterov momentum requires a momentum and zero dampening")
    assert _error(lambda: optcore.SGD([np.zeros(3)], lr=0.1, **opts)) == ref
    assert _error(lambda: ot.SGD([torch.zeros(3, requires_grad=True)], lr=0.1,
                                 **opts)) == ref


def test_tensor_lr_rule_is_torchs_in_both_layers():
    lr = torch.tensor([0.1, 0.2])
    ref = _error(lambda: torch.optim.Adam([torch.zeros(3, requires_grad=True)], lr=lr))
    assert ref == (ValueError, "Tensor lr must be 1-element")
    assert _error(lambda: ot.Adam([torch.zeros(3, requires_grad=True)], lr=lr)) == ref
    assert _error(lambda: optcore.Adam([np.zeros(3)], lr=lr)) == ref


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "Adagrad"])
def test_fused_with_foreach_is_refused_in_both_layers(name):
    ref = _error(lambda: getattr(torch.optim, name)([torch.zeros(3, requires_grad=True)],
                                                   fused=True, foreach=True))
    assert ref is not None and ref[0] is RuntimeError
    assert _error(lambda: getattr(optcore, name)([np.zeros(3)], fused=True,
                                                 foreach=True)) == ref
    assert _error(lambda: getattr(ot, name)([torch.zeros(3, requires_grad=True)],
                                            fused=True, foreach=True)) == ref


# ---- the same constructors ---------------------------------------------------

def _arguments(cls):
    """Names, kinds and defaults of the constructor (torch's classes also
    carry type annotations)."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(cls).parameters.values()]


@pytest.mark.parametrize("name", NAMES)
def test_both_layers_take_the_same_arguments(name):
    assert _arguments(getattr(optcore, name)) == _arguments(getattr(ot, name))
    if name in IN_TORCH:
        # optcore's storage options (low precision) come after torch's arguments
        ours = [a for a in _arguments(getattr(ot, name)) if a[0] not in STORAGE_OPTIONS]
        assert ours == _arguments(getattr(torch.optim, name))


@pytest.mark.parametrize("name", ["Lion", "LAMB"])
def test_lion_lamb_flags_in_both_layers(name):
    for layer, params in ((optcore, lambda: [np.zeros(3)]),
                          (ot, lambda: [torch.zeros(3, requires_grad=True)])):
        cls = getattr(layer, name)
        cls(params(), foreach=True)                    # accepted, changes nothing
        cls(params(), foreach=False, capturable=False, differentiable=False)
        with pytest.raises(ValueError, match="capturable=True"):
            cls(params(), capturable=True)
        with pytest.raises(ValueError, match="differentiable=True"):
            cls(params(), differentiable=True)


@pytest.mark.parametrize("name", ["Adam", "NAdam", "RMSprop"])
def test_capturable_differentiable_refused_in_both_layers(name):
    for flag in ("capturable", "differentiable"):
        for layer, params in ((optcore, [np.zeros(3)]),
                              (ot, [torch.zeros(3, requires_grad=True)])):
            with pytest.raises(ValueError, match=f"{flag}=True"):
                getattr(layer, name)(params, **{flag: True})


# ---- Adagrad: the constructor's initial_accumulator_value ---------------------

def test_adagrad_fills_from_the_constructor_value_like_torch():
    rng = np.random.default_rng(7)
    arrays = [rng.standard_normal(n).astype(np.float32) for n in (5, 4, 3)]
    grads = [rng.standard_normal(a.size).astype(np.float32) for a in arrays]

    def groups(make):
        # the second group's own value is not used by torch
        return [{"params": [make(arrays[0])]},
                {"params": [make(arrays[1])], "initial_accumulator_value": 0.75}]

    ref = torch.optim.Adagrad(groups(lambda a: torch.tensor(a)), lr=0.1,
                              initial_accumulator_value=0.25, foreach=False)
    tor = ot.Adagrad(groups(lambda a: torch.tensor(a)), lr=0.1,
                     initial_accumulator_value=0.25)
    npy = optcore.Adagrad(groups(np.copy), lr=0.1, initial_accumulator_value=0.25)
    for opt in (ref, tor):
        assert [float(opt.state[g["params"][0]]["sum"][0]) for g in opt.param_groups] \
            == [0.25, 0.25]
    assert [float(npy.state[i]["sum"][0]) for i in (0, 1)] == [0.25, 0.25]

    # a group added later: no state until its first step, then the constructor's
    ref.add_param_group({"params": [torch.tensor(arrays[2])],
                         "initial_accumulator_value": 0.5})
    tor.add_param_group({"params": [torch.tensor(arrays[2])],
                         "initial_accumulator_value": 0.5})
    npy.add_param_group({"params": [arrays[2].copy()], "initial_accumulator_value": 0.5})
    assert ref.param_groups[2]["params"][0] not in ref.state
    assert tor.param_groups[2]["params"][0] not in tor.state
    assert 2 not in npy.state and len(npy.state) == 2

    for opt in (ref, tor):
        for group, g in zip(opt.param_groups, grads):
            group["params"][0].grad = torch.tensor(g)
        opt.step()
    npy.step(grads)
    for j, group in enumerate(ref.param_groups):
        expected = ref.state[group["params"][0]]["sum"].numpy()
        ours = tor.state[tor.param_groups[j]["params"][0]]["sum"].numpy()
        np.testing.assert_allclose(ours, expected, rtol=1e-6)   # the kernel's rounding
        np.testing.assert_array_equal(npy.state[j]["sum"], ours)
        np.testing.assert_array_equal(npy.param_groups[j]["params"][0],
                                      tor.param_groups[j]["params"][0].numpy())


# ---- NAdam: mu_product rounded as torch rounds it -------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nadam_mu_product_follows_torch_in_both_layers(dtype):
    assert torch.get_default_dtype() == torch.float32
    rng = np.random.default_rng(3)
    start = rng.standard_normal(17).astype(dtype)
    opts = dict(lr=0.01, betas=(0.85, 0.99), momentum_decay=0.01)
    ref = torch.optim.NAdam([torch.tensor(start)], foreach=False, **opts)
    tor = ot.NAdam([torch.tensor(start)], **opts)
    npy = optcore.NAdam([start.copy()], **opts)
    for _ in range(25):
        g = rng.standard_normal(17).astype(dtype)
        for opt in (ref, tor):
            opt.param_groups[0]["params"][0].grad = torch.tensor(g)
            opt.step()
        npy.step([g])
    mu_ref = ref.state[ref.param_groups[0]["params"][0]]["mu_product"]
    mu_tor = tor.state[tor.param_groups[0]["params"][0]]["mu_product"]
    assert mu_ref.dtype == mu_tor.dtype == torch.float32
    assert float(mu_tor) == float(mu_ref)
    saved = npy.state_dict()["state"][0]["mu_product"]
    assert type(saved) is float and saved == float(mu_ref)
    # the two layers call the same kernel with the same arguments
    np.testing.assert_array_equal(npy.param_groups[0]["params"][0],
                                  tor.param_groups[0]["params"][0].numpy())
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(npy.param_groups[0]["params"][0],
                               ref.param_groups[0]["params"][0].numpy(), rtol=tol,
                               atol=tol)


def test_nan_dampening_is_refused_before_any_step_in_every_api():
    # A group's options are checked when the group is added, so a NaN in a
    # later group cannot let an earlier group's kernel write and then raise.
    nan = float("nan")
    message = "Invalid dampening value: nan"
    with pytest.raises(ValueError, match=message):
        optcore.sgd_step(np.zeros(3), np.ones(3), np.zeros(3), step=1, lr=0.1,
                         momentum=0.9, dampening=nan)
    a, b = np.zeros(3), np.zeros(3)
    with pytest.raises(ValueError, match=message):
        optcore.SGD([{"params": [a]}, {"params": [b], "dampening": nan}], lr=0.1,
                    momentum=0.9)
    ta, tb = torch.zeros(3, requires_grad=True), torch.zeros(3, requires_grad=True)
    with pytest.raises(ValueError, match=message):
        ot.SGD([{"params": [ta]}, {"params": [tb], "dampening": nan}], lr=0.1, momentum=0.9)
    opt = optcore.SGD([a], lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match=message):
        opt.add_param_group({"params": [b], "dampening": nan})
    assert len(opt.param_groups) == 1
