"""Adafactor: ``optcore.adafactor_step`` against its NumPy twin bit for bit,
its argument checks, and ``optcore.Adafactor`` / ``optcore.torch.Adafactor``
against torch.optim.Adafactor step after step."""

import copy

import numpy as np
import pytest
import torch

import optcore
import optcore.torch as ot
from optcore import reference
from optcore.optim._adafactor import state_shapes
from support import TORCH_RTOL

THRESHOLD = optcore.get_parallel_threshold()
SHAPES = [(), (1,), (8,), (16,), (17,), (2, 4), (4, 4), (3, 5), (2, 2, 4), (2, 3, 5),
          (THRESHOLD - 1,), (THRESHOLD + 3,), (128, THRESHOLD // 128),
          (3, 181, 61), (1, 5000), (5000, 7), (2, 3, 4, 5)]
OPTIONS = [
    {},
    {"maximize": True},
    {"weight_decay": 0.1, "lr": 0.3},
    {"eps1": 1e-3, "eps2": 0.5},
    {"eps1": 0.0, "eps2": 0.0},
    {"d": 1.5, "beta2_decay": -1.0},
    {"maximize": True, "weight_decay": 0.05, "eps1": 1e-4, "d": 1.2, "beta2_decay": -0.5,
     "lr": 0.02},
]
DTYPES = [np.float32, np.float64]


def _state(rng, shape, dtype):
    return {k: rng.random(s).astype(dtype) for k, s in state_shapes(shape).items()}


def _call(fn, p, g, st, **kw):
    fn(p, g, st.get("row_var"), st.get("col_var"), st.get("variance"), **kw)


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request):
    before = optcore.get_num_threads()
    optcore.set_num_threads(request.param)
    yield request.param
    optcore.set_num_threads(before)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_kernel_equals_reference(shape, dtype, threads):
    rng = np.random.default_rng([len(shape), *shape, threads])
    for n, opts in enumerate(OPTIONS):
        p = rng.standard_normal(shape).astype(dtype)
        g = rng.standard_normal(shape).astype(dtype)
        st = _state(rng, shape, dtype)
        p0 = p.copy()
        p2, st2 = p.copy(), {k: v.copy() for k, v in st.items()}
        step = 1 + 3 * n
        _call(optcore.adafactor_step, p, g, st, step=step, **opts)
        _call(reference.adafactor_step, p2, g, st2, step=step, **opts)
        assert p.tobytes() == p2.tobytes(), opts
        for k in st:
            assert st[k].tobytes() == st2[k].tobytes(), (k, opts)
        assert not np.array_equal(p, p0)        # the step did move the parameter


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_kernel_lists_equal_reference(dtype, threads):
    rng = np.random.default_rng(7)
    shapes = [(5,), (3, 4), (), (2, 3, 8), (THRESHOLD + 5,)]
    ps = [rng.standard_normal(s).astype(dtype) for s in shapes]
    gs = [rng.standard_normal(s).astype(dtype) for s in shapes]
    sts = [_state(rng, s, dtype) for s in shapes]
    ps2 = [p.copy() for p in ps]
    sts2 = [{k: v.copy() for k, v in st.items()} for st in sts]
    for fn, pp, ss in ((optcore.adafactor_step, ps, sts),
                       (reference.adafactor_step, ps2, sts2)):
        fn(pp, gs, [s.get("row_var") for s in ss], [s.get("col_var") for s in ss],
           [s.get("variance") for s in ss], step=4, maximize=True, weight_decay=0.1)
    for a, b in zip(ps + [v for s in sts for v in s.values()],
                    ps2 + [v for s in sts2 for v in s.values()]):
        assert a.tobytes() == b.tobytes()


