"""Row-sparse gradients: the kernels against their NumPy twins (bit for bit),
optcore.SparseAdam and optcore.torch's SparseAdam / SGD / Adagrad against
torch.optim with sparse COO gradients, step after step; the refusals."""

import copy
import warnings

import numpy as np
import pytest

import optcore
from optcore import reference
from support import TORCH_RTOL, require_torch

DTYPES = [np.float32, np.float64]
INDICES = np.array([1, 4, 1, 1, 0, 4, 5, 1])        # duplicates, out of order


def _grad(rng, dtype, width=3):
    # magnitudes over six decades, so summation order shows in the bits
    rows = rng.standard_normal((INDICES.size, width)) * 10 ** rng.uniform(-3, 3, (8, 1))
    return INDICES, rows.astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("maximize", [False, True])
def test_kernels_equal_their_twins_bit_for_bit(dtype, maximize):
    rng = np.random.default_rng(0)
    start = rng.standard_normal((6, 3)).astype(dtype)
    fast = [start.copy(), np.zeros_like(start), np.zeros_like(start)]
    slow = [a.copy() for a in fast]
    fast_sum, slow_sum = np.zeros_like(start), np.zeros_like(start)
    fast_a, slow_a, fast_s, slow_s = (start.copy() for _ in range(4))
    for step in range(1, 5):
        idx, rows = _grad(rng, dtype)
        optcore.sparse_adam_rows(*fast[:1], idx, rows, *fast[1:], step=step, lr=0.05,
                                 maximize=maximize)
        reference.sparse_adam_rows(*slow[:1], idx, rows, *slow[1:], step=step, lr=0.05,
                                   maximize=maximize)
        optcore.adagrad_rows(fast_a, idx, rows, fast_sum, step=step, lr=0.1, lr_decay=0.01,
                             maximize=maximize)
        reference.adagrad_rows(slow_a, idx, rows, slow_sum, step=step, lr=0.1,
                               lr_decay=0.01, maximize=maximize)
        optcore.sgd_rows(fast_s, idx, rows, lr=0.1, maximize=maximize)
        reference.sgd_rows(slow_s, idx, rows, lr=0.1, maximize=maximize)
    for a, b in zip([*fast, fast_a, fast_sum, fast_s], [*slow, slow_a, slow_sum, slow_s]):
        np.testing.assert_array_equal(a, b)
    assert np.array_equal(fast[0][[2, 3]], start[[2, 3]])      # untouched rows


def test_large_tables_are_independent_of_the_thread_count():
    rng = np.random.default_rng(1)
    table = rng.standard_normal((4096, 64)).astype(np.float32)
    idx = rng.integers(0, 4096, 3000)
    rows = rng.standard_normal((3000, 64)).astype(np.float32)
    results = []
    try:
        for threads in (1, 2):
            optcore.set_num_threads(threads)
            p, m, v = table.copy(), np.zeros_like(table), np.zeros_like(table)
            optcore.sparse_adam_rows(p, idx, rows, m, v, step=1)
            results.append(p)
    finally:
        optcore.set_num_threads(None)
    np.testing.assert_array_equal(*results)


@pytest.mark.parametrize("bad, error", [
    (dict(indices=[0, 6]), IndexError),
    (dict(indices=[-1, 0]), IndexError),
    (dict(indices=[0.0, 1.0]), TypeError),
    (dict(rows=np.ones((2, 2))), ValueError),
    (dict(rows=np.ones((2, 3), np.float32)), TypeError),
    (dict(exp_avg=np.zeros((6, 2))), ValueError),
    (dict(step=0), ValueError),
])
def test_bad_input_raises_before_writing(bad, error):
    args = dict(param=np.ones((6, 3)), indices=[0, 1], rows=np.ones((2, 3)),
                exp_avg=np.zeros((6, 3)), exp_avg_sq=np.zeros((6, 3)), step=1)
    args.update(bad)
    before = {k: np.copy(v) for k, v in args.items() if isinstance(v, np.ndarray)}
    with pytest.raises(error):
        optcore.sparse_adam_rows(args.pop("param"), args.pop("indices"), args.pop("rows"),
                                 args.pop("exp_avg"), args.pop("exp_avg_sq"), **args)
    assert all(np.array_equal(before[k], v) for k, v in args.items() if k in before)


