"""Muon in both APIs against torch.optim.Muon: signature, defaults, errors,
state keys and state_dict layout (loaded both ways), results step after step.

optcore.torch.Muon runs torch's tensor operations in torch's order (the
Newton–Schulz products in bfloat16 through torch's BLAS, as torch.optim.Muon):
its parameters and state must equal torch's bit for bit. The NumPy optcore.Muon
emulates the bfloat16 products with float32 matmuls rounded once to bfloat16;
where its float32 summation order puts a product on the other side of a
bfloat16 rounding boundary, the flip propagates through the iterations. Its
parity is therefore checked one step at a time from torch's state: small
matrices within a few units of the dtype's last place, larger ones within
ORTHO_TOL of the orthogonalized update's scale (times the adjusted lr)."""

import copy
import inspect

import numpy as np
import pytest

import optcore

torch = pytest.importorskip("torch")
ot = pytest.importorskip("optcore.torch")

from optcore.optim._muon import adjust_lr, newton_schulz, round_bf16   # noqa: E402
from optcore.torch.muon import _orthogonalize               # noqa: E402

pytestmark = pytest.mark.torch

DTYPES = [torch.float32, torch.float64]
NP = {torch.float32: np.float32, torch.float64: np.float64}
#: optcore (NumPy) vs torch.optim on matrices up to 8 x 8 (no bfloat16 flip
#: seen there): relative to the parameters' scale.
SMALL_RTOL = {torch.float32: 1e-6, torch.float64: 1e-12}
#: optcore (NumPy) vs torch.optim on larger matrices: the orthogonalized
#: updates differ by at most this fraction of their largest element (a few
#: bfloat16 units of the last place).
ORTHO_TOL = 2 ** -4
STEPS = 4
SMALL = [(4, 3), (3, 5), (8, 8), (0, 3), (1, 1)]
LARGE = [(32, 16), (12, 40)]
OPTIONS = [
    {},
    {"lr": 0.02, "weight_decay": 0.0},
    {"momentum": 0.8},
    {"momentum": 0.3, "nesterov": False},
    {"nesterov": False},
    {"adjust_lr_fn": "original", "lr": 0.01},
    {"adjust_lr_fn": "match_rms_adamw", "lr": 0.02, "weight_decay": 0.2},
    {"ns_steps": 6},
    {"ns_steps": 0},
    {"ns_coefficients": (3.4, -4.7, 2.0)},
    {"eps": 1e-3},
]


def _tensors(shapes, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen, dtype=dtype) for s in shapes]


# ---- signature, defaults, state ------------------------------------------------

@pytest.mark.parametrize("cls", [ot.Muon, optcore.Muon])
def test_signature_and_defaults_are_torchs(cls):
    ours = inspect.signature(cls.__init__).parameters
    theirs = inspect.signature(torch.optim.Muon.__init__).parameters
    assert list(ours) == list(theirs)
    assert [p.default for p in ours.values()] == [p.default for p in theirs.values()]


def test_defaults_and_groups_match_torch():
    ps = [torch.nn.Parameter(torch.ones(2, 3)) for _ in range(2)]
    ref, opt = torch.optim.Muon(ps), ot.Muon(ps)
    assert list(ref.defaults) == list(opt.defaults)
    assert ref.defaults == opt.defaults
    arrays = [np.ones((2, 3)), np.ones((3, 2))]
    assert optcore.Muon(arrays).defaults == ref.defaults


# ---- errors ---------------------------------------------------------------------

BAD_OPTIONS = [
    ({"lr": -1.0}, "Learning rate should be >= 0 but is: -1.0"),
    ({"momentum": -0.1}, "momentum should be >= 0 but is: -0.1"),
    ({"weight_decay": -0.5}, "weight decay should be >= 0 but is: -0.5"),
    ({"adjust_lr_fn": "arbitrary"}, "Adjust learning rate function arbitrary is not supported"),
]