def test_thread_counts_give_the_same_bits():
    rng = np.random.default_rng(3)
    shape = (64, 2 * THRESHOLD // 64 + 3)
    p0, g = rng.standard_normal(shape), rng.standard_normal(shape)
    st0 = _state(rng, shape, np.float64)
    out = []
    before = optcore.get_num_threads()
    try:
        for nt in (1, 2):
            optcore.set_num_threads(nt)
            p, st = p0.copy(), {k: v.copy() for k, v in st0.items()}
            _call(optcore.adafactor_step, p, g, st, step=2)
            out.append((p.tobytes(), st["row_var"].tobytes(), st["col_var"].tobytes()))
    finally:
        optcore.set_num_threads(before)
    assert out[0] == out[1]


def test_state_shapes_are_torchs():
    for shape in [(3,), (4, 5), (2, 4, 5)]:
        p = torch.nn.Parameter(torch.randn(shape))
        p.grad = torch.randn(shape)
        opt = torch.optim.Adafactor([p])
        opt.step()
        assert {k: tuple(v.shape) for k, v in opt.state[p].items() if k != "step"} \
            == state_shapes(shape)


def _args():
    p, g = np.ones((2, 3)), np.ones((2, 3))
    return p, g, np.zeros((2, 1)), np.zeros((1, 3))


@pytest.mark.parametrize("change, error, match", [
    (dict(step=0), ValueError, "step"),
    (dict(lr=-1.0), ValueError, "Learning rate"),
    (dict(beta2_decay=0.5), ValueError, "beta2_decay"),
    (dict(eps1=-1.0), ValueError, "epsilon1"),
    (dict(eps2=-1.0), ValueError, "epsilon2"),
    (dict(d=0.5), ValueError, "Clipping threshold d"),
    (dict(weight_decay=-0.1), ValueError, "weight_decay"),
    (dict(lr="x"), TypeError, "lr"),
    (dict(maximize="yes"), TypeError, "maximize"),
])
def test_bad_options_raise_before_writing(change, error, match):
    p, g, r, c = _args()
    kw = {"step": 1, **change}
    with pytest.raises(error, match=match):
        optcore.adafactor_step(p, g, r, c, **kw)
    assert (p == 1).all() and (r == 0).all() and (c == 0).all()


def test_bad_buffers_raise_naming_the_argument():
    p, g, r, c = _args()
    cases = [
        ((p, g, None, c), ValueError, "row_var"),
        ((p, g, r, None), ValueError, "col_var"),
        ((p, g, np.zeros((2, 3)), c), ValueError, "row_var"),
        ((p, g, r, np.zeros((3, 1))), ValueError, "col_var"),
        ((p, g, r, c, np.zeros((2, 3))), ValueError, "variance"),
        ((p, g.astype(np.float32), r, c), TypeError, "grad"),
        ((p, np.ones((3, 2)), r, c), ValueError, "grad"),
        ((p, g, r.astype(np.float32), c), TypeError, "row_var"),
        ((p.T, g.T, r, c), ValueError, "param"),
        ((p, g, r, r), ValueError, "col_var"),
        ((np.ones(3), np.ones(3)), ValueError, "variance"),
        ((np.ones(3), np.ones(3), np.zeros((3, 1)), None, np.zeros(3)), ValueError, "row_var"),
        (([p, np.ones(3)], [g, np.ones(3)], [r, None], [c, None], [None, np.zeros(2)]),
         ValueError, r"variance\[1\]"),
    ]
    for args, error, match in cases:
        with pytest.raises(error, match=match):
            optcore.adafactor_step(*args, step=1)
    ro = r.copy()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="row_var"):
        optcore.adafactor_step(p, g, ro, c, step=1)
    # a list whose second tensor is bad: the first is not written either
    with pytest.raises(ValueError, match=r"col_var\[1\]"):
        optcore.adafactor_step([p, p.copy()], [g, g], [r, r.copy()], [c, None], step=1)
    assert (p == 1).all() and (r == 0).all() and (c == 0).all()