def test_numpy_class_checks_every_gradient_before_writing():
    a, b = np.zeros((3, 2)), np.zeros((2, 2))
    opt = optcore.SparseAdam([a, b], lr=0.1)
    with pytest.raises(IndexError):
        opt.step([([0], np.ones((1, 2))), ([5], np.ones((1, 2)))])
    assert not a.any() and not opt.state
    with pytest.raises(RuntimeError, match="does not support dense gradients"):
        opt.step([np.ones((3, 2)), None])
    with pytest.raises(ValueError, match="Invalid beta parameter at index 0: 1.0"):
        optcore.SparseAdam([a], betas=(1.0, 0.0))


# ---- against torch.optim -------------------------------------------------------

def _torch():
    require_torch()
    import torch
    warnings.filterwarnings("ignore", "Sparse invariant checks")
    return torch


def _coo(torch, idx, rows, shape):
    return torch.sparse_coo_tensor(torch.tensor(idx)[None], torch.tensor(rows), shape)


def _close(a, b, dtype):
    np.testing.assert_allclose(a, b, rtol=TORCH_RTOL[dtype], atol=TORCH_RTOL[dtype] * 1e-3)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kwargs", [{}, {"lr": 0.05}, {"maximize": True},
                                    {"lr": 0.01, "betas": (0.5, 0.9), "eps": 1e-6}])
def test_sparse_adam_steps_like_torch(dtype, kwargs):
    torch = _torch()
    import optcore.torch as ot
    rng = np.random.default_rng(2)
    start = rng.standard_normal((6, 3)).astype(dtype)
    ref_p, p = torch.nn.Parameter(torch.tensor(start)), torch.nn.Parameter(torch.tensor(start))
    ref, opt = torch.optim.SparseAdam([ref_p], **kwargs), ot.SparseAdam([p], **kwargs)
    table = start.copy()
    numpy_opt = optcore.SparseAdam([table], **kwargs)
    for _ in range(5):
        idx, rows = _grad(rng, dtype)
        ref_p.grad, p.grad = _coo(torch, idx, rows, (6, 3)), _coo(torch, idx, rows, (6, 3))
        ref.step()
        opt.step()
        numpy_opt.step([(idx, rows)])
        for got in (p.detach().numpy(), table):
            _close(got, ref_p.detach().numpy(), dtype)
        for key in ("exp_avg", "exp_avg_sq"):
            _close(opt.state[p][key].numpy(), ref.state[ref_p][key].numpy(), dtype)
            _close(numpy_opt.state[0][key], ref.state[ref_p][key].numpy(), dtype)
        assert opt.state[p]["step"] == ref.state[ref_p]["step"] == numpy_opt.state[0]["step"]
    assert repr(opt.state_dict()["param_groups"]) == repr(ref.state_dict()["param_groups"])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, kwargs", [
    ("SGD", {"lr": 0.1}), ("SGD", {"lr": 0.1, "maximize": True}),
    ("Adagrad", {"lr": 0.1}), ("Adagrad", {"lr": 0.1, "lr_decay": 0.01, "maximize": True}),
    ("Adagrad", {"lr": 0.1, "foreach": True}),
])
def test_sgd_and_adagrad_take_sparse_grads_like_torch(dtype, name, kwargs):
    torch = _torch()
    import optcore.torch as ot
    rng = np.random.default_rng(3)
    start = rng.standard_normal((6, 3)).astype(dtype)
    dense_start = rng.standard_normal(4).astype(dtype)
    twins = []
    for cls in (getattr(torch.optim, name), getattr(ot, name)):
        emb = torch.nn.Parameter(torch.tensor(start))
        dense = torch.nn.Parameter(torch.tensor(dense_start))
        twins.append((cls([emb, dense], **kwargs), emb, dense))
    for _ in range(4):
        idx, rows = _grad(rng, dtype)
        dense_grad = rng.standard_normal(4).astype(dtype)
        for o, emb, dense in twins:
            emb.grad = _coo(torch, idx, rows, (6, 3))
            dense.grad = torch.tensor(dense_grad)
            o.step()
        (ref, *ref_p), (opt, *p) = twins
        for a, b in zip(p, ref_p):
            _close(a.detach().numpy(), b.detach().numpy(), dtype)
        assert p[0].grad.is_sparse                    # the user's gradient is left as given
    if name == "Adagrad":
        _close(opt.state[p[0]]["sum"].numpy(), ref.state[ref_p[0]]["sum"].numpy(), dtype)
        assert float(opt.state[p[0]]["step"]) == float(ref.state[ref_p[0]]["step"])


