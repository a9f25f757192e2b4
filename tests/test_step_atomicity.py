"""A step that raises changes nothing, in both class layers, however many
kernel calls it has: a bad gradient in the LAST tensor of the LAST group of a
multi-group optimizer is refused before the first group's kernel call runs,
every parameter and state byte is as it was, and the next good step equals
the step of an optimizer that never saw the bad one."""

import copy

import numpy as np
import pytest

import optcore
from support import random_array

# (class name, options): Adam-style state, SGD's state made from the first
# gradient, NAdam's extra scalar state, Rprop's state filled with the group's
# lr, ASGD's scalar state starting at the group's lr.
CLASSES = [("Adam", dict(lr=0.1)), ("Adam", dict(lr=0.1, amsgrad=True)),
           ("SGD", dict(lr=0.1, momentum=0.9)), ("NAdam", dict(lr=0.1)),
           ("Rprop", dict(lr=0.1)), ("ASGD", dict(lr=0.1, t0=1))]
IDS = ["Adam", "Adam-amsgrad", "SGD-momentum", "NAdam", "Rprop", "ASGD"]

# Three groups; the last parameter (group 2, index 1) gets the bad gradient.
# Its shape is the first parameter's, so that a view of that parameter (or of
# its state) is a gradient of the right shape.
SHAPES = [[(2, 3)], [(4,), (3, 1)], [(5,), (2, 3)]]
LAST = 4                            # global index of the last parameter


# ---- the NumPy classes ------------------------------------------------------

def numpy_groups(rng):
    groups = [{"params": [random_array(rng, int(np.prod(s)), np.float64).reshape(s)
                          for s in shapes], "lr": 0.05 * (g + 1)}
              for g, shapes in enumerate(SHAPES)]
    # The first parameter lies in a larger buffer, so that a misaligned view
    # over its memory (one byte in) has its shape.
    p0 = groups[0]["params"][0]
    raw = np.zeros(p0.nbytes + p0.itemsize, np.uint8)
    inside = raw[:p0.nbytes].view(p0.dtype).reshape(p0.shape)
    inside[...] = p0
    groups[0]["params"][0] = inside
    return groups


def root_of(a):
    while a.base is not None:
        a = a.base
    return a


def numpy_grads(rng):
    return [random_array(rng, int(np.prod(s)), np.float64).reshape(s)
            for shapes in SHAPES for s in shapes]


def numpy_bytes(opt):
    params = [p.tobytes() for g in opt.param_groups for p in g["params"]]
    state = {i: {k: (v.tobytes() if isinstance(v, np.ndarray) else v)
                 for k, v in st.items()}
             for i, st in opt.state.items()}
    arenas = [{key: a.tobytes() for key, a in arenas.items()} for arenas in opt._arenas]
    return params, state, arenas


def numpy_bad_grads():
    """(what, make(opt, grads) -> bad last gradient, error)."""
    def astype(dtype):
        return lambda opt, grads: grads[LAST].astype(dtype)
    yield "float32", astype(np.float32), TypeError
    yield "int64", astype(np.int64), TypeError
    yield "wrong shape", lambda opt, grads: np.zeros(7), ValueError
    yield "not an array", lambda opt, grads: object(), (TypeError, ValueError)
    yield "a parameter of group 0", lambda opt, grads: opt.param_groups[0]["params"][0], \
        ValueError
    yield "its own parameter", lambda opt, grads: opt.param_groups[2]["params"][1][::-1], \
        ValueError

    def state_of_group_0(opt, grads):
        st = opt.state.get(0)
        if st is None:                       # first step: no state yet
            return opt.param_groups[0]["params"][0]
        kind = next(k for k, v in st.items() if isinstance(v, np.ndarray))
        return st[kind]
    yield "state of group 0", state_of_group_0, ValueError

    def misaligned_over_group_0(opt, grads):
        p0 = opt.param_groups[0]["params"][0]
        bad = np.ndarray(p0.shape, p0.dtype, buffer=root_of(p0), offset=1)
        assert not bad.flags.aligned and np.shares_memory(bad, p0)
        return bad
    yield "misaligned, over a parameter of group 0", misaligned_over_group_0, ValueError


NUMPY_BAD = list(numpy_bad_grads())


@pytest.mark.parametrize("name, opts", CLASSES, ids=IDS)
@pytest.mark.parametrize("what, make, error", NUMPY_BAD, ids=[c[0] for c in NUMPY_BAD])
@pytest.mark.parametrize("steps_before", [0, 2], ids=["first-step", "later-step"])
def test_numpy_bad_last_grad_changes_nothing(name, opts, what, make, error, steps_before,
                                             rng):
    cls = getattr(optcore, name)
    groups = numpy_groups(rng)
    opt, twin = cls(groups, **opts), cls(copy.deepcopy(groups), **opts)
    for _ in range(steps_before):
        grads = numpy_grads(rng)
        opt.step(grads)
        twin.step(grads)
    grads = numpy_grads(rng)
    bad = list(grads)
    bad[LAST] = make(opt, grads)
    before = numpy_bytes(opt)
    with pytest.raises(error):
        opt.step(bad)
    assert numpy_bytes(opt) == before
    if steps_before == 0:
        assert len(opt.state) == 0
    opt.step(grads)
    twin.step(grads)
    assert numpy_bytes(opt)[:2] == numpy_bytes(twin)[:2]


