"""optcore.torch against torch.optim: trajectories, state_dicts, schedulers,
parameter groups; and what it refuses (what it cannot update in place), with
clear errors, a step that raises changing nothing. torch is required in CI."""

import copy
import inspect
import io
import warnings

import numpy as np
import pytest

from support import run_python


# ==== trajectories, state_dicts, schedulers, groups ==========================

pytestmark = pytest.mark.torch

STEPS = 100
DTYPE_NAMES = ["float32", "float64"]


@pytest.fixture
def ot(torch):
    import optcore.torch
    return optcore.torch


@pytest.fixture(autouse=True, scope="module")
def _threads():
    """torch's own ops on one thread (the models are tiny; on a busy machine
    its thread pool only adds waiting); optcore's kernels on two, so that the
    large embedding table takes the multi-threaded kernel path."""
    try:
        import torch
    except ImportError:
        yield
        return
    import optcore
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    optcore.set_num_threads(2)
    try:
        yield
    finally:
        optcore.set_num_threads(None)
        torch.set_num_threads(before)


@pytest.fixture
def ts(torch):
    import torch_adapter_support
    return torch_adapter_support


def _dtype(torch, name):
    return getattr(torch, name)


def test_import_optcore_does_not_import_torch():
    code = ("import sys, optcore, optcore.reference; "
            "print('torch' in sys.modules)")
    out = run_python(["-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---- 100-step trajectories ---------------------------------------------------

TWINS = ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta", "Adamax", "NAdam",
         "RAdam", "Rprop", "ASGD"]


@pytest.mark.parametrize("draw", range(2))
@pytest.mark.parametrize("dtype_name", DTYPE_NAMES)
@pytest.mark.parametrize("name", TWINS)
def test_trajectory_matches_torch(torch, ot, ts, rng, name, dtype_name, draw):
    dtype = _dtype(torch, dtype_name)
    options = ts.sample_options(name, rng)
    table = ts.LARGE_TABLE if draw == 0 else ts.TABLE
    ref_model = ts.make_model(rng, dtype, table=table)
    model = ts.twin(ref_model)
    X, y = ts.make_data(rng, dtype, table=table)
    ref_opt = ts.torch_twin(name, ref_model.parameters(), options)
    opt = getattr(ot, name)(model.parameters(), foreach=False, **options)
    probe = ts.nudged(ref_model)
    probe_opt = ts.torch_twin(name, probe.parameters(), options)
    for step in range(1, STEPS + 1):
        ts.step_pair(ref_model, ref_opt, model, opt, X, y)
        ts.copy_grads(ref_model, probe)
        probe_opt.step()
        if step % 10 == 0:
            dev = ts.max_rel_dev(list(ref_model.parameters()), list(model.parameters()))
            limit = ts.bound(dtype, ref_model.parameters(), probe.parameters())
            assert dev <= limit, (f"step {step}: parameters deviate by {dev:.3g} > "
                                  f"{limit:.3g} ({options})")
    ts.assert_same_state(ref_opt, opt, dtype, rtol=limit, probe_opt=probe_opt)


@pytest.mark.parametrize("name", TWINS)
def test_free_running_training_matches_torch(torch, ot, ts, rng, name):
    """Each run on its own gradients, as a training script would (float64:
    in float32 the ReLU kinks carry last-bit differences to ~1e-2 within 100
    steps, for torch against itself as well)."""
    dtype = torch.float64
    options = ts.sample_options(name, rng)
    ref_model = ts.make_model(rng, dtype)
    model = ts.twin(ref_model)
    X, y = ts.make_data(rng, dtype)
    ref_opt = ts.torch_twin(name, ref_model.parameters(), options)
    opt = getattr(ot, name)(model.parameters(), foreach=False, **options)
    probe = ts.nudged(ref_model)
    probe_opt = ts.torch_twin(name, probe.parameters(), options)
    for _ in range(STEPS):
        ref_loss = ts.train_step(ref_model, ref_opt, X, y)
        loss = ts.train_step(model, opt, X, y)
        ts.train_step(probe, probe_opt, X, y)
    limit = ts.bound(dtype, ref_model.parameters(), probe.parameters())
    assert loss == pytest.approx(ref_loss, rel=limit)
    dev = ts.max_rel_dev(list(ref_model.parameters()), list(model.parameters()))
    assert dev <= limit, f"parameters deviate by {dev:.3g} > {limit:.3g} ({options})"
    ts.assert_same_state(ref_opt, opt, dtype, rtol=limit, probe_opt=probe_opt)


def _reference_step(kernel, name, params, states, step, options):
    """optcore.reference's functional step on each tensor (the truth for the
    optimizers torch.optim lacks), state in NumPy arrays."""
    opts = dict(options)
    beta1, beta2 = opts.pop("betas")
    for p, st in zip(params, states):
        bufs = [st["exp_avg"]] + ([st["exp_avg_sq"]] if name == "LAMB" else [])
        kernel(p.detach().numpy(), p.grad.numpy(), *bufs, step=step, beta1=beta1,
               beta2=beta2, **opts)


@pytest.mark.parametrize("dtype_name", DTYPE_NAMES)
@pytest.mark.parametrize("name", ["Lion", "LAMB"])
def test_trajectory_matches_reference(torch, ot, ts, rng, name, dtype_name):
    import optcore.reference
    dtype = _dtype(torch, dtype_name)
    options = ts.sample_options(name, rng)
    ref_model = ts.make_model(rng, dtype, table=ts.LARGE_TABLE)
    model = ts.twin(ref_model)
    X, y = ts.make_data(rng, dtype, table=ts.LARGE_TABLE)
    kernel = getattr(optcore.reference, f"{name.lower()}_step")
    ref_params = list(ref_model.parameters())
    states = [{k: np.zeros(tuple(p.shape), ts.NP_DTYPE[dtype])
               for k in ("exp_avg", "exp_avg_sq")} for p in ref_params]
    opt = getattr(ot, name)(model.parameters(), **options)
    for step in range(1, STEPS + 1):
        opt.zero_grad()
        for p in ref_params:
            p.grad = None
        loss = ts.loss_of(ref_model, X, y)
        (-loss if options["maximize"] else loss).backward()
        for rp, p in zip(ref_params, model.parameters()):
            p.grad = rp.grad.clone()
        with torch.no_grad():
            _reference_step(kernel, name, ref_params, states, step, options)
        opt.step()
    dev = ts.max_rel_dev(ref_params, list(model.parameters()))
    assert dev <= ts.rtol_for(dtype), f"parameters deviate by {dev:.3g} ({options})"
    for p, st in zip(model.parameters(), states):
        state = opt.state[p]
        assert float(state["step"]) == STEPS
        for key, ref in st.items():
            if key in state:
                assert ts.max_rel_dev([torch.from_numpy(ref)], [state[key]]) <= \
                    ts.rtol_for(dtype), key


# ---- state_dict round trips -----------------------------------------------

def _round_trip(torch, sd):
    """torch.save / torch.load (weights_only, torch's safe default)."""
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("direction", ["torch_to_optcore", "optcore_to_torch"])
@pytest.mark.parametrize("dtype_name", DTYPE_NAMES)
@pytest.mark.parametrize("name", TWINS)
def test_state_dict_moves_between_torch_and_optcore(torch, ot, ts, rng, name, dtype_name,
                                                    direction):
    """Train 20 steps with one implementation, save, load into the other and
    continue 20 steps: the same as the first implementation continuing."""
    dtype = _dtype(torch, dtype_name)
    options = ts.sample_options(name, rng)
    model = ts.make_model(rng, dtype, hidden=16)
    X, y = ts.make_data(rng, dtype)
    make_torch = lambda m: ts.torch_twin(name, m.parameters(), options)  # noqa: E731
    make_optcore = lambda m: getattr(ot, name)(m.parameters(), foreach=False,  # noqa: E731
                                               **options)
    first, second = ((make_torch, make_optcore) if direction == "torch_to_optcore"
                     else (make_optcore, make_torch))
    opt = first(model)
    for _ in range(20):
        ts.train_step(model, opt, X, y)
    saved_model = _round_trip(torch, model.state_dict())
    saved_opt = _round_trip(torch, opt.state_dict())

    resumed = ts.twin(model)
    resumed.load_state_dict(saved_model)
    resumed_opt = second(resumed)
    resumed_opt.load_state_dict(saved_opt)
    for _ in range(20):
        ts.step_pair(model, opt, resumed, resumed_opt, X, y)
    dev = ts.max_rel_dev(list(model.parameters()), list(resumed.parameters()))
    assert dev <= ts.rtol_for(dtype), f"deviation {dev:.3g} after resuming ({options})"
    ts.assert_same_state(opt, resumed_opt, dtype, loaded=True)


@pytest.mark.parametrize("name", TWINS + ["Lion", "LAMB"])
def test_state_dict_round_trip_continues_exactly(torch, ot, ts, rng, name):
    """optcore -> torch.save/load -> optcore resumes bit for bit."""
    dtype = torch.float32
    options = ts.sample_options(name, rng)
    model = ts.make_model(rng, dtype, hidden=16)
    X, y = ts.make_data(rng, dtype)
    opt = getattr(ot, name)(model.parameters(), **options)
    for _ in range(10):
        ts.train_step(model, opt, X, y)
    resumed = ts.twin(model)
    resumed_opt = getattr(ot, name)(resumed.parameters(), **options)
    resumed_opt.load_state_dict(_round_trip(torch, opt.state_dict()))
    for _ in range(10):
        ts.train_step(model, opt, X, y)
        ts.train_step(resumed, resumed_opt, X, y)
    for a, b in zip(model.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


def test_state_layout_matches_torch_before_any_step(torch, ot, ts, rng):
    # Adagrad creates its state at construction; the others on the first step.
    for name in TWINS:
        model = ts.make_model(rng, torch.float32, hidden=8)
        ref = ts.torch_twin(name, model.parameters(), {})
        opt = getattr(ot, name)(model.parameters(), foreach=False)
        ts.assert_same_state(ref, opt, torch.float32)
        assert ref.defaults == opt.defaults


def test_loaded_state_from_older_torch_without_tensor_step(torch, ot, ts, rng):
    """Old torch state_dicts stored `step` as a Python number; loading
    converts it to a tensor, as torch does."""
    model = ts.make_model(rng, torch.float32, hidden=8)
    X, y = ts.make_data(rng, torch.float32)
    opt = ot.Adam(model.parameters(), lr=1e-2)
    ts.train_step(model, opt, X, y)
    sd = opt.state_dict()
    for st in sd["state"].values():
        st["step"] = float(st["step"])
    del sd["param_groups"][0]["decoupled_weight_decay"]
    opt2 = ot.Adam(ts.twin(model).parameters(), lr=1e-2)
    opt2.load_state_dict(sd)
    for st in opt2.state.values():
        assert isinstance(st["step"], torch.Tensor) and st["step"].dtype == torch.float32
    assert opt2.param_groups[0]["decoupled_weight_decay"] is False


# ---- lr schedulers -----------------------------------------------------------

def _schedulers(L):
    return {
        "LambdaLR": lambda o: L.LambdaLR(o, lambda e: 0.95 ** e),
        "MultiplicativeLR": lambda o: L.MultiplicativeLR(o, lambda e: 0.97),
        "StepLR": lambda o: L.StepLR(o, step_size=7, gamma=0.5),
        "MultiStepLR": lambda o: L.MultiStepLR(o, milestones=[5, 15, 25], gamma=0.3),
        "ConstantLR": lambda o: L.ConstantLR(o, factor=0.5, total_iters=10),
        "LinearLR": lambda o: L.LinearLR(o, start_factor=0.1, total_iters=20),
        "ExponentialLR": lambda o: L.ExponentialLR(o, gamma=0.95),
        "SequentialLR": lambda o: L.SequentialLR(
            o, [L.LinearLR(o, start_factor=0.1, total_iters=10),
                L.CosineAnnealingLR(o, T_max=20)], milestones=[10]),
        "CosineAnnealingLR": lambda o: L.CosineAnnealingLR(o, T_max=20, eta_min=1e-4),
        "ChainedScheduler": lambda o: L.ChainedScheduler(
            [L.ConstantLR(o, factor=0.5, total_iters=5), L.ExponentialLR(o, gamma=0.9)]),
        "ReduceLROnPlateau": lambda o: L.ReduceLROnPlateau(o, factor=0.5, patience=2),
        "CyclicLR": lambda o: L.CyclicLR(o, base_lr=1e-3, max_lr=1e-2, step_size_up=5),
        "CosineAnnealingWarmRestarts": lambda o: L.CosineAnnealingWarmRestarts(
            o, T_0=10, T_mult=2),
        "OneCycleLR": lambda o: L.OneCycleLR(o, max_lr=5e-2, total_steps=40),
        "PolynomialLR": lambda o: L.PolynomialLR(o, total_iters=25, power=2.0),
    }


def test_every_scheduler_class_is_covered(torch):
    L = torch.optim.lr_scheduler
    public = {n for n in L.__all__ if n != "LRScheduler"}
    assert public <= set(_schedulers(L)), public - set(_schedulers(L))


SCHEDULER_NAMES = ["LambdaLR", "MultiplicativeLR", "StepLR", "MultiStepLR", "ConstantLR",
                   "LinearLR", "ExponentialLR", "SequentialLR", "CosineAnnealingLR",
                   "ChainedScheduler", "ReduceLROnPlateau", "CyclicLR",
                   "CosineAnnealingWarmRestarts", "OneCycleLR", "PolynomialLR"]


@pytest.mark.parametrize("opt_name,options", [
    ("SGD", dict(lr=1e-2, momentum=0.9)),
    ("Adam", dict(lr=1e-2)),
], ids=["SGD", "Adam"])
@pytest.mark.parametrize("sched_name", SCHEDULER_NAMES)
def test_lr_scheduler_drives_optcore_like_torch(torch, ot, ts, rng, sched_name, opt_name,
                                                options):
    L = torch.optim.lr_scheduler
    make = _schedulers(L)[sched_name]
    dtype = torch.float64
    ref_model = ts.make_model(rng, dtype, hidden=16)
    model = ts.twin(ref_model)
    X, y = ts.make_data(rng, dtype)
    ref_opt = ts.torch_twin(opt_name, ref_model.parameters(), options)
    opt = getattr(ot, opt_name)(model.parameters(), foreach=False, **options)
    ref_sched, sched = make(ref_opt), make(opt)
    for _ in range(30):
        ts.step_pair(ref_model, ref_opt, model, opt, X, y)
        if sched_name == "ReduceLROnPlateau":
            # A flat metric, so that the plateau logic does reduce the rate.
            ref_sched.step(1.0)
            sched.step(1.0)
        else:
            ref_sched.step()
            sched.step()
        assert [g["lr"] for g in opt.param_groups] == [g["lr"] for g in ref_opt.param_groups]
    dev = ts.max_rel_dev(list(ref_model.parameters()), list(model.parameters()))
    assert dev <= ts.rtol_for(dtype)
    ts.assert_same_state(ref_opt, opt, dtype)


# ---- parameter groups ----------------------------------------------------------

@pytest.mark.parametrize("name", TWINS)
def test_add_param_group_midway(torch, ot, ts, rng, name):
    dtype = torch.float64
    options = ts.sample_options(name, rng)
    ref_model = ts.make_model(rng, dtype, hidden=16)
    model = ts.twin(ref_model)
    X, y = ts.make_data(rng, dtype)

    def build(m, cls):
        opt = cls([m.hidden.weight, m.hidden.bias], foreach=False, **options)
        return opt

    ref_opt = build(ref_model, getattr(torch.optim, name))
    opt = build(model, getattr(ot, name))
    for step in range(30):
        if step == 10:
            extra = dict(lr=options["lr"] * 0.5)
            ref_opt.add_param_group(dict(params=[ref_model.out.weight, ref_model.out.bias,
                                                 ref_model.gain], **extra))
            opt.add_param_group(dict(params=[model.out.weight, model.out.bias,
                                             model.gain], **extra))
        ts.step_pair(ref_model, ref_opt, model, opt, X, y)
    dev = ts.max_rel_dev(list(ref_model.parameters()), list(model.parameters()))
    assert dev <= ts.rtol_for(dtype)
    ts.assert_same_state(ref_opt, opt, dtype)


@pytest.mark.parametrize("name", ["SGD", "Adam", "NAdam", "Adagrad"])
def test_parameters_without_grad_keep_their_own_step(torch, ot, ts, rng, name):
    """A parameter that has no gradient for a while falls behind in step count;
    the group then runs one kernel call per distinct step, like torch."""
    dtype = torch.float64
    options = ts.sample_options(name, rng)
    ref_model = ts.make_model(rng, dtype, hidden=16)
    model = ts.twin(ref_model)
    X, y = ts.make_data(rng, dtype)
    ref_opt = ts.torch_twin(name, ref_model.parameters(), options)
    opt = getattr(ot, name)(model.parameters(), foreach=False, **options)
    for step in range(30):
        for m in (ref_model, model):
            m.out.bias.requires_grad_(step >= 12)
            m.gain.requires_grad_(step < 5 or step >= 20)
        ts.step_pair(ref_model, ref_opt, model, opt, X, y)
    dev = ts.max_rel_dev(list(ref_model.parameters()), list(model.parameters()))
    assert dev <= ts.rtol_for(dtype)
    ts.assert_same_state(ref_opt, opt, dtype)


@pytest.mark.parametrize("name", ["SGD", "Adam", "NAdam"])
def test_group_mixing_float32_and_float64(torch, ot, ts, rng, name):
    """One group, parameters of both dtypes: one kernel call per dtype."""
    options = ts.sample_options(name, rng)
    values = [torch.from_numpy(rng.standard_normal(n)).to(dt)
              for n, dt in ((40, torch.float32), (7, torch.float64),
                            (33, torch.float32), (1, torch.float64))]
    ref = [torch.nn.Parameter(v.clone()) for v in values]
    ours = [torch.nn.Parameter(v.clone()) for v in values]
    ref_opt = ts.torch_twin(name, ref, options)
    opt = getattr(ot, name)(ours, foreach=False, **options)
    for _ in range(20):
        for a, b in zip(ref, ours):
            a.grad = torch.from_numpy(rng.standard_normal(a.shape)).to(a.dtype)
            b.grad = a.grad.clone()
        ref_opt.step()
        opt.step()
    for a, b in zip(ref, ours):
        assert b.dtype == a.dtype
        assert ts.max_rel_dev([a], [b]) <= ts.rtol_for(a.dtype)
    ts.assert_same_state(ref_opt, opt, torch.float32)


def test_named_parameters_and_per_group_options(torch, ot, ts, rng):
    dtype = torch.float32
    ref_model = ts.make_model(rng, dtype, hidden=16)
    model = ts.twin(ref_model)
    X, y = ts.make_data(rng, dtype)

    def groups(m):
        named = list(m.named_parameters())
        return [dict(params=named[:2], lr=1e-2, weight_decay=0.1),
                dict(params=named[2:], lr=3e-3, amsgrad=True)]

    ref_opt = torch.optim.AdamW(groups(ref_model), foreach=False)
    opt = ot.AdamW(groups(model), foreach=False)
    for _ in range(20):
        ts.step_pair(ref_model, ref_opt, model, opt, X, y)
    names = [n for n, _ in model.named_parameters()]
    assert opt.state_dict()["param_groups"][0]["param_names"] == names[:2]
    ts.assert_same_state(ref_opt, opt, dtype)


# ---- API parity ------------------------------------------------------------------

@pytest.mark.parametrize("name", TWINS)
def test_constructor_signature_is_torchs(torch, ot, name):
    def sig(cls):
        return [(p.name, p.kind, p.default)
                for p in inspect.signature(cls.__init__).parameters.values()]
    ours = sig(getattr(ot, name))
    # torch's, then optcore's keyword-only storage options (docs/torch.md,
    # "Low precision")
    storage = [("state_dtype", inspect.Parameter.KEYWORD_ONLY, None),
               ("master_weights", inspect.Parameter.KEYWORD_ONLY, False),
               ("rounding", inspect.Parameter.KEYWORD_ONLY, "nearest"),
               ("seed", inspect.Parameter.KEYWORD_ONLY, 0)]
    assert ours[-4:] == storage
    assert ours[:-4] == sig(getattr(torch.optim, name))


def test_class_hierarchy(torch, ot):
    for name in TWINS + ["Lion", "LAMB"]:
        assert issubclass(getattr(ot, name), torch.optim.Optimizer)
    assert issubclass(ot.AdamW, ot.Adam)


def test_closure_and_return_value(torch, ot, ts, rng):
    dtype = torch.float64
    ref_model = ts.make_model(rng, dtype, hidden=16)
    model = ts.twin(ref_model)
    X, y = ts.make_data(rng, dtype)
    ref_opt = torch.optim.Adam(ref_model.parameters(), lr=1e-2, foreach=False)
    opt = ot.Adam(model.parameters(), lr=1e-2, foreach=False)

    def closure_for(m, o):
        def closure():
            o.zero_grad()
            loss = ts.loss_of(m, X, y)
            loss.backward()
            return loss
        return closure

    for _ in range(5):
        with torch.no_grad():   # the closure runs with grad enabled regardless
            ref_loss = ref_opt.step(closure_for(ref_model, ref_opt))
            loss = opt.step(closure_for(model, opt))
        assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-12)
    assert opt.step() is None


def test_tensor_lr(torch, ot, ts, rng):
    dtype = torch.float64
    ref_model = ts.make_model(rng, dtype, hidden=16)
    model = ts.twin(ref_model)
    X, y = ts.make_data(rng, dtype)
    ref_opt = torch.optim.Adam(ref_model.parameters(), lr=torch.tensor(1e-2), foreach=False)
    opt = ot.Adam(model.parameters(), lr=torch.tensor(1e-2), foreach=False)
    sched = [torch.optim.lr_scheduler.ExponentialLR(o, 0.9) for o in (ref_opt, opt)]
    for _ in range(10):
        ts.step_pair(ref_model, ref_opt, model, opt, X, y)
        for s in sched:
            s.step()
    # torch evaluates lr / bias_correction in the float32 dtype of the lr tensor
    # (optcore in double, from the same float32 lr), hence float32-level agreement.
    assert ts.max_rel_dev(list(ref_model.parameters()), list(model.parameters())) <= 1e-6
    assert isinstance(opt.param_groups[0]["lr"], torch.Tensor)


def test_hooks(torch, ot, ts, rng):
    from torch.optim.optimizer import (register_optimizer_step_post_hook,
                                       register_optimizer_step_pre_hook)
    model = ts.make_model(rng, torch.float32, hidden=8)
    X, y = ts.make_data(rng, torch.float32)
    opt = ot.SGD(model.parameters(), lr=1e-2, momentum=0.9)
    calls = []
    handles = [
        opt.register_step_pre_hook(lambda o, a, k: calls.append("pre")),
        opt.register_step_post_hook(lambda o, a, k: calls.append("post")),
        opt.register_state_dict_pre_hook(lambda o: calls.append("sd_pre")),
        opt.register_state_dict_post_hook(lambda o, sd: calls.append("sd_post")),
        opt.register_load_state_dict_pre_hook(lambda o, sd: calls.append("load_pre")),
        opt.register_load_state_dict_post_hook(lambda o: calls.append("load_post")),
        register_optimizer_step_pre_hook(lambda o, a, k: calls.append("global_pre")),
        register_optimizer_step_post_hook(lambda o, a, k: calls.append("global_post")),
    ]
    try:
        ts.train_step(model, opt, X, y)
        opt.load_state_dict(opt.state_dict())
    finally:
        for h in handles:
            h.remove()
    assert calls == ["global_pre", "pre", "post", "global_post", "sd_pre", "sd_post",
                     "load_pre", "load_post"]
    ts.train_step(model, opt, X, y)
    assert len(calls) == 8


def test_zero_grad_both_modes(torch, ot, ts, rng):
    model = ts.make_model(rng, torch.float32, hidden=8)
    X, y = ts.make_data(rng, torch.float32)
    opt = ot.Adam(model.parameters())
    ts.loss_of(model, X, y).backward()
    opt.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.any() for p in model.parameters())
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_updates_in_place_zero_copy(torch, ot, ts, rng):
    model = ts.make_model(rng, torch.float32, hidden=8)
    X, y = ts.make_data(rng, torch.float32)
    opt = ot.Adam(model.parameters(), lr=1e-2)
    params = list(model.parameters())
    ptrs = [p.data_ptr() for p in params]
    ts.train_step(model, opt, X, y)
    state_ptrs = [opt.state[p]["exp_avg"].data_ptr() for p in params]
    versions = [p._version for p in params]
    before = [p.detach().clone() for p in params]
    ts.train_step(model, opt, X, y)
    assert [p.data_ptr() for p in params] == ptrs
    assert [opt.state[p]["exp_avg"].data_ptr() for p in params] == state_ptrs
    assert all(not torch.equal(a, b) for a, b in zip(before, params))
    # autograd learns of the in-place update (its saved-tensor checks rely on it)
    assert all(p._version > v for p, v in zip(params, versions))