@pytest.mark.parametrize("name, kwargs, error, match", [
    ("Adagrad", {"weight_decay": 0.1}, RuntimeError,
     "weight_decay option is not compatible with sparse gradients"),
    ("Adagrad", {"fused": True}, RuntimeError, "`fused` does not support sparse grad"),
    ("SGD", {"fused": True}, RuntimeError, "`_fused_sgd` does not support sparse gradients"),
    ("SGD", {"momentum": 0.9, "weight_decay": 0.1}, RuntimeError,
     r"add\(sparse, dense\) is not supported"),
    ("SGD", {"weight_decay": 0.1}, RuntimeError, r"add\(sparse, dense\) is not supported"),
    ("SparseAdam", {}, RuntimeError, "SparseAdam does not support dense gradients"),
])
def test_refused_sparse_cases_raise_and_change_nothing(name, kwargs, error, match):
    torch = _torch()
    import optcore.torch as ot
    a, b = torch.nn.Parameter(torch.ones(3, 2)), torch.nn.Parameter(torch.ones(2))
    opt = getattr(ot, name)([a, b], lr=0.1, **kwargs)
    if name == "SparseAdam":
        a.grad, b.grad = _coo(torch, [0], np.ones((1, 2), np.float32), (3, 2)), torch.ones(2)
    else:
        a.grad, b.grad = torch.ones(3, 2), _coo(torch, [0], np.ones(1, np.float32), (2,))
    ref = getattr(torch.optim, name)([torch.nn.Parameter(torch.ones(2))], lr=0.1, **kwargs)
    ref.param_groups[0]["params"][0].grad = b.grad if name != "SparseAdam" else torch.ones(2)
    with pytest.raises(error, match=match):                 # torch raises the same
        ref.step()
    with pytest.raises(error, match=match):
        opt.step()
    assert torch.equal(a, torch.ones(3, 2)) and torch.equal(b, torch.ones(2))


def test_torch_sparse_adam_refuses_what_torch_refuses():
    torch = _torch()
    import optcore.torch as ot
    with pytest.raises(ValueError, match="SparseAdam requires dense parameter tensors"):
        ot.SparseAdam([torch.zeros(3, layout=torch.sparse_coo)])
    with pytest.raises(ValueError, match="SparseAdam does not support complex parameters"):
        ot.SparseAdam([torch.zeros(3, dtype=torch.complex64)])


