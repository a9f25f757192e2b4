"""Row-sparse gradients: the kernels against their NumPy twins (bit for bit),
optcore.SparseAdam and optcore.torch's SparseAdam / SGD / Adagrad against
torch.optim with sparse COO gradients, step after step; the refusals."""

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
    ("SGD", {"momentum": 0.9}, NotImplementedError, "momentum"),
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
    if "momentum" not in kwargs:                    # torch raises the same (but momentum)
        ref = getattr(torch.optim, name)([torch.nn.Parameter(torch.ones(2))], lr=0.1,
                                         **kwargs)
        ref.param_groups[0]["params"][0].grad = b.grad if name != "SparseAdam" \
            else torch.ones(2)
        with pytest.raises(error, match=match):
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