@pytest.mark.parametrize("kwargs, message", BAD_OPTIONS)
def test_constructor_errors_are_torchs(kwargs, message):
    with pytest.raises(ValueError) as ref:
        torch.optim.Muon([torch.nn.Parameter(torch.ones(2, 2))], **kwargs)
    assert str(ref.value) == message
    with pytest.raises(ValueError) as ours:
        ot.Muon([torch.nn.Parameter(torch.ones(2, 2))], **kwargs)
    assert str(ours.value) == message
    with pytest.raises(ValueError) as numpy_error:
        optcore.Muon([np.ones((2, 2))], **kwargs)
    assert str(numpy_error.value) == message


def test_tensor_lr_must_have_one_element():
    with pytest.raises(ValueError, match="Tensor lr must be 1-element"):
        ot.Muon([torch.nn.Parameter(torch.ones(2, 2))], lr=torch.tensor([0.1, 0.2]))


@pytest.mark.parametrize("shape", [(3,), (2, 3, 4), ()])
def test_only_2d_parameters(shape):
    with pytest.raises(ValueError) as ref:
        torch.optim.Muon([torch.nn.Parameter(torch.ones(shape))])
    with pytest.raises(ValueError) as ours:
        ot.Muon([torch.nn.Parameter(torch.ones(shape))])
    assert str(ours.value) == str(ref.value)
    with pytest.raises(ValueError, match="Muon only supports 2D parameters"):
        optcore.Muon([np.ones(shape)])


def test_step_errors_are_torchs():
    p = torch.nn.Parameter(torch.rand(2, 3, dtype=torch.complex64))
    p.grad = torch.rand_like(p)
    with pytest.raises(RuntimeError, match="Muon does not support complex parameters"):
        ot.Muon([p]).step()
    p = torch.nn.Parameter(torch.ones(2, 3))
    p.grad = torch.ones(2, 3).to_sparse()
    with pytest.raises(RuntimeError, match="Muon does not support sparse gradients"):
        ot.Muon([p]).step()


@pytest.mark.parametrize("kwargs, message", [
    ({"ns_steps": 100}, "Number of steps must be less than 100 for computational efficiency"),
    ({"ns_coefficients": (1.0, 2.0)}, "Coefficients must be a tuple of exactly 3 values"),
])
def test_newton_schulz_errors_change_nothing(kwargs, message):
    ref_p = torch.nn.Parameter(torch.ones(2, 3))
    ref_p.grad = torch.ones(2, 3)
    with pytest.raises(ValueError, match=message):
        torch.optim.Muon([ref_p], **kwargs).step()
    p = torch.nn.Parameter(torch.ones(2, 3))
    p.grad = torch.ones(2, 3)
    opt = ot.Muon([p], **kwargs)
    with pytest.raises(ValueError, match=message):
        opt.step()
    assert torch.equal(p, torch.ones(2, 3))
    assert torch.equal(opt.state[p]["momentum_buffer"], torch.zeros(2, 3))
    w = np.ones((2, 3))
    nopt = optcore.Muon([w], **kwargs)
    with pytest.raises(ValueError, match=message):
        nopt.step([np.ones((2, 3))])
    assert (w == 1).all() and not nopt.state


def test_numpy_bad_gradients_change_nothing():
    a, b = np.ones((2, 3)), np.ones((3, 3))
    opt = optcore.Muon([a, b])
    with pytest.raises(ValueError, match="shape"):
        opt.step([np.ones((2, 3)), np.ones((3, 2))])
    with pytest.raises(TypeError, match="float32"):
        opt.step([np.ones((2, 3)), np.ones((3, 3), np.float32)])
    with pytest.raises(ValueError, match="gradients"):
        opt.step([np.ones((2, 3))])
    assert (a == 1).all() and (b == 1).all() and not opt.state
    with pytest.raises(ValueError, match="more than one parameter group"):
        optcore.Muon([a, a])
    with pytest.raises(ValueError, match="read-only"):
        ro = np.ones((2, 2))
        ro.flags.writeable = False
        optcore.Muon([ro])


# ---- optcore.torch.Muon: torch's bits ----------------------------------------------