def test_version_bump_catches_stale_graph(torch, ot, ts, rng):
    model = ts.make_model(rng, torch.float32, hidden=8)
    X, y = ts.make_data(rng, torch.float32)
    opt = ot.SGD(model.parameters(), lr=1e-2)
    ts.train_step(model, opt, X, y)
    loss = ts.loss_of(model, X, y)
    opt.step()    # updates the weights the graph saved
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_deepcopy_of_model_and_optimizer_continues_identically(torch, ot, ts, rng):
    model = ts.make_model(rng, torch.float32, hidden=16)
    X, y = ts.make_data(rng, torch.float32)
    opt = ot.Adam(model.parameters(), lr=1e-2, amsgrad=True)
    for _ in range(5):
        ts.train_step(model, opt, X, y)
    model2, opt2 = copy.deepcopy((model, opt))
    for _ in range(5):
        ts.train_step(model, opt, X, y)
        ts.train_step(model2, opt2, X, y)
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.equal(a, b)
        assert a.data_ptr() != b.data_ptr()


def test_empty_and_scalar_parameters(torch, ot):
    empty = torch.nn.Parameter(torch.zeros(0))
    scalar = torch.nn.Parameter(torch.tensor(2.0))
    ref = [torch.nn.Parameter(t.detach().clone()) for t in (empty, scalar)]
    opt = ot.Adam([empty, scalar], lr=0.1)
    ref_opt = torch.optim.Adam(ref, lr=0.1, foreach=False)
    for ps, o in (([empty, scalar], opt), (ref, ref_opt)):
        for _ in range(3):
            for p in ps:
                p.grad = torch.ones_like(p)
            o.step()
    assert torch.equal(scalar, ref[1])
    assert float(opt.state[empty]["step"]) == 3.0


