"""load_state_dict refuses a state_dict of another optimizer, or one with
missing or foreign keys, and changes nothing; in optcore.torch (against
torch.optim's own behaviour) and in the NumPy classes, with the same message.

torch.optim raises a KeyError for a missing key (at the load for a missing
step count, at the next step for a missing option); optcore raises at the load,
a KeyError that is also a ValueError (the type of every other load error).
Group keys that are no optimizer's option (a scheduler's ``initial_lr``) are
kept, as torch keeps them.
"""

import copy

import numpy as np
import pytest

import optcore

torch = pytest.importorskip("torch")
ot = pytest.importorskip("optcore.torch")

pytestmark = pytest.mark.torch

IN_TORCH = ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta", "Adamax", "NAdam",
            "RAdam", "Rprop", "ASGD"]


def _stepped(cls, **kwargs):
    p = torch.nn.Parameter(torch.linspace(-1.0, 1.0, 6).reshape(2, 3))
    opt = cls([p], **kwargs)
    for _ in range(2):
        p.grad = torch.cos(p.detach() * 3.0)
        opt.step()
    return p, opt


def _copy(opt):
    """A deep copy with gradients (deepcopy drops them), so that its step
    reads the state."""
    new = copy.deepcopy(opt)
    for group in new.param_groups:
        for p in group["params"]:
            p.grad = torch.cos(p.detach() * 3.0)
    return new


def _snapshot(opt):
    return copy.deepcopy(opt.state_dict())


def _assert_unchanged(opt, snap):
    now = opt.state_dict()
    assert repr(now["param_groups"]) == repr(snap["param_groups"])
    assert list(now["state"]) == list(snap["state"])
    for k, entry in snap["state"].items():
        assert list(now["state"][k]) == list(entry)
        for key, value in entry.items():
            assert torch.equal(now["state"][k][key], value), key


def _torch_fills(name):
    """The keys torch.optim.<name>.__setstate__ fills, found by loading a
    state_dict without each defaults key."""
    _, ref = _stepped(getattr(torch.optim, name))
    fills = {}
    for key in ref.defaults:
        sd = ref.state_dict()
        del sd["param_groups"][0][key]
        probe = _copy(ref)
        probe.load_state_dict(sd)
        if key in probe.param_groups[0]:
            fills[key] = probe.param_groups[0][key]
    return fills


@pytest.mark.parametrize("name", IN_TORCH)
def test_missing_group_keys_are_filled_or_refused_as_torch(name):
    fills = _torch_fills(name)
    assert "foreach" in fills and "lr" not in fills
    p, opt = _stepped(getattr(ot, name))
    _, ref = _stepped(getattr(torch.optim, name))
    for key in opt.defaults:
        sd = copy.deepcopy(opt.state_dict())
        del sd["param_groups"][0][key]
        if key in fills:
            target = _copy(opt)
            target.load_state_dict(sd)
            assert target.param_groups[0][key] == fills[key], key   # SGD: fused=False
            continue
        torch_opt = _copy(ref)
        torch_opt.load_state_dict(sd)
        try:
            torch_opt.step()
        except KeyError:
            pass
        else:
            # an option torch reads from its defaults only (Adagrad's
            # initial_accumulator_value): loads and steps, as in torch
            target = _copy(opt)
            target.load_state_dict(sd)
            target.step()
            assert key not in target.param_groups[0]
            continue
        # torch raises KeyError at its next step; optcore at the load
        snap = _snapshot(opt)
        with pytest.raises(KeyError, match=f"missing hyperparameter {key!r}") as info:
            opt.load_state_dict(sd)
        assert isinstance(info.value, ValueError)
        _assert_unchanged(opt, snap)
    opt.step()                              # still steps with its own state


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_adam_refuses_an_sgd_state_dict(momentum):
    _, sgd = _stepped(torch.optim.SGD, lr=0.1, momentum=momentum)
    _, ref = _stepped(torch.optim.Adam)
    # torch: a KeyError at the load (no 'step') or at the next step (no 'betas')
    with pytest.raises(KeyError):
        ref.load_state_dict(sgd.state_dict())
        ref.step()
    p, opt = _stepped(ot.Adam)
    snap = _snapshot(opt)
    with pytest.raises(KeyError, match="missing hyperparameter 'betas'"):
        opt.load_state_dict(sgd.state_dict())
    _assert_unchanged(opt, snap)
    before = p.detach().clone()
    opt.step()
    assert opt.state[p]["step"] == 3 and not torch.equal(p.detach(), before)