def _torch_twins(shapes, dtype, kwargs, groups):
    init = _tensors(shapes, dtype, 0)
    models = [[torch.nn.Parameter(x.clone()) for x in init] for _ in range(2)]

    def params(ps):
        if not groups:
            return ps
        lr = kwargs.get("lr", 1e-3)
        return [{"params": ps[:2]}, {"params": ps[2:], "lr": lr / 2, "momentum": 0.5}]

    ref = torch.optim.Muon(params(models[0]), **copy.deepcopy(kwargs))
    opt = ot.Muon(params(models[1]), **copy.deepcopy(kwargs))
    return models, ref, opt


def _step_both(models, opts, shapes, dtype, step):
    grads = _tensors(shapes, dtype, 100 + step)
    for ps in models:
        for j, (p, g) in enumerate(zip(ps, grads)):
            # parameter 1 gets a gradient every other step only
            p.grad = None if (j == 1 and step % 2) else g.clone()
    for o in opts:
        o.step()


def _assert_equal_state(ref, opt):
    ref_sd, sd = ref.state_dict(), opt.state_dict()
    assert repr(ref_sd["param_groups"]) == repr(sd["param_groups"])
    assert ref_sd["state"].keys() == sd["state"].keys()
    for k in ref_sd["state"]:
        assert ref_sd["state"][k].keys() == sd["state"][k].keys() == {"momentum_buffer"}
        assert torch.equal(ref_sd["state"][k]["momentum_buffer"],
                           sd["state"][k]["momentum_buffer"])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kwargs", OPTIONS, ids=repr)
def test_torch_class_equals_torch_bit_for_bit(dtype, kwargs):
    shapes = SMALL + LARGE
    models, ref, opt = _torch_twins(shapes, dtype, kwargs, groups=True)
    for step in range(STEPS):
        _step_both(models, (ref, opt), shapes, dtype, step)
        for a, b in zip(*models):
            assert torch.equal(a, b), f"step {step}"
        _assert_equal_state(ref, opt)


@pytest.mark.parametrize("dtype", DTYPES)
def test_torch_class_tensor_lr_and_closure(dtype):
    shapes = [(4, 3), (5, 2)]
    models, ref, opt = _torch_twins(shapes, dtype, {"lr": torch.tensor(0.01)}, groups=False)
    for step in range(3):
        losses = []
        for o, ps in zip((ref, opt), models):
            def closure(o=o, ps=ps):
                o.zero_grad()
                loss = sum((p ** 2).sum() for p in ps)
                loss.backward()
                return loss
            losses.append(o.step(closure))
        assert torch.equal(losses[0], losses[1])
        for a, b in zip(*models):
            assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", DTYPES)
def test_torch_class_non_contiguous_parameter(dtype):
    base = _tensors([(3, 5)], dtype, 0)[0]
    ref_p = torch.nn.Parameter(base.clone().T)
    p = torch.nn.Parameter(base.clone().T)
    assert not p.is_contiguous()
    ref, opt = torch.optim.Muon([ref_p], lr=0.02), ot.Muon([p], lr=0.02)
    for step in range(3):
        g = _tensors([(5, 3)], dtype, step)[0]
        ref_p.grad, p.grad = g.clone(), g.clone()
        ref.step()
        opt.step()
        assert torch.equal(ref_p, p)


