"""Helpers for the optcore.torch tests: a small real torch.nn model, training
loops, random optimizer options and comparisons with torch.optim.

Import only from tests that already required torch (the `torch` fixture)."""

import copy

import numpy as np
import pytest
import torch

from support import TORCH_RTOL

# Classes with a torch.optim twin (the rest, Lion and LAMB, are checked
# against optcore.reference).
TORCH_TWINS = ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta", "Adamax",
               "NAdam", "RAdam", "Rprop", "ASGD"]
OPTCORE_ONLY = ["Lion", "LAMB"]

NP_DTYPE = {torch.float32: np.float32, torch.float64: np.float64}

HIDDEN = 32
TABLE = 256
# With this many rows the embedding table (3300 x 10 elements) puts each step
# above the kernels' single-thread threshold (32768 elements), so that the
# multi-threaded kernel path runs (used where a test asks for it: a forward
# and backward pass over 3300 samples costs more).
LARGE_TABLE = 3300


class MLP(torch.nn.Module):
    """The seed's 10 -> ReLU -> 1 MLP, with learned per-sample input offsets
    (an embedding looked up by sample id; rows of samples not in the batch get
    zero gradients) and a learnable scalar output gain (a 0-dim parameter)."""

    def __init__(self, hidden=HIDDEN, table=TABLE):
        super().__init__()
        self.offsets = torch.nn.Embedding(table, 10)
        self.hidden = torch.nn.Linear(10, hidden)
        self.out = torch.nn.Linear(hidden, 1)
        self.gain = torch.nn.Parameter(torch.tensor(1.0))

    def forward(self, batch):
        x, ids = batch
        h = torch.relu(self.hidden(x + 0.1 * self.offsets(ids)))
        return self.gain * self.out(h)


def make_model(rng, dtype, hidden=HIDDEN, table=TABLE):
    """torch's default initialisation, from a seed drawn from `rng`."""
    with torch.random.fork_rng():
        torch.manual_seed(int(rng.integers(2**31)))
        return MLP(hidden, table).to(dtype)


def make_data(rng, dtype, table=TABLE):
    """A batch (features, sample ids) and targets: one sample per table row,
    so that every row has a gradient."""
    x = torch.from_numpy(rng.standard_normal((table, 10))).to(dtype)
    ids = torch.from_numpy(rng.permutation(table))
    y = torch.from_numpy(rng.standard_normal((table, 1))).to(dtype)
    return (x, ids), y


def loss_of(model, X, y):
    return torch.nn.functional.mse_loss(model(X), y)


def train_step(model, opt, X, y):
    """One step; a maximizing optimizer gets the negated loss, so that every
    run descends the same (bounded) loss."""
    opt.zero_grad()
    loss = loss_of(model, X, y)
    (-loss if opt.param_groups[0].get("maximize") else loss).backward()
    opt.step()
    return loss.item()


def step_pair(ref_model, ref_opt, model, opt, X, y):
    """One step of two twin runs on the same gradients: computed on ref_model
    and copied to model (None stays None). Fed their own gradients, two float32
    runs of a ReLU network part after a few dozen steps whenever a unit sits
    on its kink, whatever the optimizer; on one gradient sequence the runs
    differ only by the optimizers' own rounding. Returns ref_model's loss."""
    ref_opt.zero_grad()
    opt.zero_grad()
    loss = loss_of(ref_model, X, y)
    (-loss if ref_opt.param_groups[0].get("maximize") else loss).backward()
    copy_grads(ref_model, model)
    ref_opt.step()
    opt.step()
    return loss.item()


def twin(model):
    return copy.deepcopy(model)


def max_rel_dev(ref_tensors, tensors):
    """max over tensors of max|a - b| / max|a| (the deviation relative to the
    tensor's scale)."""
    worst = 0.0
    for a, b in zip(ref_tensors, tensors, strict=True):
        a, b = a.detach(), b.detach()
        if a.numel() == 0:
            continue
        scale = a.abs().max().item() or 1.0
        worst = max(worst, (a - b).abs().max().item() / scale)
    return worst


def rtol_for(dtype):
    return TORCH_RTOL[NP_DTYPE[dtype]]


# How much further than torch from itself optcore may drift (see bound()).
SENSITIVITY_FACTOR = 100.0


def nudged(model):
    """A twin of `model` with every weight one ulp larger: run with torch.optim
    beside the reference, it measures how far last-bit differences carry."""
    probe = twin(model)
    with torch.no_grad():
        for p in probe.parameters():
            p.copy_(torch.nextafter(p, torch.full_like(p, float("inf"))))
    return probe


def bound(dtype, ref_params, probe_params):
    """The deviation allowed from torch: TORCH_RTOL, or, where the run is so
    ill-conditioned that torch itself started one ulp apart drifts further
    (centered or momentum RMSprop near a plateau, a ReLU unit on its kink),
    SENSITIVITY_FACTOR times that drift."""
    return max(rtol_for(dtype),
               SENSITIVITY_FACTOR * max_rel_dev(list(ref_params), list(probe_params)))


def copy_grads(src_model, dst_model):
    for sp, dp in zip(src_model.parameters(), dst_model.parameters(), strict=True):
        dp.grad = None if sp.grad is None else sp.grad.clone()