def test_empty_parameter_is_left_alone():
    p, g = np.zeros((0, 3)), np.zeros((0, 3))
    optcore.adafactor_step(p, g, np.zeros((0, 1)), np.zeros((1, 3)), step=1)
    reference.adafactor_step(p, g, np.zeros((0, 1)), np.zeros((1, 3)), step=1)


# ---- the classes against torch.optim.Adafactor -------------------------------

TORCH_OPTIONS = [
    {},
    {"maximize": True},
    {"weight_decay": 0.1, "lr": 0.05},
    {"eps": (1e-3, 1e-3)},
    {"eps": (None, 0.1), "d": 1.5, "beta2_decay": -1.0},
    {"maximize": True, "weight_decay": 0.2, "eps": (1e-6, 1e-2), "lr": torch.tensor(0.02)},
]
TORCH_SHAPES = [(), (6,), (4, 5), (2, 3, 4), (1, 7)]


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-3))) if a.size else 0.0


@pytest.mark.parametrize("tdtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("kw", TORCH_OPTIONS, ids=lambda kw: ",".join(kw) or "default")
def test_classes_step_like_torch(kw, tdtype):
    rtol = TORCH_RTOL[np.float32 if tdtype == torch.float32 else np.float64]
    gen = torch.Generator().manual_seed(len(kw))
    ref = [torch.nn.Parameter(torch.randn(s, generator=gen, dtype=tdtype))
           for s in TORCH_SHAPES]
    mine = [torch.nn.Parameter(p.detach().clone()) for p in ref]
    arrays = [p.detach().numpy().copy() for p in ref]
    ref_opt = torch.optim.Adafactor(ref, **kw)
    opt = ot.Adafactor(mine, **kw)
    np_kw = {k: (float(v) if torch.is_tensor(v) else v) for k, v in kw.items()}
    # torch computes the step's scalars from a float32 tensor lr in float32
    # (optcore.torch does too); the NumPy class takes the float
    np_rtol = max(rtol, 1e-6) if torch.is_tensor(kw.get("lr")) else rtol
    np_opt = optcore.Adafactor(arrays, **np_kw)
    for step in range(12):
        grads = [torch.randn(s, generator=gen, dtype=tdtype) for s in TORCH_SHAPES]
        if step % 3 == 2:
            grads[1] = None                      # a parameter that falls behind
        for ps in (ref, mine):
            for p, g in zip(ps, grads):
                p.grad = None if g is None else g.clone()
        ref_opt.step()
        opt.step()
        np_opt.step([None if g is None else g.numpy().copy() for g in grads])
        for i, (r, m, a) in enumerate(zip(ref, mine, arrays)):
            assert _rel(m.detach(), r.detach()) <= rtol, (step, i)
            assert _rel(a, r.detach()) <= np_rtol, (step, i)
            rs, ms, ns = ref_opt.state[r], opt.state[m], np_opt.state[i]
            assert set(rs) == set(ms) == set(ns)
            assert ms["step"].dtype == rs["step"].dtype and ms["step"] == rs["step"]
            assert ns["step"] == int(rs["step"])
            for k in rs:
                if k != "step":
                    assert ms[k].shape == rs[k].shape and ns[k].shape == tuple(rs[k].shape)
                    assert _rel(ms[k], rs[k]) <= rtol and _rel(ns[k], rs[k]) <= np_rtol


def test_state_dicts_move_between_torch_and_optcore():
    gen = torch.Generator().manual_seed(0)
    shapes = [(3, 4), (5,)]
    ref = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in shapes]
    ref_opt = torch.optim.Adafactor(ref, lr=0.05, weight_decay=0.1)
    for _ in range(3):
        for p in ref:
            p.grad = torch.randn(p.shape, generator=gen)
        ref_opt.step()
    mine = [torch.nn.Parameter(p.detach().clone()) for p in ref]
    opt = ot.Adafactor(mine)
    # (a deep copy: torch's load_state_dict keeps the given tensors when their
    # dtype is the parameter's, so the two optimizers would share them)
    opt.load_state_dict(copy.deepcopy(ref_opt.state_dict()))
    arrays = [p.detach().numpy().copy() for p in ref]
    np_opt = optcore.Adafactor(arrays)
    np_opt.load_state_dict({"state": {i: {k: v.numpy() for k, v in e.items()}
                                      for i, e in ref_opt.state_dict()["state"].items()},
                            "param_groups": ref_opt.state_dict()["param_groups"]})
    assert np_opt.state[0]["step"] == 3 and np_opt.param_groups[0]["lr"] == 0.05
    for p in ref:
        p.grad = torch.randn(p.shape, generator=gen)
    for m, r in zip(mine, ref):
        m.grad = r.grad.clone()
    np_grads = [r.grad.numpy().copy() for r in ref]
    ref_opt.step()
    opt.step()
    np_opt.step(np_grads)
    for r, m, a in zip(ref, mine, arrays):
        assert _rel(m.detach(), r.detach()) <= TORCH_RTOL[np.float32]
        assert _rel(a, r.detach()) <= TORCH_RTOL[np.float32]
    back = torch.optim.Adafactor([torch.nn.Parameter(p.detach().clone()) for p in mine])
    back.load_state_dict(opt.state_dict())
    assert repr(back.state_dict()["param_groups"]) == repr(opt.state_dict()["param_groups"])
    twin = optcore.Adafactor([a.copy() for a in arrays])
    twin.load_state_dict(np_opt.state_dict())
    assert twin.state[1]["variance"].tobytes() == np_opt.state[1]["variance"].tobytes()