@pytest.mark.parametrize("dtype", DTYPES)
def test_state_dicts_load_both_ways(dtype):
    shapes = [(4, 3), (3, 5), (2, 2)]
    kwargs = {"lr": 0.02}
    models, ref, opt = _torch_twins(shapes, dtype, kwargs, groups=False)
    for step in range(2):
        _step_both(models, (ref, opt), shapes, dtype, step)
    # torch -> optcore.torch and optcore.torch -> torch, then on together
    resumed_ps = [torch.nn.Parameter(p.detach().clone()) for p in models[0]]
    resumed = ot.Muon(resumed_ps, **kwargs)
    resumed.load_state_dict(copy.deepcopy(ref.state_dict()))  # (torch aliases)
    back_ps = [torch.nn.Parameter(p.detach().clone()) for p in models[1]]
    back = torch.optim.Muon(back_ps, **kwargs)
    back.load_state_dict(copy.deepcopy(opt.state_dict()))
    all_models = [models[0], models[1], resumed_ps, back_ps]
    all_opts = (ref, opt, resumed, back)
    for step in range(2, 4):
        _step_both(all_models, all_opts, shapes, dtype, step)
    for ps in all_models[1:]:
        for a, b in zip(all_models[0], ps):
            assert torch.equal(a, b)
    # the NumPy class loads torch's state_dict and torch loads its
    arrays = [p.detach().numpy().copy() for p in models[0]]
    nopt = optcore.Muon(arrays, **kwargs)
    nopt.load_state_dict(ref.state_dict())
    for k, entry in ref.state_dict()["state"].items():
        assert np.array_equal(nopt.state[k]["momentum_buffer"],
                              entry["momentum_buffer"].numpy())
    sd = nopt.state_dict()
    sd["state"] = {k: {n: torch.from_numpy(v) for n, v in e.items()}
                   for k, e in sd["state"].items()}
    twin = torch.optim.Muon([torch.nn.Parameter(p.detach().clone()) for p in models[0]],
                            **kwargs)
    twin.load_state_dict(sd)
    assert repr(twin.state_dict()["param_groups"]) == repr(ref.state_dict()["param_groups"])


def test_numpy_load_state_dict_checks_first():
    opt = optcore.Muon([np.zeros((2, 2))])
    opt.step([np.ones((2, 2))])
    before = opt.state_dict()
    bad = copy.deepcopy(before)
    bad["state"][0]["momentum_buffer"] = np.zeros((3, 2))
    with pytest.raises(ValueError, match="shape"):
        opt.load_state_dict(bad)
    bad = copy.deepcopy(before)
    del bad["param_groups"][0]["lr"]
    with pytest.raises(ValueError, match="lacks"):
        opt.load_state_dict(bad)
    assert np.array_equal(opt.state[0]["momentum_buffer"], before["state"][0]["momentum_buffer"])


# ---- optcore.Muon (NumPy) --------------------------------------------------------

def test_round_bf16_equals_torchs_conversion():
    gen = torch.Generator().manual_seed(3)
    for dtype in DTYPES:
        x = torch.randn(4000, generator=gen, dtype=dtype) * 10.0 ** torch.randint(
            -30, 30, (4000,), generator=gen)
        x[:4] = torch.tensor([0.0, -0.0, float("inf"), float("nan")])
        ours = round_bf16(x.numpy())
        theirs = x.bfloat16().float().numpy()
        assert np.array_equal(ours, theirs, equal_nan=True)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SMALL + LARGE + [(40, 130), (256, 256)])
def test_newton_schulz_near_torchs(dtype, shape):
    update = _tensors([shape], dtype, 7)[0]
    coefficients = (3.4445, -4.7750, 2.0315)
    theirs = _orthogonalize(update, coefficients, 5, 1e-7).float().numpy()
    ours = newton_schulz(update.numpy(), coefficients, 5, 1e-7)
    assert ours.dtype == np.float32 and ours.shape == shape
    # bfloat16 values, as torch's are
    assert np.array_equal(round_bf16(ours), ours)
    if min(shape) and max(shape) <= 8:
        assert np.array_equal(ours, theirs)
    elif ours.size:
        assert np.abs(ours - theirs).max() <= ORTHO_TOL * np.abs(theirs).max()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kwargs", OPTIONS, ids=repr)
