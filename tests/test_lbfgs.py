"""LBFGS in both APIs against torch.optim.LBFGS: signature, defaults, errors,
state keys and state_dict layout, results step after step on Rosenbrock (2-D
and 100-D) and a small MLP, with and without the strong-Wolfe line search.

optcore.torch.LBFGS runs the same tensor operations as torch.optim.LBFGS in the
same order: its runs must agree to the last bits (the tolerances below are far
tighter than the dtype's). The NumPy optcore.LBFGS differs from torch by the
rounding of its dot products and axpys (torch fuses ``y + a x``); L-BFGS at a
fixed step on Rosenbrock amplifies such differences, so its parity is checked
one step at a time from torch's own state (each step: up to max_iter
iterations), within NUMPY_RTOL."""

import copy
import inspect

import numpy as np
import pytest

import optcore

torch = pytest.importorskip("torch")
ot = pytest.importorskip("optcore.torch")

pytestmark = pytest.mark.torch

DTYPES = [torch.float64, torch.float32]
NP = {torch.float32: np.float32, torch.float64: np.float64}
#: optcore.torch vs torch.optim (the same operations): relative to the scale.
TORCH_RTOL = {torch.float64: 1e-13, torch.float32: 1e-6}
#: optcore (NumPy) vs torch.optim, one step from the same state.
NUMPY_RTOL = {torch.float64: 1e-12, torch.float32: 1e-5}
NUMPY_STEPS = 12
LINE_SEARCHES = [None, "strong_wolfe"]
STEPS = 4


# ---- the problems: functions of a list of tensors ------------------------------

def rosenbrock(xs):
    x = xs[0]
    return (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum()


_GEN = torch.Generator().manual_seed(0)
_X = torch.randn(16, 3, generator=_GEN, dtype=torch.float64)
_Y = torch.sin(_X.sum(1, keepdim=True))
_MLP_INIT = [torch.randn(3, 8, generator=_GEN, dtype=torch.float64) * 0.5,
             torch.zeros(8, dtype=torch.float64),
             torch.randn(8, 1, generator=_GEN, dtype=torch.float64) * 0.5,
             torch.zeros((), dtype=torch.float64)]


def mlp(ps):
    w1, b1, w2, b2 = ps
    x, y = _X.to(w1.dtype), _Y.to(w1.dtype)
    return ((torch.tanh(x @ w1 + b1) @ w2 + b2 - y) ** 2).mean()


PROBLEMS = {
    "rosenbrock2": (rosenbrock, lambda: [torch.tensor([-1.5, 2.0], dtype=torch.float64)]),
    "rosenbrock100": (rosenbrock, lambda: [torch.linspace(-1.2, 1.4, 100,
                                                          dtype=torch.float64)]),
    "mlp": (mlp, lambda: [t.clone() for t in _MLP_INIT]),
}
CASES = [pytest.param(name, ls, dtype, id=f"{name}-{ls}-{str(dtype)[6:]}")
         for name in PROBLEMS for ls in LINE_SEARCHES for dtype in DTYPES]


def _torch_params(name, dtype):
    return [torch.nn.Parameter(t.to(dtype)) for t in PROBLEMS[name][1]()]


def _torch_closure(opt, fn, params):
    def closure():
        opt.zero_grad()
        loss = fn(params)
        loss.backward()
        return loss
    return closure


def _numpy_closure(fn, arrays):
    def closure():
        ts = [torch.from_numpy(a.copy()).requires_grad_() for a in arrays]
        loss = fn(ts)
        loss.backward()
        return loss.item(), [t.grad.numpy() for t in ts]
    return closure


def _rel_dev(ref, other):
    worst = 0.0
    for a, b in zip(ref, other, strict=True):
        a = (a.detach() if isinstance(a, torch.Tensor) else torch.from_numpy(a)).double()
        b = (b.detach() if isinstance(b, torch.Tensor) else torch.from_numpy(b)).double()
        scale = a.abs().max().item() if a.numel() else 1.0
        worst = max(worst, (a - b).abs().max().item() / (scale or 1.0) if a.numel() else 0.0)
    return worst


def _assert_same_state(ref, got, rtol):
    """Same keys in the same order, same value types, values within rtol."""
    assert list(ref) == list(got)
    for key in ref:
        a, b = ref[key], got[key]
        assert type(a) is type(b), key
        if isinstance(a, list):
            assert len(a) == len(b), key
            for x, y in zip(a, b):
                assert type(x) is type(y), key
                if x is not None:
                    assert x.dtype == y.dtype and x.shape == y.shape, key
                    assert _rel_dev([x], [y]) <= rtol, key
        elif isinstance(a, torch.Tensor):
            assert a.dtype == b.dtype and a.shape == b.shape, key
            assert _rel_dev([a], [b]) <= rtol, key
        elif isinstance(a, float):
            assert a == pytest.approx(b, rel=rtol), key
        else:
            assert a == b, key


# ---- signature, defaults, errors ---------------------------------------------

@pytest.mark.parametrize("cls", [ot.LBFGS, optcore.LBFGS])
def test_signature_and_defaults_are_torchs(cls):
    ref = inspect.signature(torch.optim.LBFGS.__init__).parameters
    got = inspect.signature(cls.__init__).parameters
    assert list(ref) == list(got)
    assert [p.default for p in ref.values()] == [p.default for p in got.values()]
    p = torch.nn.Parameter(torch.zeros(2))
    a = torch.optim.LBFGS([p], max_iter=7)
    b = ot.LBFGS([p], max_iter=7)
    assert a.defaults == b.defaults and a.param_groups == b.param_groups
    c = optcore.LBFGS([np.zeros(2)], max_iter=7)
    assert c.defaults == a.defaults


@pytest.mark.parametrize("kwargs, message", [
    (dict(lr=-1.0), "Invalid learning rate: -1.0"),
    (dict(lr=torch.tensor([0.1, 0.2])), "Tensor lr must be 1-element"),
])
def test_bad_options_raise_torchs_errors(kwargs, message):
    p = torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match=message):
        torch.optim.LBFGS([p], **kwargs)
    with pytest.raises(ValueError, match=message):
        ot.LBFGS([p], **kwargs)
    if not isinstance(kwargs["lr"], torch.Tensor):
        with pytest.raises(ValueError, match=message):
            optcore.LBFGS([np.zeros(2)], **kwargs)