def assert_same_state(ref_opt, opt, dtype, rtol=None, loaded=False, probe_opt=None):
    """state_dicts agree: same param_groups, same keys in the same order,
    same tensor dtypes and shapes, values within the torch tolerance.

    loaded: opt's state came through load_state_dict, which (in torch's base
    class) casts scalar state other than `step` to the parameter's dtype
    (NAdam's mu_product becomes float64 for float64 parameters).

    probe_opt: torch.optim run beside ref_opt from weights one ulp away; a
    state buffer may then deviate SENSITIVITY_FACTOR times as far as the
    probe's (as bound() allows for parameters): some states (RMSprop's
    momentum_buffer near a ReLU kink) carry last-bit differences further than
    the parameters do."""
    rtol = rtol_for(dtype) if rtol is None else rtol
    sa, sb = ref_opt.state_dict(), opt.state_dict()
    sp = probe_opt.state_dict()["state"] if probe_opt is not None else None
    assert sa["param_groups"] == sb["param_groups"]
    assert list(sa["state"]) == list(sb["state"])
    for k in sa["state"]:
        a, b = sa["state"][k], sb["state"][k]
        assert list(a) == list(b), f"state keys of param {k}"
        for key in a:
            va, vb = a[key], b[key]
            assert type(va) is type(vb), key
            if isinstance(va, torch.Tensor):
                assert va.shape == vb.shape, key
                if loaded and va.dim() == 0 and key != "step":
                    assert float(va) == pytest.approx(float(vb), rel=1e-6), key
                    continue
                assert va.dtype == vb.dtype, key
                if key == "step":
                    assert torch.equal(va, vb)
                else:
                    dev = max_rel_dev([va], [vb])
                    limit = rtol
                    if sp is not None:
                        limit = max(rtol, SENSITIVITY_FACTOR * max_rel_dev([va], [sp[k][key]]))
                    assert dev <= limit, (f"state[{k}][{key!r}] deviates by {dev:.3g} > "
                                          f"{limit:.3g}")
            else:
                assert va == vb, key


def sample_options(name, rng):
    """Random options for optimizer class `name` (torch.optim's keywords)."""
    def pick(*values):
        return values[int(rng.integers(len(values)))]

    def coin(p=0.5):
        return bool(rng.random() < p)

    def betas(b2=(0.99, 0.999)):
        return (float(pick(0.8, 0.9, 0.95)), float(pick(*b2)))

    wd = float(pick(0.0, 0.0, 1e-2, 0.1))
    maximize = coin(0.25)
    if name == "SGD":
        momentum = float(pick(0.0, 0.5, 0.9))
        nesterov = momentum > 0 and coin()
        return dict(lr=float(pick(1e-2, 3e-2)), momentum=momentum,
                    dampening=0.0 if nesterov else float(pick(0.0, 0.1)),
                    nesterov=nesterov, weight_decay=wd, maximize=maximize)
    if name in ("Adam", "AdamW"):
        opts = dict(lr=float(pick(1e-3, 1e-2)), betas=betas(), eps=float(pick(1e-8, 1e-6)),
                    weight_decay=wd, amsgrad=coin(), maximize=maximize)
        if name == "Adam":
            opts["decoupled_weight_decay"] = coin(0.3)
        return opts
    if name == "RMSprop":
        return dict(lr=float(pick(1e-3, 1e-2)), alpha=float(pick(0.9, 0.99)),
                    eps=float(pick(1e-8, 1e-6)), weight_decay=wd,
                    momentum=float(pick(0.0, 0.5, 0.9)), centered=coin(),
                    maximize=maximize)
    if name == "Adagrad":
        return dict(lr=float(pick(1e-2, 5e-2)), lr_decay=float(pick(0.0, 1e-3)),
                    weight_decay=wd, initial_accumulator_value=float(pick(0.0, 0.1)),
                    eps=float(pick(1e-10, 1e-8)), maximize=maximize)
    if name == "Adadelta":
        return dict(lr=float(pick(1.0, 0.5)), rho=float(pick(0.9, 0.95)),
                    eps=float(pick(1e-6, 1e-5)), weight_decay=wd, maximize=maximize)
    if name == "Adamax":
        return dict(lr=float(pick(2e-3, 1e-2)), betas=betas(), eps=float(pick(1e-8, 1e-6)),
                    weight_decay=wd, maximize=maximize)
    if name == "NAdam":
        return dict(lr=float(pick(2e-3, 1e-2)), betas=betas(), eps=float(pick(1e-8, 1e-6)),
                    weight_decay=wd, momentum_decay=float(pick(4e-3, 1e-2)),
                    decoupled_weight_decay=coin(), maximize=maximize)
    if name == "RAdam":
        return dict(lr=float(pick(1e-3, 1e-2)), betas=betas(), eps=float(pick(1e-8, 1e-6)),
                    weight_decay=wd, decoupled_weight_decay=coin(), maximize=maximize)
    if name == "Rprop":
        return dict(lr=float(pick(1e-2, 1e-3)), etas=(float(pick(0.5, 0.3)), float(pick(1.2, 1.5))),
                    step_sizes=(float(pick(1e-6, 1e-4)), float(pick(50.0, 1.0))),
                    maximize=maximize)
    if name == "ASGD":
        return dict(lr=float(pick(1e-2, 5e-2)), lambd=float(pick(1e-4, 1e-2)),
                    alpha=float(pick(0.75, 0.5)), t0=float(pick(1e6, 2.0)), weight_decay=wd,
                    maximize=maximize)
    if name == "Lion":
        return dict(lr=float(pick(1e-4, 1e-3)), betas=betas((0.98, 0.99)),
                    weight_decay=wd, maximize=maximize)
    if name == "LAMB":
        return dict(lr=float(pick(1e-3, 1e-2)), betas=betas(), eps=float(pick(1e-6, 1e-8)),
                    weight_decay=wd, maximize=maximize)
    raise KeyError(name)


def torch_twin(name, params, options):
    """torch.optim's class with the same options, single-tensor (foreach=False)
    form: the documented update the kernels follow."""
    return getattr(torch.optim, name)(params, foreach=False, **options)