def test_numpy_class_near_torch_step_after_step(dtype, kwargs):
    """Each step from torch's state: small matrices to the last bits, larger
    ones within the orthogonalized update's tolerance."""
    shapes = SMALL + LARGE
    init = _tensors(shapes, dtype, 0)
    ref_ps = [torch.nn.Parameter(x.clone()) for x in init]
    ref = torch.optim.Muon(ref_ps, **copy.deepcopy(kwargs))
    lr = float(kwargs.get("lr", 1e-3))
    for step in range(STEPS):
        arrays = [p.detach().numpy().copy() for p in ref_ps]
        opt = optcore.Muon(arrays, **copy.deepcopy(kwargs))
        if step:
            opt.load_state_dict(copy.deepcopy(ref.state_dict()))
        grads = _tensors(shapes, dtype, 100 + step)
        for p, g in zip(ref_ps, grads):
            p.grad = g.clone()
        ref.step()
        opt.step([g.numpy().copy() for g in grads])
        for j, (p, a) in enumerate(zip(ref_ps, arrays)):
            expected = p.detach().numpy()
            buf = ref.state[p]["momentum_buffer"].numpy()
            if not a.size:
                continue
            scale = np.abs(expected).max()
            assert np.abs(opt.state[j]["momentum_buffer"] - buf).max() \
                <= SMALL_RTOL[dtype] * np.abs(buf).max()
            if max(shapes[j]) <= 8:
                assert np.abs(a - expected).max() <= SMALL_RTOL[dtype] * scale
            else:
                # the orthogonalized update's elements are below 2 (its
                # singular values are about 1)
                bound = ORTHO_TOL * 2 * adjust_lr(lr, kwargs.get("adjust_lr_fn"), shapes[j])
                assert np.abs(a - expected).max() <= bound + SMALL_RTOL[dtype] * scale


def test_numpy_class_groups_and_missing_gradients():
    a, b = np.ones((2, 3), np.float32), np.ones((3, 2), np.float32)
    opt = optcore.Muon([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.1,
                       weight_decay=0.0)
    opt.step([[None], [np.ones((3, 2), np.float32)]])
    assert (a == 1).all() and not (b == 1).all()
    assert list(opt.state) == [1]
    assert opt.state_dict()["param_groups"][1]["params"] == [1]
    assert "Muon" in repr(opt)


# ---- the elementwise kernels (muon_momentum, muon_apply) -------------------------

from fractions import Fraction                                     # noqa: E402

import optcore.reference as reference                              # noqa: E402
from optcore._reference_muon import fma                            # noqa: E402
from support import SIZES                                          # noqa: E402

KERNEL_SIZES = [n for n in SIZES if n] + [2 * optcore.get_parallel_threshold() + 3]
MOMENTA = [(0.95, True), (0.95, False), (0.3, True), (0.5, True), (0.0, True),
           (1.0, True), (1.2, True)]
APPLY = [dict(lr=1e-3 * 1.5, decay=1 - 1e-3 * 0.1), dict(lr=0.02), dict(lr=0.7, decay=0.4),
         dict(lr=0.0, decay=0.9)]


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request):
    before = optcore.get_num_threads()
    optcore.set_num_threads(request.param)
    yield request.param
    optcore.set_num_threads(before)


def test_fma_twin_is_exactly_rounded():
    """The NumPy fma against exact rational arithmetic, exponents spread."""
    rng = np.random.default_rng(5)
    for dt in (np.float32, np.float64):
        x, y, z = (rng.standard_normal(3000) * 2.0 ** rng.integers(-20, 20, 3000)
                   for _ in range(3))
        x, y, z = x.astype(dt), y.astype(dt), z.astype(dt)
        z[:1000] = (-x[:1000].astype(np.float64) * y[:1000]).astype(dt)  # cancellation
        got = fma(x, y, z)
        for a, b, c, r in zip(x, y, z, got):
            exact = Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c))
            # the nearest dtype value to the exact result (ties to even)
            near = dt(float(exact))
            cands = [np.nextafter(near, dt(-np.inf)), near, np.nextafter(near, dt(np.inf))]
            bits = np.uint64 if dt is np.float64 else np.uint32
            want = min(cands, key=lambda v: (abs(Fraction(float(v)) - exact),
                                             int(np.array(v).view(bits)) & 1))
            assert r == want, (dt, a, b, c)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", KERNEL_SIZES)