def test_one_group_only():
    groups = [{"params": [torch.nn.Parameter(torch.zeros(2))]},
              {"params": [torch.nn.Parameter(torch.zeros(2))], "lr": 0.1}]
    message = r"LBFGS doesn't support per-parameter options \(parameter groups\)"
    with pytest.raises(ValueError, match=message):
        torch.optim.LBFGS(groups)
    with pytest.raises(ValueError, match=message):
        ot.LBFGS(copy.deepcopy(groups))


def test_unknown_line_search_raises_at_step_like_torch():
    for cls in (torch.optim.LBFGS, ot.LBFGS):
        p = torch.nn.Parameter(torch.tensor([-1.5, 2.0]))
        opt = cls([p], line_search_fn="armijo")
        with pytest.raises(RuntimeError, match="only 'strong_wolfe' is supported"):
            opt.step(_torch_closure(opt, rosenbrock, [p]))


@pytest.mark.parametrize("arrays, error, message", [
    ([np.zeros(2, np.int64)], TypeError, "float32 or float64"),
    ([np.zeros(2), np.zeros(2, np.float32)], TypeError, "one dtype"),
    ([], ValueError, "empty parameter list"),
])
def test_numpy_bad_parameters(arrays, error, message):
    with pytest.raises(error, match=message):
        optcore.LBFGS(arrays)


def test_numpy_closure_must_return_loss_and_matching_grads():
    x = np.ones(3)
    with pytest.raises(TypeError, match=r"\(loss, grads\)"):
        optcore.LBFGS([x]).step(lambda: 1.0)
    with pytest.raises(ValueError, match="shape"):
        optcore.LBFGS([x]).step(lambda: (1.0, [np.ones(2)]))
    assert (x == 1).all()


# ---- optcore.torch.LBFGS against torch.optim.LBFGS --------------------------

