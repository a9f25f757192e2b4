"""optcore.torch on complex and on non-contiguous parameters, against torch.optim
step after step.

Complex parameters are stepped as real views of twice the length (their real
and imaginary parts independent elements, as torch.optim steps them);
non-contiguous ones over their storage order when dense (a transpose,
channels_last), else on a dense copy written back by the step."""

import pytest

torch = pytest.importorskip("torch")
ot = pytest.importorskip("optcore.torch")

from support import TORCH_RTOL  # noqa: E402

import numpy as np  # noqa: E402

STEPS = 5

#: (class, options) of every optcore.torch class with a torch.optim twin.
CASES = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("SGD", dict(lr=0.1, momentum=0.5, dampening=0.2, maximize=True)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, amsgrad=True, weight_decay=0.1)),
    ("AdamW", dict(lr=0.01, amsgrad=True)),
    ("RMSprop", dict(lr=0.01)),
    ("RMSprop", dict(lr=0.01, centered=True, momentum=0.5, weight_decay=0.1)),
    ("Adagrad", dict(lr=0.1, initial_accumulator_value=0.3, lr_decay=0.01)),
    ("Adadelta", dict(lr=0.5, weight_decay=0.1)),
    ("Adamax", dict(lr=0.01, weight_decay=0.1)),
    ("NAdam", dict(lr=0.01, decoupled_weight_decay=True, weight_decay=0.1)),
    ("RAdam", dict(lr=0.01)),
    ("Rprop", dict(lr=0.01)),
    ("ASGD", dict(lr=0.01, t0=2)),
]
IDS = [f"{name}-{i}" for i, (name, _) in enumerate(CASES)]


def _rtol(dtype):
    real = torch.empty(0, dtype=dtype).real.dtype
    return TORCH_RTOL[{torch.float32: np.float32, torch.float64: np.float64}[real]]


def _assert_close(ref, got, rtol, what):
    ref, got = ref.detach(), got.detach()
    scale = ref.abs().max().item() if ref.numel() else 1.0
    dev = (ref - got).abs().max().item() / (scale or 1.0) if ref.numel() else 0.0
    assert dev <= rtol, f"{what}: deviates by {dev:.3g}"


def _run_twins(name, options, make, grad_layout=None, steps=STEPS):
    """Step torch.optim.<name> and optcore.torch.<name> on the parameters
    make() returns (twice, same values), with the same gradients; compare
    parameters and state after every step. Returns optcore's parameters."""
    gen = torch.Generator().manual_seed(1)
    ref_params, params = make(), make()
    ref = getattr(torch.optim, name)(ref_params, **options)
    opt = getattr(ot, name)(params, **options)
    ptrs = [p.data_ptr() for p in params]
    for _ in range(steps):
        for rp, p in zip(ref_params, params):
            g = torch.randn(p.shape, dtype=p.dtype, generator=gen)
            rp.grad = g.clone()
            p.grad = g.clone() if grad_layout is None else grad_layout(g)
        ref.step()
        opt.step()
        rtol = _rtol(params[0].dtype)
        for i, (rp, p) in enumerate(zip(ref_params, params)):
            _assert_close(rp, p, rtol, f"{name} param {i}")
            for key, value in ref.state[rp].items():
                _assert_close(value, opt.state[p][key], rtol, f"{name} state {key!r}")
    assert [p.data_ptr() for p in params] == ptrs   # stepped in place
    return params, opt


def _complex(dtype):
    def make():
        gen = torch.Generator().manual_seed(0)
        return [torch.randn(4, 3, dtype=dtype, generator=gen).requires_grad_(),
                torch.randn(5, dtype=dtype, generator=gen).requires_grad_(),
                torch.randn((), dtype=dtype, generator=gen).requires_grad_()]
    return make


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
@pytest.mark.parametrize(("name", "options"), CASES, ids=IDS)
def test_complex_parameters_step_as_torch(name, options, dtype):
    params, opt = _run_twins(name, options, _complex(dtype))
    for p in params:
        for value in opt.state[p].values():
            if value.shape == p.shape and value.numel() > 1:
                assert value.dtype == dtype


def test_complex_and_real_parameters_in_one_group():
    def make():
        gen = torch.Generator().manual_seed(0)
        return [torch.randn(3, dtype=torch.complex64, generator=gen).requires_grad_(),
                torch.randn(3, dtype=torch.float32, generator=gen).requires_grad_()]
    _run_twins("Adam", dict(lr=0.01), make)


@pytest.mark.parametrize("name", ["Lion", "LAMB"])
def test_complex_without_a_torch_twin_is_its_real_view(name):
    """optcore-only classes step a complex parameter as its real view."""
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(4, 3, dtype=torch.complex128, generator=gen).requires_grad_()
    r = torch.view_as_real(z.detach()).clone().requires_grad_()
    opt_z, opt_r = getattr(ot, name)([z], lr=0.01), getattr(ot, name)([r], lr=0.01)
    for _ in range(3):
        g = torch.randn(z.shape, dtype=z.dtype, generator=gen)
        z.grad, r.grad = g, torch.view_as_real(g).clone()
        opt_z.step()
        opt_r.step()
        assert torch.equal(torch.view_as_real(z.detach()), r.detach())


