"""optcore.torch refuses what it cannot update in place, with clear errors,
and a step that raises changes nothing."""

import warnings

import pytest

pytestmark = pytest.mark.torch

ALL = ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta", "Adamax", "NAdam",
       "RAdam", "Lion", "LAMB"]
TWINS = ALL[:-2]


@pytest.fixture
def ot(torch):
    import optcore.torch
    return optcore.torch


@pytest.fixture
def ts(torch):
    import torch_adapter_support
    return torch_adapter_support


def _bad_params(torch):
    """(description, tensor, exception type, message fragment)."""
    base = torch.randn(6, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # torch's sparse-invariants notice
        sparse = torch.sparse_coo_tensor([[0, 2]], [1.0, 2.0], (5,))
    return [
        ("float16", torch.zeros(3, dtype=torch.float16, requires_grad=True), TypeError,
         "dtype torch.float16"),
        ("bfloat16", torch.zeros(3, dtype=torch.bfloat16, requires_grad=True), TypeError,
         "dtype torch.bfloat16"),
        ("int64", torch.zeros(3, dtype=torch.int64), TypeError, "dtype torch.int64"),
        ("complex64", torch.zeros(3, dtype=torch.complex64, requires_grad=True), TypeError,
         "dtype torch.complex64"),
        ("meta", torch.empty(3, device="meta", requires_grad=True), ValueError,
         "device meta"),
        ("sparse", sparse.requires_grad_(), ValueError, "layout torch.sparse_coo"),
        ("transposed", base.t().detach().requires_grad_(), ValueError, "not contiguous"),
        ("strided slice", base[:, ::2].detach().requires_grad_(), ValueError,
         "not contiguous"),
        ("channels_last", torch.randn(2, 3, 4, 5).to(memory_format=torch.channels_last)
         .requires_grad_(), ValueError, "not contiguous"),
    ]


@pytest.mark.parametrize("name", ALL)
def test_bad_parameters_rejected_at_construction(torch, ot, name):
    good = torch.zeros(3, requires_grad=True)
    for what, bad, exc, fragment in _bad_params(torch):
        with pytest.raises(exc, match=fragment) as info:
            getattr(ot, name)([good, bad])
        msg = str(info.value)
        assert "param_groups[0]['params'][1]" in msg, what
        assert f"optcore.torch.{name}" in msg, what


def test_bad_parameter_in_added_group_leaves_optimizer_unchanged(torch, ot):
    good = torch.zeros(3, requires_grad=True)
    opt = ot.Adam([good])
    with pytest.raises(TypeError, match=r"param_groups\[1\]\['params'\]\[0\].*float16"):
        opt.add_param_group({"params": [torch.zeros(2, dtype=torch.float16,
                                                    requires_grad=True)]})
    assert len(opt.param_groups) == 1


@pytest.mark.parametrize("name", ALL)
def test_options_that_cannot_be_honoured(torch, ot, name):
    p = [torch.zeros(3, requires_grad=True)]
    cls = getattr(ot, name)
    with pytest.raises(ValueError, match="differentiable=True"):
        cls(p, differentiable=True)
    if "capturable" in cls.__init__.__code__.co_varnames:
        with pytest.raises(ValueError, match="capturable=True"):
            cls(p, capturable=True)
    if "fused" in cls.__init__.__code__.co_varnames:
        cls(p, fused=True)                  # accepted: every step is already fused
        cls(p, fused=False, foreach=True)   # accepted: every step is multi-tensor
        with pytest.raises(RuntimeError, match="cannot be `True` together"):
            cls(p, fused=True, foreach=True)
    # a group option set later is refused at the step, before any write
    opt = cls(p)
    opt.param_groups[0]["differentiable"] = True
    p[0].grad = torch.ones(3)
    with pytest.raises(ValueError, match="differentiable=True"):
        opt.step()
    assert not p[0].any()


_BAD_OPTIONS = [
    dict(lr=-1e-3), dict(lr=float("nan")), dict(eps=-1.0), dict(weight_decay=-0.1),
    dict(betas=(1.0, 0.999)), dict(betas=(0.9, -0.5)), dict(momentum=-0.9),
    dict(alpha=-0.5), dict(rho=1.5), dict(lr_decay=-1.0),
    dict(initial_accumulator_value=-1.0), dict(momentum_decay=-1.0),
    dict(nesterov=True), dict(nesterov=True, momentum=0.9, dampening=0.1),
]


@pytest.mark.parametrize("name", TWINS)
def test_bad_hyperparameters_rejected_like_torch(torch, ot, name):
    import inspect
    accepted = set(inspect.signature(getattr(torch.optim, name)).parameters)
    checked = 0
    for bad in _BAD_OPTIONS:
        if not set(bad) <= accepted:
            continue
        p = [torch.zeros(3, requires_grad=True)]
        try:
            getattr(torch.optim, name)(p, **bad)
        except Exception as exc:
            ref = exc
        else:
            # torch lets it through (e.g. SGD with lr=nan); optcore's kernels
            # would refuse it at the first step, so the constructor does now.
            with pytest.raises(ValueError, match="Invalid"):
                getattr(ot, name)(p, **bad)
            continue
        with pytest.raises(type(ref)) as ours:
            getattr(ot, name)(p, **bad)
        # torch's message, then the shared checks' note naming the argument
        assert str(ours.value).startswith(str(ref)), (bad, str(ours.value))
        checked += 1
    assert checked >= 3


def test_tensor_lr_must_have_one_element(torch, ot):
    with pytest.raises(ValueError, match="Tensor lr must be 1-element"):
        ot.SGD([torch.zeros(2, requires_grad=True)], lr=torch.tensor([0.1, 0.2]))


@pytest.mark.parametrize("name", ALL)
def test_sparse_gradient_rejected_before_any_change(torch, ot, name):
    dense = torch.nn.Parameter(torch.randn(5))
    p = torch.nn.Parameter(torch.randn(5))
    opt = getattr(ot, name)([dense, p], lr=0.1)
    before = opt.state_dict()
    dense.grad = torch.randn(5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p.grad = torch.sparse_coo_tensor([[0, 3]], [1.0, 2.0], (5,))
    values = [dense.detach().clone(), p.detach().clone()]
    with pytest.raises(RuntimeError, match="does not support sparse gradients"):
        opt.step()
    assert torch.equal(dense, values[0]) and torch.equal(p, values[1])
    after = opt.state_dict()
    assert list(after["state"]) == list(before["state"])


def test_parameter_storage_swapped_for_non_contiguous_is_caught(torch, ot, ts, rng):
    """`p.data = ...` after construction is re-checked at the next step."""
    model = ts.make_model(rng, torch.float32, hidden=8)
    X, y = ts.make_data(rng, torch.float32)
    opt = ot.Adam(model.parameters(), lr=1e-2)
    ts.train_step(model, opt, X, y)
    w = model.hidden.weight
    w.data = w.data.t().contiguous().t()          # same shape, column-major
    opt.zero_grad()
    ts.loss_of(model, X, y).backward()
    snapshot = {n: p.detach().clone() for n, p in model.named_parameters()}
    state = {k: v.clone() for k, v in opt.state[model.out.weight].items()}
    with pytest.raises(ValueError, match=r"not contiguous"):
        opt.step()
    for n, p in model.named_parameters():
        assert torch.equal(p, snapshot[n]), n
    for k, v in opt.state[model.out.weight].items():
        assert torch.equal(v, state[k]), k
    # a fresh contiguous storage is picked up (not the stale cached view)
    w.data = w.data.contiguous()
    opt.step()
    assert not torch.equal(model.hidden.weight, snapshot["hidden.weight"])


def test_bad_hyperparameter_at_step_changes_nothing(torch, ot, ts, rng):
    model = ts.make_model(rng, torch.float64, hidden=8)
    X, y = ts.make_data(rng, torch.float64)
    opt = ot.Adam(model.parameters(), lr=1e-2)
    opt.param_groups[0]["lr"] = -1.0
    ts.loss_of(model, X, y).backward()
    snapshot = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match="Invalid learning rate"):
        opt.step()
    assert all(torch.equal(a, b) for a, b in zip(snapshot, model.parameters()))
    assert len(opt.state) == 0        # the state created for the step is gone
    opt.param_groups[0]["lr"] = 1e-2
    opt.step()
    assert all(float(s["step"]) == 1.0 for s in opt.state.values())


def test_loaded_state_of_wrong_shape_is_refused(torch, ot, ts, rng):
    model = ts.make_model(rng, torch.float32, hidden=8)
    X, y = ts.make_data(rng, torch.float32)
    opt = ot.Adam(model.parameters())
    ts.train_step(model, opt, X, y)
    sd = opt.state_dict()
    sd["state"][1]["exp_avg"] = torch.zeros(3)
    opt.load_state_dict(sd)
    ts.loss_of(model, X, y).backward()
    with pytest.raises(ValueError, match=r"state\['exp_avg'\].*shape \(3,\)"):
        opt.step()


def test_overlapping_parameters_are_refused(torch, ot):
    flat = torch.zeros(10)
    a = flat[0:6].requires_grad_()
    b = flat[4:10].requires_grad_()
    opt = ot.SGD([a, b], lr=0.1)
    a.grad = torch.ones(6)
    b.grad = torch.ones(6)
    with pytest.raises(ValueError, match="overlap"):
        opt.step()
    assert not flat.any()


def test_state_moved_to_shared_memory_is_followed(torch, ot, ts, rng):
    """share_memory_() swaps a tensor's storage: the step must write the new
    storage, never a stale view of the old one."""
    model = ts.make_model(rng, torch.float64, hidden=8)
    ref = ts.twin(model)
    X, y = ts.make_data(rng, torch.float64)
    opt = ot.Adagrad(model.parameters(), lr=0.1, foreach=False)
    ref_opt = torch.optim.Adagrad(ref.parameters(), lr=0.1, foreach=False)
    ts.step_pair(ref, ref_opt, model, opt, X, y)
    ptrs = [opt.state[p]["sum"].data_ptr() for p in model.parameters()]
    opt.share_memory()
    assert [opt.state[p]["sum"].data_ptr() for p in model.parameters()] != ptrs
    for _ in range(3):
        ts.step_pair(ref, ref_opt, model, opt, X, y)
    ts.assert_same_state(ref_opt, opt, torch.float64)
    assert ts.max_rel_dev(list(ref.parameters()), list(model.parameters())) <= 1e-12