@pytest.mark.parametrize("name, line_search, dtype", CASES)
def test_torch_class_steps_like_torch(name, line_search, dtype):
    fn = PROBLEMS[name][0]
    ref_params, params = _torch_params(name, dtype), _torch_params(name, dtype)
    ptrs = [p.data_ptr() for p in params]
    ref = torch.optim.LBFGS(ref_params, line_search_fn=line_search, history_size=10)
    opt = ot.LBFGS(params, line_search_fn=line_search, history_size=10)
    for step in range(STEPS):
        ref_loss = ref.step(_torch_closure(ref, fn, ref_params))
        loss = opt.step(_torch_closure(opt, fn, params))
        assert loss.item() == pytest.approx(ref_loss.item(), rel=TORCH_RTOL[dtype])
        assert _rel_dev(ref_params, params) <= TORCH_RTOL[dtype], f"step {step}"
        ref_sd, sd = ref.state_dict(), opt.state_dict()
        assert ref_sd["param_groups"] == sd["param_groups"]
        assert list(ref_sd["state"]) == list(sd["state"]) == [0]
        _assert_same_state(ref_sd["state"][0], sd["state"][0], TORCH_RTOL[dtype])
    # in place: the user's tensors hold the result
    assert [p.data_ptr() for p in params] == ptrs


@pytest.mark.parametrize("line_search", LINE_SEARCHES)
def test_state_dicts_load_both_ways(line_search):
    fn, dtype = mlp, torch.float64
    for first, second in ((torch.optim.LBFGS, ot.LBFGS), (ot.LBFGS, torch.optim.LBFGS)):
        params = _torch_params("mlp", dtype)
        a = first(params, line_search_fn=line_search, max_iter=5)
        for _ in range(2):
            a.step(_torch_closure(a, fn, params))
        twin_params = [torch.nn.Parameter(p.detach().clone()) for p in params]
        b = second(twin_params, line_search_fn=line_search, max_iter=5)
        b.load_state_dict(copy.deepcopy(a.state_dict()))   # (torch shares tensors)
        for _ in range(2):
            a.step(_torch_closure(a, fn, params))
            b.step(_torch_closure(b, fn, twin_params))
        assert _rel_dev(params, twin_params) <= TORCH_RTOL[dtype]
        _assert_same_state(a.state_dict()["state"][0], b.state_dict()["state"][0],
                           TORCH_RTOL[dtype])


def test_torch_class_tolerance_rules_like_torch():
    # a zero gradient stops before any iteration: only the evaluation counts
    for cls in (torch.optim.LBFGS, ot.LBFGS):
        p = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
        opt = cls([p], max_iter=3)
        opt.step(_torch_closure(opt, rosenbrock, [p]))
        assert dict(opt.state[p]) == {"func_evals": 1, "n_iter": 0}
    # max_eval bounds the evaluations of one step
    counts = []
    for cls in (torch.optim.LBFGS, ot.LBFGS):
        p = torch.nn.Parameter(torch.tensor([-1.5, 2.0], dtype=torch.float64))
        opt = cls([p], max_iter=50, max_eval=7, line_search_fn="strong_wolfe")
        opt.step(_torch_closure(opt, rosenbrock, [p]))
        counts.append((opt.state[p]["func_evals"], opt.state[p]["n_iter"]))
    assert counts[0] == counts[1]


def test_torch_class_steps_complex_and_missing_grads_like_torch():
    results = []
    for cls in (torch.optim.LBFGS, ot.LBFGS):
        z = torch.nn.Parameter(torch.tensor([1 + 2j, -0.5j], dtype=torch.complex128))
        unused = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
        opt = cls([z, unused], max_iter=4)

        def closure(opt=opt, z=z):
            opt.zero_grad()
            loss = (z.abs() ** 2 - 1).pow(2).sum()
            loss.backward()
            return loss
        for _ in range(2):
            opt.step(closure)
        results.append(z.detach().clone())
        assert unused.grad is None and (unused == 1).all()
    assert torch.allclose(results[0], results[1], rtol=1e-13, atol=0)


# ---- optcore.LBFGS (NumPy) against torch.optim.LBFGS ----------------------------

def _numpy_state(torch_state, np_dtype):
    """torch.optim.LBFGS's state in the NumPy class's types."""
    def conv(v):
        if isinstance(v, torch.Tensor):
            return v.numpy().copy() if v.dim() else np_dtype(v.item())
        if isinstance(v, list):
            return [conv(x) for x in v]
        return v
    return {k: conv(v) for k, v in torch_state.items()}