def test_embedding_sparse_grads_step_like_torch():
    torch = _torch()
    import optcore.torch as ot
    models = [torch.nn.Embedding(10, 4, sparse=True) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    opts = [torch.optim.SparseAdam(models[0].parameters(), lr=0.1),
            ot.SparseAdam(models[1].parameters(), lr=0.1)]
    for step in range(3):
        for m, o in zip(models, opts):
            o.zero_grad()
            m(torch.tensor([[1, 2, 1], [7, 1, 9]])).pow(2).sum().backward()
            o.step()
    _close(models[1].weight.detach().numpy(), models[0].weight.detach().numpy(), np.float32)


def test_torch_sparse_adam_bad_last_gradient_changes_nothing():
    torch = _torch()
    import optcore.torch as ot
    a = torch.nn.Parameter(torch.ones(3, 2))
    b = torch.nn.Parameter(torch.ones(2, 2).t())                        # not contiguous
    opt = ot.SparseAdam([a, b], lr=0.1)
    a.grad = _coo(torch, [0], np.ones((1, 2), np.float32), (3, 2))
    b.grad = _coo(torch, [0], np.ones((1, 2), np.float32), (2, 2))
    with pytest.raises(ValueError, match="contiguous"):
        opt.step()
    assert torch.equal(a, torch.ones(3, 2)) and not opt.state


# ---- SGD with momentum and sparse gradients (torch's sparse momentum buffer) ----

def _random_coo(torch, rng, dtype, shape, sparse_dim=1):
    # 0 to 7 entries (an empty set too), duplicates likely, out of order
    k = int(rng.integers(0, 8))
    idx = np.stack([rng.integers(0, n, k) for n in shape[:sparse_dim]])
    values = rng.standard_normal((k, *shape[sparse_dim:])) * 10 ** rng.uniform(-2, 2)
    return torch.sparse_coo_tensor(torch.tensor(idx, dtype=torch.int64),
                                   torch.tensor(values.astype(dtype)), shape)


MOMENTUM_CASES = [{"momentum": 0.9}, {"momentum": 0.9, "dampening": 0.3},
                  {"momentum": 0.5, "nesterov": True}, {"momentum": 0.9, "maximize": True},
                  {"momentum": 0.8, "nesterov": True, "maximize": True, "foreach": True}]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kwargs", MOMENTUM_CASES)
@pytest.mark.parametrize("sparse_dim", [1, 2])
def test_sgd_momentum_with_sparse_grads_steps_like_torch(dtype, kwargs, sparse_dim):
    torch = _torch()
    import optcore.torch as ot
    rng = np.random.default_rng(5)
    start = rng.standard_normal((7, 3)).astype(dtype)
    dense_start = rng.standard_normal(4).astype(dtype)
    twins = []
    for cls in (torch.optim.SGD, ot.SGD):
        emb = torch.nn.Parameter(torch.tensor(start))
        dense = torch.nn.Parameter(torch.tensor(dense_start))
        other = torch.nn.Parameter(torch.tensor(start[:2].copy()))      # a second group
        twins.append((cls([{"params": [emb, dense]}, {"params": [other], "lr": 0.05}],
                          lr=0.1, **kwargs), emb, dense, other))
    for _ in range(6):
        grad = _random_coo(torch, rng, dtype, (7, 3), sparse_dim)
        grad2 = _random_coo(torch, rng, dtype, (2, 3), sparse_dim)
        dense_grad = torch.tensor(rng.standard_normal(4).astype(dtype))
        for _, emb, dense, other in twins:
            emb.grad, dense.grad, other.grad = grad.clone(), dense_grad.clone(), grad2.clone()
        for o, *_ in twins:
            o.step()
        (ref, *ref_p), (opt, *p) = twins
        for a, b in zip(p, ref_p):
            _close(a.detach().numpy(), b.detach().numpy(), dtype)
            mine, theirs = opt.state[a]["momentum_buffer"], ref.state[b]["momentum_buffer"]
            assert mine.layout == theirs.layout
            _close(mine.to_dense().numpy(), theirs.to_dense().numpy(), dtype)
        buf = opt.state[p[0]]["momentum_buffer"]
        assert buf.is_sparse and buf.is_coalesced() and buf.sparse_dim() == sparse_dim
        assert p[0].grad.is_sparse                    # the user's gradient is left as given


def test_sgd_momentum_touches_only_the_rows_its_buffer_holds():
    torch = _torch()
    import optcore.torch as ot
    w = torch.nn.Parameter(torch.full((1000, 2), float("nan")))
    w.data[[3, 7]] = 1.0
    opt = ot.SGD([w], lr=0.5, momentum=0.9)
    for idx in ([3], [7, 7], []):
        w.grad = torch.sparse_coo_tensor([idx], torch.ones(len(idx), 2), (1000, 2))
        opt.step()
    assert torch.isnan(w[[0, 4, 999]]).all()                 # untouched rows never read
    assert opt.state[w]["momentum_buffer"]._indices().tolist() == [[3, 7]]
    # 1 - 0.5 (g) - 0.5 * 0.9 (buffer) - 0.5 * 0.81 (buffer, empty gradient)
    assert w[3].tolist() == pytest.approx([1 - 0.5 - 0.45 - 0.405] * 2)


def test_sgd_momentum_buffer_layouts_as_torch():
    torch = _torch()
    import optcore.torch as ot
    rng = np.random.default_rng(6)

    def pair(**kwargs):
        ps = [torch.nn.Parameter(torch.ones(5, 2, dtype=torch.float64)) for _ in range(2)]
        return ps, [torch.optim.SGD([ps[0]], lr=0.1, **kwargs),
                    ot.SGD([ps[1]], lr=0.1, **kwargs)]

    # a dense buffer (from a dense gradient) takes a sparse one and stays dense
    ps, opts = pair(momentum=0.9, dampening=0.2)
    for grad in (torch.ones(5, 2, dtype=torch.float64),
                 _random_coo(torch, rng, np.float64, (5, 2)),
                 _random_coo(torch, rng, np.float64, (5, 2))):
        for p, o in zip(ps, opts):
            p.grad = grad.clone()
            o.step()
        _close(ps[1].detach().numpy(), ps[0].detach().numpy(), np.float64)
    assert opts[1].state[ps[1]]["momentum_buffer"].layout == torch.strided
    # where torch refuses (nesterov on a dense buffer; a dense gradient on a
    # sparse buffer): its error, nothing changed
    for kwargs, grads in [({"momentum": 0.9, "nesterov": True},
                           [torch.ones(5, 2, dtype=torch.float64),
                            _random_coo(torch, rng, np.float64, (5, 2))]),
                          ({"momentum": 0.9}, [_random_coo(torch, rng, np.float64, (5, 2)),
                                               torch.ones(5, 2, dtype=torch.float64)])]:
        ps, opts = pair(**kwargs)
        for p, o in zip(ps, opts):
            p.grad = grads[0].clone()
            o.step()
        before = ps[1].detach().clone()
        buf = opts[1].state[ps[1]]["momentum_buffer"].clone()
        for p, o in zip(ps, opts):
            p.grad = grads[1].clone()
            with pytest.raises(RuntimeError, match=r"add\(sparse, dense\) is not supported"):
                o.step()
        assert torch.equal(ps[1], before)
        after = opts[1].state[ps[1]]["momentum_buffer"]
        assert torch.equal(after.to_dense(), buf.to_dense())


def test_sgd_momentum_loads_torchs_uncoalesced_buffer():
    torch = _torch()
    import optcore.torch as ot
    rng = np.random.default_rng(7)
    ps = [torch.nn.Parameter(torch.ones(6, 3)) for _ in range(2)]
    ref = torch.optim.SGD([ps[0]], lr=0.1, momentum=0.9, nesterov=True)
    for _ in range(2):
        ps[0].grad = _random_coo(torch, rng, np.float32, (6, 3))
        ref.step()
    ps[1].data.copy_(ps[0].data)
    opt = ot.SGD([ps[1]], lr=0.1, momentum=0.9, nesterov=True)
    opt.load_state_dict(copy.deepcopy(ref.state_dict()))    # (torch's steps mutate it)
    for _ in range(3):
        grad = _random_coo(torch, rng, np.float32, (6, 3))
        for p, o in zip(ps, (ref, opt)):
            p.grad = grad.clone()
            o.step()
        _close(ps[1].detach().numpy(), ps[0].detach().numpy(), np.float32)
    assert ref.state_dict()["state"][0]["momentum_buffer"].is_sparse
    ref.load_state_dict(opt.state_dict())                    # and back
    assert ref.state[ps[0]]["momentum_buffer"].is_coalesced()


# ---- the NumPy SGD and Adagrad with row-form gradients ---------------------------

def _row_grad(rng, dtype, nrows, width=3):
    k = int(rng.integers(0, 8))                  # an empty index set too
    rows = rng.standard_normal((k, width)) * 10 ** rng.uniform(-3, 3, (k, 1))
    return rng.integers(0, nrows, k), rows.astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, kwargs", [
    ("SGD", {"lr": 0.1}), ("SGD", {"lr": 0.1, "maximize": True, "foreach": True}),
    ("Adagrad", {"lr": 0.1}),
    ("Adagrad", {"lr": 0.1, "lr_decay": 0.01, "maximize": True,
                 "initial_accumulator_value": 0.1, "eps": 1e-6}),
])
def test_numpy_row_form_steps_like_torch_and_the_twins(dtype, name, kwargs):
    torch = _torch()
    rng = np.random.default_rng(8)
    starts = [rng.standard_normal(s).astype(dtype) for s in ((7, 3), (4,), (3, 3), (5, 3))]
    mine = [a.copy() for a in starts]
    twin = [a.copy() for a in starts]
    groups = [{"params": mine[:2]}, {"params": mine[2:], "lr": 0.05}]
    opt = getattr(optcore, name)(groups, **kwargs)
    tps = [torch.nn.Parameter(torch.tensor(a)) for a in starts]
    ref = getattr(torch.optim, name)([{"params": tps[:2]}, {"params": tps[2:], "lr": 0.05}],
                                     **kwargs)
    sums = [np.full_like(a, kwargs.get("initial_accumulator_value", 0.0)) for a in starts]
    for step in range(1, 6):
        (i0, r0), (i3, r3) = _row_grad(rng, dtype, 7), _row_grad(rng, dtype, 5)
        dense = [rng.standard_normal(a.shape).astype(dtype) for a in starts[1:3]]
        opt.step([(i0, r0), dense[0], dense[1], (i3, r3)])
        for p, g in zip(tps, [_coo(torch, i0, r0, (7, 3)), torch.tensor(dense[0]),
                              torch.tensor(dense[1]), _coo(torch, i3, r3, (5, 3))]):
            p.grad = g
        ref.step()
        for a, p in zip(mine, tps):
            _close(a, p.detach().numpy(), dtype)
        # the row-form parameters bit for bit as the NumPy twins step them
        for k, (idx, rows), lr in ((0, (i0, r0), 0.1), (3, (i3, r3), 0.05)):
            if name == "SGD":
                reference.sgd_rows(twin[k], idx, rows, lr=lr, maximize=kwargs.get("maximize"))
            else:
                reference.adagrad_rows(twin[k], idx, rows, sums[k], step=step, lr=lr,
                                       lr_decay=kwargs.get("lr_decay", 0.0),
                                       eps=kwargs.get("eps", 1e-10),
                                       maximize=kwargs.get("maximize", False))
            np.testing.assert_array_equal(mine[k], twin[k])
    if name == "Adagrad":
        for k in (0, 3):
            np.testing.assert_array_equal(opt.state[k]["sum"], sums[k])
            assert opt.state[k]["step"] == step == int(ref.state[tps[k]]["step"])
        _close(opt.state[1]["sum"], ref.state[tps[1]]["sum"].numpy(), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kwargs", MOMENTUM_CASES)
def test_numpy_sgd_momentum_row_form_steps_like_torch_and_the_dense_gradient(dtype, kwargs):
    torch = _torch()
    rng = np.random.default_rng(9)
    starts = [rng.standard_normal(s).astype(dtype) for s in ((7, 3), (4,), (5, 3))]
    mine = [a.copy() for a in starts]
    dense_twin = [a.copy() for a in starts]
    opt = optcore.SGD([{"params": mine[:2]}, {"params": mine[2:], "lr": 0.05}],
                      lr=0.1, **kwargs)
    twin = optcore.SGD([{"params": dense_twin[:2]}, {"params": dense_twin[2:], "lr": 0.05}],
                       lr=0.1, **kwargs)
    tps = [torch.nn.Parameter(torch.tensor(a)) for a in starts]
    ref = torch.optim.SGD([{"params": tps[:2]}, {"params": tps[2:], "lr": 0.05}],
                          lr=0.1, **kwargs)
    for _ in range(6):
        (i0, r0), (i2, r2) = _row_grad(rng, dtype, 7), _row_grad(rng, dtype, 5)
        dense = rng.standard_normal(4).astype(dtype)
        opt.step([(i0, r0), dense, (i2, r2)])
        scattered = []
        for idx, rows, shape in ((i0, r0, (7, 3)), (i2, r2, (5, 3))):
            full = np.zeros(shape, dtype)
            for i, row in zip(idx, rows):            # duplicates summed in order
                full[i] += row
            scattered.append(full)
        twin.step([scattered[0], dense.copy(), scattered[1]])
        for p, g in zip(tps, [_coo(torch, i0, r0, (7, 3)), torch.tensor(dense),
                              _coo(torch, i2, r2, (5, 3))]):
            p.grad = g
        ref.step()
        for k, (a, p) in enumerate(zip(mine, tps)):
            _close(a, p.detach().numpy(), dtype)
            np.testing.assert_array_equal(a, dense_twin[k])
            np.testing.assert_array_equal(opt.state[k]["momentum_buffer"],
                                          twin.state[k]["momentum_buffer"])
            _close(opt.state[k]["momentum_buffer"],
                   ref.state[p]["momentum_buffer"].to_dense().numpy(), dtype)


def test_numpy_sgd_momentum_row_form_bad_input_changes_nothing():
    table, other = np.ones((7, 3)), np.ones(2)
    opt = optcore.SGD([table, other], lr=0.1, momentum=0.9)
    opt.step([([1, 1], np.ones((2, 3))), np.ones(2)])
    before = [table.copy(), other.copy(), opt.state[0]["momentum_buffer"].copy()]
    with pytest.raises(IndexError, match=r"parameter 0 .*indices must lie in \[0, 7\)"):
        opt.step([([9], np.ones((1, 3))), np.ones(2)])
    with pytest.raises(TypeError, match=r"parameter 0 .*dtype"):
        opt.step([([0], np.ones((1, 3), np.float32)), np.ones(2)])
    np.testing.assert_array_equal(table, before[0])
    np.testing.assert_array_equal(other, before[1])
    np.testing.assert_array_equal(opt.state[0]["momentum_buffer"], before[2])


def test_numpy_row_form_in_a_group_added_later_and_single_parameter_groups():
    table, other = np.ones((4, 2)), np.ones((3, 2))
    opt = optcore.Adagrad([table], lr=0.5)
    opt.add_param_group({"params": [other]})
    opt.step([([1, 1], np.ones((2, 2))), ([2], np.full((1, 2), 2.0))])   # flat, not nested
    assert opt.state[1]["step"] == 1 and opt.state[0]["step"] == 1
    np.testing.assert_allclose(table[1], 0.5)
    np.testing.assert_allclose(other[2], 0.5)
    assert (table[[0, 2, 3]] == 1).all() and (other[:2] == 1).all()
    sgd = optcore.SGD([np.zeros((2, 1))], lr=0.5)
    sgd.step([([0, 0], np.ones((2, 1)))])
    assert sgd.param_groups[0]["params"][0].ravel().tolist() == [-1.0, 0.0]


@pytest.mark.parametrize("bad, error, match", [
    (([0, 9], np.ones((2, 3))), IndexError, r"parameter 1 .*indices must lie in \[0, 7\)"),
    (([-1], np.ones((1, 3))), IndexError, r"parameter 1 .*indices"),
    (([0.0, 1.0], np.ones((2, 3))), TypeError, r"parameter 1 .*1-D integer"),
    (([0, 1], np.ones((2, 2))), ValueError, r"parameter 1 .*rows has shape \(2, 2\)"),
    (([0, 1], np.ones((2, 3), np.float32)), TypeError, r"parameter 1 .*dtype"),
])
@pytest.mark.parametrize("name", ["SGD", "Adagrad"])
def test_numpy_row_form_bad_input_raises_before_any_write(name, bad, error, match):
    first, table = np.ones((7, 3)), np.ones((7, 3))
    opt = getattr(optcore, name)([first, table], lr=0.1)
    state = {k: dict(v) for k, v in opt.state.items()}
    with pytest.raises(error, match=match):
        opt.step([([0], np.ones((1, 3))), bad])
    assert (first == 1).all() and (table == 1).all()
    for k, entry in opt.state.items():
        assert entry["step"] == state[k]["step"] and (entry["sum"] == 0).all()


@pytest.mark.parametrize("name, kwargs, error, match", [
    ("SGD", {"momentum": 0.9, "weight_decay": 0.1}, RuntimeError,
     r"add\(sparse, dense\) is not supported"),
    ("SGD", {"weight_decay": 0.1}, RuntimeError, r"add\(sparse, dense\) is not supported"),
    ("Adagrad", {"weight_decay": 0.1}, RuntimeError, "weight_decay option is not compatible"),
    ("Adam", {}, TypeError, "dense gradients only"),
])
def test_numpy_row_form_refusals(name, kwargs, error, match):
    a, b = np.ones(2), np.ones((3, 2))
    opt = getattr(optcore, name)([a, b], lr=0.1, **kwargs)
    with pytest.raises(error, match=match):
        opt.step([np.ones(2), ([0], np.ones((1, 2)))])
    assert (a == 1).all() and (b == 1).all()