def test_torch_errors_like_torch():
    p = torch.nn.Parameter(torch.zeros(0, 3))
    p.grad = torch.zeros(0, 3)
    for cls in (torch.optim.Adafactor, ot.Adafactor):
        with pytest.raises(ZeroDivisionError):
            cls([p]).step()
    q = torch.nn.Parameter(torch.randn(4, 3).T)
    q.grad = torch.randn(3, 4)
    with pytest.raises(ValueError, match="contiguous"):
        ot.Adafactor([q]).step()
    h = torch.nn.Parameter(torch.randn(3, dtype=torch.float16))
    h.grad = torch.randn(3, dtype=torch.float16)
    with pytest.raises(TypeError, match="float16"):
        ot.Adafactor([h]).step()
    s = torch.nn.Parameter(torch.randn(3))
    s.grad = torch.randn(3).to_sparse()
    with pytest.raises(RuntimeError, match="sparse gradients"):
        ot.Adafactor([s]).step()
    for kw, match in [({"lr": -1.0}, "Learning rate"), ({"d": 0.5}, "Clipping"),
                      ({"eps": (None, -1.0)}, "epsilon2"),
                      ({"weight_decay": -1.0}, "weight_decay")]:
        for cls in (torch.optim.Adafactor, ot.Adafactor):
            with pytest.raises(ValueError, match=match):
                cls([s], **kw)
        with pytest.raises(ValueError, match=match):
            optcore.Adafactor([np.zeros(2)], **kw)


def test_numpy_class_state_and_signature():
    import inspect
    ref_sig = inspect.signature(torch.optim.Adafactor.__init__)
    for cls in (ot.Adafactor, optcore.Adafactor):
        sig = inspect.signature(cls.__init__)
        assert [(n, p.kind, p.default) for n, p in sig.parameters.items()] == \
            [(n, p.kind, p.default) for n, p in ref_sig.parameters.items()]
    w = np.ones((2, 3), np.float32)
    opt = optcore.Adafactor([w])
    opt.step([np.ones((2, 3), np.float32)])
    assert sorted(opt.state[0]) == ["col_var", "row_var", "step"]
    assert opt.state_dict()["param_groups"][0] == {
        "lr": 1e-2, "beta2_decay": -0.8, "eps": (None, 1e-3), "d": 1.0,
        "weight_decay": 0.0, "foreach": None, "maximize": False, "params": [0]}