@pytest.mark.parametrize("name, line_search, dtype", CASES)
def test_numpy_class_steps_like_torch(name, line_search, dtype):
    fn = PROBLEMS[name][0]
    ref_params = _torch_params(name, dtype)
    options = dict(line_search_fn=line_search, history_size=5, max_iter=1)
    ref = torch.optim.LBFGS(ref_params, **options)
    arrays = [p.detach().numpy().copy() for p in ref_params]
    opt = optcore.LBFGS(arrays, **options)
    for step in range(NUMPY_STEPS):
        # each iteration from torch's own state (see the module docstring)
        sd = ref.state_dict()
        sd["state"] = {k: _numpy_state(v, NP[dtype]) for k, v in sd["state"].items()}
        opt.load_state_dict(sd)
        for a, p in zip(arrays, ref_params):
            a[...] = p.detach().numpy()
        ref_loss = ref.step(_torch_closure(ref, fn, ref_params)).item()
        loss = opt.step(_numpy_closure(fn, arrays))
        assert loss == pytest.approx(ref_loss, rel=NUMPY_RTOL[dtype])
        assert _rel_dev(ref_params, arrays) <= NUMPY_RTOL[dtype], f"step {step}"
        got, want = opt.state[0], ref.state[ref_params[0]]
        assert list(got) == list(want)
        assert got["n_iter"] == want["n_iter"]
        assert len(got["old_dirs"]) == len(want["old_dirs"])
        assert all(a.dtype == NP[dtype] for a in got["old_dirs"])
        assert _rel_dev([want["d"]], [got["d"]]) <= NUMPY_RTOL[dtype]


@pytest.mark.parametrize("line_search", LINE_SEARCHES)
def test_numpy_class_converges_like_torch(line_search):
    # free-running (no state copied between steps) on a well-conditioned run
    ref_params = _torch_params("mlp", torch.float64)
    ref = torch.optim.LBFGS(ref_params, line_search_fn=line_search, max_iter=10)
    arrays = [p.detach().numpy().copy() for p in ref_params]
    opt = optcore.LBFGS(arrays, line_search_fn=line_search, max_iter=10)
    for _ in range(3):
        ref.step(_torch_closure(ref, mlp, ref_params))
        opt.step(_numpy_closure(mlp, arrays))
    assert _rel_dev([p.detach() for p in ref_params], arrays) <= 1e-8


def test_numpy_state_dict_round_trip_continues_identically():
    fn = rosenbrock
    x = np.array([-1.5, 2.0])
    opt = optcore.LBFGS([x], line_search_fn="strong_wolfe", history_size=4)
    opt.step(_numpy_closure(fn, [x]))
    sd = opt.state_dict()
    y = x.copy()
    twin = optcore.LBFGS([y], line_search_fn="strong_wolfe", history_size=4)
    twin.load_state_dict(sd)
    sd["state"][0]["d"][...] = 0            # a deep copy: the optimizer's state is its own
    opt.step(_numpy_closure(fn, [x]))
    twin.step(_numpy_closure(fn, [y]))
    assert np.array_equal(x, y)
    with pytest.raises(ValueError, match="options"):
        twin.load_state_dict({"state": {}, "param_groups": [{"params": [0], "lr": 1}]})
    assert twin.param_groups[0]["history_size"] == 4


def test_numpy_checkpoint_round_trip(tmp_path):
    x = np.array([-1.5, 2.0])
    opt = optcore.LBFGS([x], max_iter=5)
    opt.step(_numpy_closure(rosenbrock, [x]))
    optcore.save(opt, tmp_path / "lbfgs.oc")
    y = x.copy()
    twin = optcore.LBFGS([y], max_iter=5)
    optcore.load(tmp_path / "lbfgs.oc", into=twin)
    opt.step(_numpy_closure(rosenbrock, [x]))
    twin.step(_numpy_closure(rosenbrock, [y]))
    assert np.array_equal(x, y)


def test_torch_save_of_optcore_state_loads_into_torch(tmp_path):
    params = _torch_params("mlp", torch.float32)
    opt = ot.LBFGS(params, max_iter=3, line_search_fn="strong_wolfe")
    opt.step(_torch_closure(opt, mlp, params))
    torch.save(opt.state_dict(), tmp_path / "opt.pt")
    ref = torch.optim.LBFGS(params, max_iter=3, line_search_fn="strong_wolfe")
    ref.load_state_dict(torch.load(tmp_path / "opt.pt"))
    _assert_same_state(opt.state_dict()["state"][0], ref.state_dict()["state"][0], 0.0)