def test_grad_scaler_and_autocast(torch, ot, ts, rng):
    """torch.amp on CPU: bfloat16 autocast, a GradScaler that unscales the
    grads and skips the step whose grads overflowed."""
    ref_model = ts.make_model(rng, torch.float32, hidden=16)
    model = ts.twin(ref_model)
    X, y = ts.make_data(rng, torch.float32)
    for m, opt in ((ref_model, torch.optim.Adam(ref_model.parameters(), lr=1e-2,
                                                foreach=False)),
                   (model, ot.Adam(model.parameters(), lr=1e-2, foreach=False))):
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 16)
        for i in range(12):
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = ts.loss_of(m, X, y)
            scaler.scale(loss.float()).backward()
            if i == 5:
                m.gain.grad.fill_(float("inf"))
            scaler.step(opt)
            scaler.update()
        assert float(opt.state[m.gain]["step"]) == 11     # the overflow step skipped
        assert scaler.get_scale() == 2.0 ** 15
    assert ts.max_rel_dev(list(ref_model.parameters()), list(model.parameters())) <= 1e-4


# ==== refused input; a step that raises changes nothing ======================


ALL = ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta", "Adamax", "NAdam",
       "RAdam", "Rprop", "ASGD", "Lion", "LAMB"]
TWINS_ERRORS = ALL[:-2]