@pytest.mark.parametrize("momentum, nesterov", MOMENTA)
def test_muon_momentum_equals_reference_and_torch(dtype, n, momentum, nesterov, threads):
    rng = np.random.default_rng(n)
    g, b = rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype)
    bufs = [b.copy(), b.copy()]
    outs = [np.full(n, np.nan, dtype), np.full(n, np.nan, dtype)]
    kw = dict(momentum=momentum, nesterov=nesterov)
    optcore.muon_momentum(g, bufs[0], outs[0] if nesterov else None, **kw)
    reference.muon_momentum(g, bufs[1], outs[1] if nesterov else None, **kw)
    tb, tg = torch.from_numpy(b.copy()), torch.from_numpy(g)
    tb.lerp_(tg, 1 - momentum)
    assert np.array_equal(bufs[0], bufs[1]) and np.array_equal(bufs[0], tb.numpy())
    if nesterov:
        assert np.array_equal(outs[0], outs[1])
        assert np.array_equal(outs[0], tg.lerp(tb, momentum).numpy())
    else:
        assert np.isnan(outs[0]).all()                # not touched


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", KERNEL_SIZES)
@pytest.mark.parametrize("kw", APPLY, ids=repr)
def test_muon_apply_equals_reference_and_torch(dtype, n, kw, threads):
    rng = np.random.default_rng(n + 1)
    p = rng.standard_normal(n).astype(dtype)
    u16 = torch.from_numpy(rng.standard_normal(n).astype(np.float32)).bfloat16()
    u = u16.float().numpy().astype(dtype)
    ps = [p.copy(), p.copy()]
    optcore.muon_apply(ps[0], u, **kw)
    reference.muon_apply(ps[1], u, **kw)
    tp = torch.from_numpy(p.copy())
    tp.mul_(kw.get("decay", 1.0))
    tp.add_(u16, alpha=-kw["lr"])
    assert np.array_equal(ps[0], ps[1]) and np.array_equal(ps[0], tp.numpy())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_muon_kernels_multi_tensor(dtype):
    rng = np.random.default_rng(9)
    sizes = [8, 17, optcore.get_parallel_threshold() + 1]
    g = [rng.standard_normal(k).astype(dtype) for k in sizes]
    b = [rng.standard_normal(k).astype(dtype) for k in sizes]
    fast_b, ref_b = [x.copy() for x in b], [x.copy() for x in b]
    fast_o, ref_o = [np.empty_like(x) for x in b], [np.empty_like(x) for x in b]
    optcore.muon_momentum(g, fast_b, fast_o, momentum=0.9)
    reference.muon_momentum(g, ref_b, ref_o, momentum=0.9)
    fast_p, ref_p = [x.copy() for x in g], [x.copy() for x in g]
    optcore.muon_apply(fast_p, fast_o, lr=0.05, decay=0.99)
    reference.muon_apply(ref_p, ref_o, lr=0.05, decay=0.99)
    for pair in zip(fast_b + fast_o + fast_p, ref_b + ref_o + ref_p):
        assert np.array_equal(*pair)


def test_muon_kernels_name_bad_arguments():
    g, b = np.ones(4, np.float32), np.zeros(4, np.float32)
    with pytest.raises(ValueError, match="out"):
        optcore.muon_momentum(g, b)                   # nesterov by default
    with pytest.raises(ValueError, match="momentum"):
        optcore.muon_momentum(g, b, np.empty_like(b), momentum=-1.0)
    with pytest.raises(ValueError, match="learning rate"):
        optcore.muon_apply(b, g, lr=-1.0)
    assert (b == 0).all()


@pytest.mark.parametrize("nesterov", [True, False])
def test_numpy_class_non_contiguous_parameter_has_the_kernels_bits(nesterov):
    """A Fortran-ordered parameter (NumPy fallback) steps to the same bits
    as its C-ordered copy (the kernels)."""
    rng = np.random.default_rng(2)
    c = rng.standard_normal((12, 5)).astype(np.float32)
    f = np.asfortranarray(c)
    opts = [optcore.Muon([x], lr=0.02, nesterov=nesterov) for x in (c, f)]
    for _ in range(3):
        g = rng.standard_normal((12, 5)).astype(np.float32)
        for o in opts:
            o.step([g])
        assert np.array_equal(c, f)
        assert np.array_equal(opts[0].state[0]["momentum_buffer"],
                              opts[1].state[0]["momentum_buffer"])