def test_numpy_read_only_last_grad_is_fine(rng):
    groups = numpy_groups(rng)
    opt, twin = optcore.Adam(copy.deepcopy(groups)), optcore.Adam(copy.deepcopy(groups))
    grads = numpy_grads(rng)
    frozen = list(grads)
    frozen[LAST] = grads[LAST].copy()
    frozen[LAST].flags.writeable = False
    opt.step(frozen)
    twin.step(grads)
    assert numpy_bytes(opt)[:2] == numpy_bytes(twin)[:2]


# ---- optcore.torch --------------------------------------------------------------

def torch_model(torch, rng):
    groups = []
    for g, shapes in enumerate(SHAPES):
        params = [torch.nn.Parameter(torch.from_numpy(
            random_array(rng, int(np.prod(s)), np.float32).reshape(s))) for s in shapes]
        groups.append({"params": params, "lr": 0.05 * (g + 1)})
    return groups


def torch_params(groups):
    return [p for g in groups for p in g["params"]]


def set_grads(torch, params, grads):
    for p, g in zip(params, grads):
        p.grad = torch.from_numpy(g.copy())


def torch_grads(rng):
    return [random_array(rng, int(np.prod(s)), np.float32).reshape(s)
            for shapes in SHAPES for s in shapes]


def torch_bytes(opt):
    params = [p.detach().numpy().tobytes() for g in opt.param_groups for p in g["params"]]
    index = {id(p): i for i, p in enumerate(q for g in opt.param_groups for q in g["params"])}
    state = {index[id(p)]: {k: v.detach().numpy().tobytes() for k, v in st.items()}
             for p, st in opt.state.items()}
    return params, state


def torch_bad_grads(torch):
    """(what, spoil(opt, last parameter)): gives the last parameter a bad
    gradient torch accepts (``.data`` bypasses autograd's checks)."""
    def data(make):
        def spoil(opt, p):
            p.grad.data = make(p)
        return spoil
    yield "float64", data(lambda p: p.grad.double())
    yield "wrong size", data(lambda p: torch.zeros(p.numel() + 2))

    def grad_is_group_0_param(opt, p):
        p.grad = opt.param_groups[0]["params"][0].detach()
    yield "a parameter of group 0", grad_is_group_0_param

    def grad_is_own_param(opt, p):
        p.grad = p.detach()
    yield "its own parameter", grad_is_own_param

    def grad_is_group_0_state(opt, p):
        p0 = opt.param_groups[0]["params"][0]
        st = opt.state.get(p0)
        tensors = [v for v in (st or {}).values() if v.shape == p0.shape]
        p.grad = tensors[0] if tensors else p0.detach()
    yield "state of group 0", grad_is_group_0_state


@pytest.mark.parametrize("name, opts", CLASSES, ids=IDS)
@pytest.mark.parametrize("what", ["float64", "wrong size", "a parameter of group 0",
                                  "its own parameter", "state of group 0"])
@pytest.mark.parametrize("steps_before", [0, 2], ids=["first-step", "later-step"])
def test_torch_bad_last_grad_changes_nothing(torch, name, opts, what, steps_before, rng):
    import optcore.torch as ot
    spoil = dict(torch_bad_grads(torch))[what]
    cls = getattr(ot, name)
    groups = torch_model(torch, rng)
    twin_groups = [{**g, "params": [torch.nn.Parameter(p.detach().clone())
                                    for p in g["params"]]} for g in groups]
    opt, twin = cls(groups, **opts), cls(twin_groups, **opts)
    params, twin_params = torch_params(groups), torch_params(twin_groups)
    for _ in range(steps_before):
        grads = torch_grads(rng)
        set_grads(torch, params, grads)
        set_grads(torch, twin_params, grads)
        opt.step()
        twin.step()
    grads = torch_grads(rng)
    set_grads(torch, params, grads)
    spoil(opt, params[LAST])
    before = torch_bytes(opt)
    with pytest.raises((TypeError, ValueError)):
        opt.step()
    assert torch_bytes(opt) == before
    if steps_before == 0:
        assert len(opt.state) == 0
    set_grads(torch, params, grads)
    set_grads(torch, twin_params, grads)
    opt.step()
    twin.step()
    assert torch_bytes(opt) == torch_bytes(twin)