def _bad_params(torch, low_precision=False):
    """(description, tensor, exception type, message fragment); bfloat16 and
    float16 tensors unless the class takes them (``low_precision``:
    tests/test_torch_precision.py)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # torch's sparse-invariants notice
        sparse = torch.sparse_coo_tensor([[0, 2]], [1.0, 2.0], (5,))
    low = [] if low_precision else [
        ("float16", torch.zeros(3, dtype=torch.float16, requires_grad=True), TypeError,
         "dtype torch.float16"),
        ("bfloat16", torch.zeros(3, dtype=torch.bfloat16, requires_grad=True), TypeError,
         "dtype torch.bfloat16"),
    ]
    return [
        *low,
        ("int64", torch.zeros(3, dtype=torch.int64), TypeError, "dtype torch.int64"),
        ("meta", torch.empty(3, device="meta", requires_grad=True), ValueError,
         "device meta"),
        ("sparse", sparse.requires_grad_(), ValueError, "layout torch.sparse_coo"),
        ("overlapping", torch.zeros(1).expand(3).requires_grad_(), ValueError,
         "share memory"),
    ]


@pytest.mark.parametrize("name", ALL)
def test_bad_parameters_rejected_at_construction(torch, ot, name):
    good = torch.zeros(3, requires_grad=True)
    low = True                 # every class here has a tiled kernel
    for what, bad, exc, fragment in _bad_params(torch, low):
        with pytest.raises(exc, match=fragment) as info:
            getattr(ot, name)([good, bad])
        msg = str(info.value)
        assert "param_groups[0]['params'][1]" in msg, what
        assert f"optcore.torch.{name}" in msg, what


def test_bad_parameter_in_added_group_leaves_optimizer_unchanged(torch, ot):
    good = torch.zeros(3, requires_grad=True)
    opt = ot.Adam([good])
    with pytest.raises(TypeError, match=r"param_groups\[1\]\['params'\]\[0\].*int64"):
        opt.add_param_group({"params": [torch.zeros(2, dtype=torch.int64)]})
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
    dict(etas=(1.0, 0.5)), dict(etas=(0.5, 1.0)), dict(etas=(0.0, 1.2)),
]
#: Options a class takes with any value, as torch.optim does: not bad there.
_ANY_VALUE = {("ASGD", "alpha"): "the exponent of eta's decay"}


@pytest.mark.parametrize("name", TWINS_ERRORS)
def test_bad_hyperparameters_rejected_like_torch(torch, ot, name):
    import inspect
    accepted = set(inspect.signature(getattr(torch.optim, name)).parameters)
    checked = 0
    for bad in _BAD_OPTIONS:
        if not set(bad) <= accepted or any((name, k) in _ANY_VALUE for k in bad):
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


@pytest.mark.parametrize("name", [n for n in ALL if n not in ("SGD", "Adagrad")])
def test_sparse_gradient_rejected_before_any_change(torch, ot, name):
    # (SGD and Adagrad take sparse gradients where torch does: tests/test_sparse.py)
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


def test_parameter_storage_swapped_for_non_contiguous_is_picked_up(torch, ot, ts, rng):
    """`p.data = ...` after construction (a column-major storage) is seen at
    the next step, which steps it as torch does (not the stale cached view)."""
    model = ts.make_model(rng, torch.float64, hidden=8)
    ref = copy.deepcopy(model)
    X, y = ts.make_data(rng, torch.float64)
    opt = ot.Adam(model.parameters(), lr=1e-2)
    ref_opt = torch.optim.Adam(ref.parameters(), lr=1e-2)
    for m, o in ((model, opt), (ref, ref_opt)):
        ts.train_step(m, o, X, y)
        w = m.hidden.weight
        w.data = w.data.t().contiguous().t()          # same shape, column-major
        ts.train_step(m, o, X, y)
    assert model.hidden.weight.stride() == (1, model.hidden.weight.shape[0])
    assert ts.max_rel_dev(ref.parameters(), model.parameters()) <= ts.rtol_for(torch.float64)


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


# ==== Rprop's and ASGD's particular rules =====================================

@pytest.mark.parametrize("dtype_name", DTYPE_NAMES)
def test_rprop_non_finite_gradients_step_like_torch(torch, ot, dtype_name):
    """torch.sign(NaN) is 0: a NaN gradient element moves neither its parameter
    nor its step size, and is kept as ``prev``; infinities have a sign. Rprop's
    update is exact (products by the factors, a clamp, +-step_size), so the two
    agree bit for bit."""
    dtype = _dtype(torch, dtype_name)
    start = torch.linspace(-1.0, 1.0, 45, dtype=dtype)
    ours, ref = start.clone().requires_grad_(), start.clone().requires_grad_()
    opt = ot.Rprop([ours], lr=0.1, step_sizes=(1e-3, 0.4))
    ref_opt = torch.optim.Rprop([ref], lr=0.1, step_sizes=(1e-3, 0.4), foreach=False)
    for k in range(6):
        g = torch.sin(start * (k + 2))
        if k % 2 == 0:
            g[::3] = float("nan")
        g[1::11] = float("inf") if k % 3 else -float("inf")
        ours.grad, ref.grad = g.clone(), g.clone()
        opt.step()
        ref_opt.step()
        assert torch.equal(ours, ref), k
        for key in ("prev", "step_size"):
            torch.testing.assert_close(opt.state[ours][key], ref_opt.state[ref][key],
                                       rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("dtype_name", DTYPE_NAMES)
def test_asgd_averages_after_t0_like_torch(torch, ot, ts, rng, dtype_name):
    """Past ``t0`` ASGD's ``mu`` drops below 1 and ``ax`` becomes a running
    average; ``eta`` and ``mu`` are torch's float32 values exactly."""
    dtype = _dtype(torch, dtype_name)
    model = ts.make_model(rng, dtype, hidden=8)
    ref = ts.twin(model)
    X, y = ts.make_data(rng, dtype)
    options = dict(lr=0.05, lambd=0.01, alpha=0.6, t0=3, weight_decay=0.01)
    opt = ot.ASGD(model.parameters(), foreach=False, **options)
    ref_opt = torch.optim.ASGD(ref.parameters(), foreach=False, **options)
    for _ in range(10):
        ts.step_pair(ref, ref_opt, model, opt, X, y)
    ts.assert_same_state(ref_opt, opt, dtype)
    for p, q in zip(ref.parameters(), model.parameters()):
        for key in ("eta", "mu"):
            assert opt.state[q][key].item() == ref_opt.state[p][key].item(), key
        assert ref_opt.state[p]["mu"].item() < 1.0