def test_foreign_option_and_state_key_are_refused_user_keys_kept():
    p, opt = _stepped(ot.Adam)
    snap = _snapshot(opt)
    sd = copy.deepcopy(opt.state_dict())
    sd["param_groups"][0]["momentum"] = 0.9
    with pytest.raises(ValueError, match=r"\['momentum'\] are not options of Adam"):
        opt.load_state_dict(sd)
    sd = copy.deepcopy(opt.state_dict())
    sd["state"][0]["momentum_buffer"] = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"has unknown keys \['momentum_buffer'\]"):
        opt.load_state_dict(sd)
    _assert_unchanged(opt, snap)
    sd = copy.deepcopy(opt.state_dict())
    sd["param_groups"][0]["initial_lr"] = 1e-3          # a scheduler's key
    opt.load_state_dict(sd)
    assert opt.param_groups[0]["initial_lr"] == 1e-3


def test_missing_state_key_raises_like_torch():
    _, ref = _stepped(torch.optim.Adam)
    p, opt = _stepped(ot.Adam)
    sd = copy.deepcopy(opt.state_dict())
    del sd["state"][0]["exp_avg_sq"]
    torch_opt = _copy(ref)
    torch_opt.load_state_dict(sd)
    with pytest.raises(KeyError):
        torch_opt.step()
    snap = _snapshot(opt)
    with pytest.raises(KeyError, match=r"lacks \['exp_avg_sq'\]"):
        opt.load_state_dict(sd)
    _assert_unchanged(opt, snap)
    sd = copy.deepcopy(opt.state_dict())
    del sd["state"][0]["step"]
    with pytest.raises(KeyError):
        _copy(ref).load_state_dict(sd)          # torch: at the load
    with pytest.raises(KeyError, match=r"lacks \['step'\]"):
        opt.load_state_dict(sd)
    _assert_unchanged(opt, snap)


def test_bad_loaded_value_changes_nothing():
    p, opt = _stepped(ot.Adam)
    snap = _snapshot(opt)
    sd = copy.deepcopy(opt.state_dict())
    sd["param_groups"][0]["lr"] = -1.0
    with pytest.raises(ValueError, match="Invalid learning rate"):
        opt.load_state_dict(sd)
    _assert_unchanged(opt, snap)


# ---- the NumPy classes: the same rules, the same messages ----------------------

def _numpy_stepped(cls, **kwargs):
    p = np.linspace(-1.0, 1.0, 6).reshape(2, 3)
    opt = cls([p], **kwargs)
    for _ in range(2):
        opt.step([np.cos(p * 3.0)])
    return opt


def _numpy_error(opt, sd):
    before = copy.deepcopy(opt.state_dict())
    with pytest.raises(ValueError) as info:
        opt.load_state_dict(sd)
    after = opt.state_dict()
    assert repr(after["param_groups"]) == repr(before["param_groups"])
    for k, entry in before["state"].items():
        for key, value in entry.items():
            np.testing.assert_array_equal(after["state"][k][key], value)
    return info.value


def test_numpy_adam_refuses_another_optimizers_state_dict_as_optcore_torch():
    sgd = _numpy_stepped(optcore.SGD, lr=0.1, momentum=0.9)
    err = _numpy_error(_numpy_stepped(optcore.Adam), sgd.state_dict())
    assert isinstance(err, KeyError)
    _, torch_sgd = _stepped(ot.SGD, lr=0.1, momentum=0.9)
    _, torch_adam = _stepped(ot.Adam)
    with pytest.raises(KeyError) as info:
        torch_adam.load_state_dict(torch_sgd.state_dict())
    assert str(err) == str(info.value)


def test_numpy_foreign_keys_refused_user_keys_kept():
    opt = _numpy_stepped(optcore.Adam)
    sd = copy.deepcopy(opt.state_dict())
    sd["param_groups"][0]["nesterov"] = True
    err = _numpy_error(opt, sd)
    assert "['nesterov'] are not options of Adam" in str(err)
    sd = copy.deepcopy(opt.state_dict())
    sd["state"][0]["momentum_buffer"] = np.zeros((2, 3))
    assert "has unknown keys ['momentum_buffer']" in str(_numpy_error(opt, sd))
    sd = copy.deepcopy(opt.state_dict())
    del sd["state"][0]["exp_avg"]
    assert isinstance(_numpy_error(opt, sd), KeyError)
    sd = copy.deepcopy(opt.state_dict())
    sd["param_groups"][0]["initial_lr"] = 1e-3
    opt.load_state_dict(sd)
    assert opt.param_groups[0]["initial_lr"] == 1e-3


def test_mixed_tensor_and_float_betas_refused_as_torch():
    p = torch.zeros(2, requires_grad=True)
    for betas in [(torch.tensor(0.9), 0.99), (0.9, torch.tensor(0.99))]:
        for cls in (torch.optim.Adam, ot.Adam, ot.AdamW):
            with pytest.raises(ValueError, match="betas must be either both floats or both"):
                cls([p], lr=1e-2, betas=betas)
    ot.Adam([p], betas=(torch.tensor(0.9), torch.tensor(0.99))).step()