def test_complex_grad_of_a_real_dtype_is_refused_and_changes_nothing():
    z = torch.ones(3, dtype=torch.complex64, requires_grad=True)
    opt = ot.Adam([z])
    z.grad_dtype = None           # (torch refuses such a grad by default)
    z.grad = torch.ones(3)
    with pytest.raises((TypeError, ValueError)):
        opt.step()
    assert torch.equal(z.detach(), torch.ones(3, dtype=torch.complex64))
    assert not opt.state[z]


# ---- non-contiguous parameters ----------------------------------------------

def _transposed():
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(3, 5, dtype=torch.float64, generator=gen).t().requires_grad_(),
            torch.randn(4, dtype=torch.float64, generator=gen).requires_grad_()]


def _every_other_column():
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(4, 6, dtype=torch.float64, generator=gen)
    return [torch.nn.Parameter(base[:, ::2]),
            torch.randn(4, dtype=torch.float64, generator=gen).requires_grad_()]


def _channels_last():
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(2, 3, 4, 5, dtype=torch.float64, generator=gen)
            .contiguous(memory_format=torch.channels_last).requires_grad_()]


def _transposed_complex():
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(3, 5, dtype=torch.complex64, generator=gen).t().requires_grad_()]


LAYOUTS = {"transposed": _transposed, "every_other_column": _every_other_column,
           "channels_last": _channels_last, "transposed_complex": _transposed_complex}
NON_CONTIGUOUS_CASES = [c for c in CASES if c[0] in ("SGD", "Adam", "Adagrad")] + [
    ("RMSprop", dict(lr=0.01, centered=True)), ("Rprop", dict(lr=0.01)),
    ("ASGD", dict(lr=0.01, t0=2))]


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize(("name", "options"), NON_CONTIGUOUS_CASES,
                         ids=[f"{n}-{i}" for i, (n, _) in enumerate(NON_CONTIGUOUS_CASES)])
def test_non_contiguous_parameters_step_as_torch(name, options, layout):
    make = LAYOUTS[layout]
    strides = [p.stride() for p in make()]
    params, opt = _run_twins(name, options, make)
    assert [p.stride() for p in params] == strides
    for p in params:
        for value in opt.state[p].values():
            if value.shape == p.shape and value.numel() > 1 and p.is_contiguous():
                assert value.is_contiguous()


@pytest.mark.parametrize("name", ["Adam", "SGD", "Adagrad"])
def test_dense_permuted_state_keeps_the_parameter_strides(name):
    p = torch.randn(3, 5, dtype=torch.float64).t().requires_grad_()
    opt = getattr(ot, name)([p], lr=0.1, **({"momentum": 0.9} if name == "SGD" else {}))
    p.grad = torch.ones_like(p)
    opt.step()
    for key, value in opt.state[p].items():
        if value.numel() > 1:
            assert value.stride() == p.stride(), key


@pytest.mark.parametrize("layout", ["transposed", "channels_last", "every_other_column"])
def test_gradients_laid_out_otherwise_are_read_correctly(layout):
    _run_twins("Adam", dict(lr=0.01), LAYOUTS[layout], grad_layout=lambda g: g.contiguous())
    _run_twins("Adam", dict(lr=0.01), LAYOUTS[layout],
               grad_layout=lambda g: g.t().contiguous().t() if g.dim() == 2 else g)


def test_strided_slice_is_written_into_its_base():
    """The slice's base sees the step; the columns in between are untouched."""
    base = torch.randn(4, 6, dtype=torch.float64)
    before = base.clone()
    p = torch.nn.Parameter(base[:, ::2])
    opt = ot.SGD([p], lr=0.5)
    p.grad = torch.ones_like(p)
    opt.step()
    assert torch.equal(base[:, ::2], before[:, ::2] - 0.5)
    assert torch.equal(base[:, 1::2], before[:, 1::2])


def test_bad_state_of_a_later_tensor_leaves_a_strided_slice_untouched():
    base = torch.randn(4, 6, dtype=torch.float64)
    p = torch.nn.Parameter(base[:, ::2])
    q = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt = ot.Adam([p, q])
    p.grad, q.grad = torch.ones_like(p), torch.ones_like(q)
    opt.step()
    opt.state[q]["exp_avg"] = torch.zeros(3, dtype=torch.float32)   # wrong dtype
    before, state = base.clone(), {k: v.clone() for k, v in opt.state[p].items()}
    with pytest.raises(TypeError, match="exp_avg"):
        opt.step()
    assert torch.equal(base, before)
    for key, value in opt.state[p].items():
        assert torch.equal(value, state[key]), key


def test_state_laid_out_otherwise_is_re_laid_out():
    """A state tensor kept from before the parameter's storage changed layout
    (``p.data = ...``) keeps its values."""
    p = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    ref = p.detach().clone().requires_grad_()
    opt, ref_opt = ot.Adam([p], lr=0.01), torch.optim.Adam([ref], lr=0.01)
    for step in range(3):
        if step == 1:
            p.data = p.data.t().contiguous().t()
        p.grad = torch.full_like(p, 0.5 + step)
        ref.grad = torch.full_like(ref, 0.5 + step)
        opt.step()
        ref_opt.step()
        _assert_close(ref, p, _rtol(p.dtype), "param")
    assert opt.state[p]["exp_avg"].stride() == p.stride()


def test_overlapping_parameter_is_refused():
    p = torch.zeros(1, dtype=torch.float64).expand(3).requires_grad_()
    with pytest.raises(ValueError, match="share memory"):
        ot.Adam([p])
