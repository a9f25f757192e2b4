"""optcore.torch on torch's own optimizer test data:
``torch.testing._internal.common_optimizers.optim_db``.

For every optimizer of optim_db that optcore.torch has (picked up by name, so a
new optcore.torch class with a torch twin is covered without editing this
file):

- every CPU configuration (``optim_inputs_func`` with torch's implementation
  flags added as torch's own tests add them), float32 and float64, steps a
  small model (parameters of several shapes, a 0-dim and an empty one, one
  that never gets a gradient, one that gets one every other step) exactly like
  torch.optim, step after step, with and without closures: parameters and the
  whole state_dict within ``support.TORCH_RTOL``;
- every error input raises torch's exception type with torch's message
  (``error_regex``), at the time torch raises it (``error_on``), except the
  inputs torch refuses only for its own ``foreach`` implementation: there
  ``foreach`` is a no-op, so optcore accepts them and steps like torch.

What is not run is listed in NOT_RUN / REFUSED / ACCEPTED_FOREACH_ONLY below
with the reason; nothing else is skipped.
"""

import copy
import inspect

import pytest

from support import REQUIRE_TORCH

torch = pytest.importorskip("torch")
ot = pytest.importorskip("optcore.torch")
try:
    # (its test helpers import expecttest: a test dependency of optcore)
    from torch.testing._internal.common_optimizers import (
        OptimizerErrorEnum, _get_optim_inputs_including_global_cliquey_kwargs, optim_db)
except ImportError as exc:                           # pragma: no cover
    if REQUIRE_TORCH:
        raise
    pytest.skip(f"torch's optim_db is not importable: {exc}", allow_module_level=True)

import torch_adapter_support as ts                   # noqa: E402  (needs torch)

pytestmark = pytest.mark.torch

STEPS = 4
DTYPES = [torch.float32, torch.float64]
#: Run for the optimizers optim_db marks supports_complex (as torch's own
#: test_complex runs them), complex parameters viewed as real pairs.
COMPLEX_DTYPES = [torch.complex64, torch.complex128]

# ---- what is not run, and why ------------------------------------------------

#: optim_db optimizers that optcore.torch does not have (yet); a name here
#: that optcore.torch gains is tested automatically.
NOT_IN_OPTCORE: dict[str, str] = {}

#: Configurations optcore refuses on purpose: flag -> reason. Each is checked
#: to raise ValueError at construction (torch itself steps them).
REFUSED = {
    "differentiable": "optcore's kernels update the parameters in place outside "
                      "autograd, so the step cannot be differentiated (use torch.optim)",
    "capturable": "CUDA-graph capture does not apply to CPU tensors",
}

#: Error inputs torch raises only because its foreach implementation cannot
#: take them: desc -> reason. optcore accepts them and steps like torch.
ACCEPTED_FOREACH_ONLY = {
    "lr as Tensor doesn't work with foreach & not capturable":
        "foreach is a no-op in optcore: a one-element tensor lr is read as its value",
    r"betas\[0\] as a Tensor is not supported for capturable=False and foreach=True":
        "foreach is a no-op in optcore: one-element tensor betas are read as their values",
}

#: Parts of optim_db not in these runs (later work), with the reason.
NOT_RUN = {
    "sparse gradients of SGD/Adagrad": "optim_inputs_func has no sparse configs; "
                                       "tests/test_sparse.py steps them against torch",
    "float16/bfloat16": "optcore.torch computes them in float32 (torch op by op in "
                        "the low precision): tests/test_torch_precision.py compares "
                        "within measured tolerances",
    "CUDA/XPU/MPS configs": "optcore.torch is CPU only; optim_inputs_func(device='cpu') "
                            "leaves out capturable and tensor-betas configs",
}


def _infos():
    return [info for info in optim_db if info.optim_cls.__name__ in ot.__all__]


INFOS = _infos()


def test_every_optim_db_optimizer_is_tested_or_listed():
    names = {info.optim_cls.__name__ for info in optim_db}
    missing = names - set(ot.__all__)
    assert missing <= set(NOT_IN_OPTCORE), sorted(missing - set(NOT_IN_OPTCORE))
    assert {"SGD", "Adam", "AdamW"} <= {info.optim_cls.__name__ for info in INFOS}


# ---- configurations ----------------------------------------------------------

def _configs():
    for info in INFOS:
        for dtype in DTYPES + (COMPLEX_DTYPES if info.supports_complex else []):
            inputs = _get_optim_inputs_including_global_cliquey_kwargs("cpu", dtype, info)
            for optim_input in inputs:
                name = info.optim_cls.__name__
                yield pytest.param(name, optim_input.kwargs, dtype,
                                   id=f"{name}-{optim_input.desc}-{str(dtype)[6:]}")


CONFIGS = list(_configs())


#: Optimizers of 2-D parameters only: their model has the same parameters as
#: matrices (the vector ones as columns, the 0-dim gain as 1 x 1).
MATRICES_ONLY = {"Muon"}
#: Optimizers torch.optim cannot step on an empty parameter: their model has
#: none (torch.optim.Adafactor divides by numel ** 0.5: ZeroDivisionError,
#: which optcore.torch.Adafactor raises too, tests/test_adafactor.py).
NO_EMPTY = {"Adafactor"}


def _model(dtype, name=None):
    """Parameters of several shapes: a matrix, a vector, a 0-dim gain, an empty
    tensor, one the loss never uses (grad stays None) and one it uses every
    other step (its step count falls behind); in two groups."""
    gen = torch.Generator().manual_seed(0)

    def param(*shape):
        if name in MATRICES_ONLY:
            shape = (*shape, 1, 1)[:2] if len(shape) < 2 else shape
        return torch.nn.Parameter(torch.randn(shape, generator=gen, dtype=dtype))

    empty = param(0, 3) if name not in NO_EMPTY else torch.nn.Parameter(
        torch.zeros(0, 3, dtype=dtype), requires_grad=False)
    return dict(weight=param(4, 3), bias=param(4), gain=param(), empty=empty,
                unused=param(2, 2), sometimes=param(5))


_X = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
_TARGET = torch.tensor([0.25, -0.5, 0.75, 1.0], dtype=torch.float64)


def _loss(m, step):
    x, target = _X.to(m["weight"].dtype), _TARGET.to(m["weight"].dtype)
    # (reshape: the same loss over the matrix-only model)
    bias, gain = m["bias"].reshape(-1), m["gain"].reshape(())
    if m["weight"].is_complex():
        # A real loss bounded below, without the poles tanh and sin have in
        # the complex plane.
        out = (m["weight"] @ x + bias) * gain
        loss = (out - target).abs().pow(2).sum() + (2.0 * m["empty"]).sum().real
        if step % 2 == 0:
            loss = loss + 0.5 * m["sometimes"].abs().pow(2).sum()
        return loss
    out = torch.tanh(m["weight"] @ x + bias) * gain
    loss = ((out - target) ** 2).sum() + (2.0 * m["empty"]).sum()
    if step % 2 == 0:
        loss = loss + torch.sin(m["sometimes"]).sum()
    return loss


def _info(name):
    return next(i for i in INFOS if i.optim_cls.__name__ == name)


def _groups(m, cls, kwargs):
    """Two groups, the second with half the lr (torch's tests use groups too);
    one group for an optimizer without groups (LBFGS)."""
    if not _info(cls.__name__).supports_param_groups:
        return list(m.values())
    lr = kwargs.get("lr", inspect.signature(cls.__init__).parameters["lr"].default)
    half = torch.tensor(float(lr) / 2) if torch.is_tensor(lr) else lr / 2
    return [{"params": [m["weight"], m["bias"], m["empty"]]},
            {"params": [m["gain"], m["unused"], m["sometimes"]], "lr": half}]


def _run_twins(name, torch_kwargs, optcore_kwargs, dtype):
    """Step torch.optim.<name> and optcore.torch.<name> side by side (each on
    its own model and gradients), comparing after every step."""
    ref_model, model = _model(dtype, name), _model(dtype, name)
    ref = getattr(torch.optim, name)(_groups(ref_model, getattr(torch.optim, name),
                                             torch_kwargs), **copy.deepcopy(torch_kwargs))
    opt = getattr(ot, name)(_groups(model, getattr(ot, name), optcore_kwargs),
                            **copy.deepcopy(optcore_kwargs))
    closure_always = _info(name).step_requires_closure
    rtol = ts.rtol_for(dtype.to_real())
    # SparseAdam takes sparse gradients only: each .grad as torch's tests give it
    sparse_grads = _info(name).only_supports_sparse_grads
    for step in range(STEPS):
        losses = []
        for o, m in ((ref, ref_model), (opt, model)):
            def closure(o=o, m=m):
                o.zero_grad()
                loss = _loss(m, step)
                loss.backward()
                if sparse_grads:
                    for p in m.values():
                        if p.grad is not None:
                            p.grad = p.grad.to_sparse()
                return loss

            if step % 2 or closure_always:
                losses.append(float(o.step(closure).detach()))
            else:
                closure()
                assert o.step() is None
                losses.append(None)
        if losses[0] is not None:
            assert losses[0] == pytest.approx(losses[1], rel=rtol)
        dev = ts.max_rel_dev(ref_model.values(), model.values())
        assert dev <= rtol, f"step {step}: parameters deviate by {dev:.3g}"
        assert model["unused"].grad is None
        _assert_same_state(ref, opt, rtol, torch_kwargs != optcore_kwargs)


def _assert_same_state(ref, opt, rtol, foreach_differs):
    ref_sd, sd = ref.state_dict(), opt.state_dict()
    if foreach_differs:
        for g in ref_sd["param_groups"] + sd["param_groups"]:
            del g["foreach"]
    # (tensor hyperparameters compare by value)
    assert repr(ref_sd["param_groups"]) == repr(sd["param_groups"])
    ts.assert_same_state(_Plain(ref_sd), _Plain(sd), None, rtol=rtol)


class _Plain:
    """A state_dict whose tensor-valued group options are plain numbers, for
    ts.assert_same_state's group comparison."""

    def __init__(self, sd):
        groups = [{k: (v.item() if torch.is_tensor(v) else v) for k, v in g.items()}
                  for g in sd["param_groups"]]
        self._sd = {"state": {k: self._flat(entry) for k, entry in sd["state"].items()},
                    "param_groups": groups}

    @staticmethod
    def _flat(entry):
        """List-valued state (LBFGS's history) as one key per element."""
        flat = {}
        for key, value in entry.items():
            if isinstance(value, list):
                flat[f"{key} length"] = len(value)
                flat.update({f"{key}[{i}]": v for i, v in enumerate(value)})
            else:
                flat[key] = value
        return flat

    def state_dict(self):
        return self._sd


@pytest.mark.parametrize("name, kwargs, dtype", CONFIGS)
def test_optim_db_config_steps_like_torch(name, kwargs, dtype):
    refused = [flag for flag in REFUSED if kwargs.get(flag)]
    if refused:
        params = list(_model(dtype, name).values())
        getattr(torch.optim, name)(params, **copy.deepcopy(kwargs))     # torch takes it
        with pytest.raises(ValueError, match=f"does not support {refused[0]}=True"):
            getattr(ot, name)(params, **copy.deepcopy(kwargs))
        return
    if dtype.is_complex and kwargs.get("fused"):
        # torch's fused kernels take real parameters only; optcore raises as torch
        for cls in (getattr(torch.optim, name), getattr(ot, name)):
            params = list(_model(dtype).values())
            with pytest.raises(RuntimeError, match="requires all the params to be floating"):
                opt = cls(params, **copy.deepcopy(kwargs))
                _loss(dict(zip(_model(dtype), params)), 0).backward()
                opt.step()
        return
    _run_twins(name, kwargs, kwargs, dtype)


# ---- error inputs -------------------------------------------------------------

def _error_inputs():
    for info in INFOS:
        name = info.optim_cls.__name__
        for n, error_input in enumerate(info.optim_error_inputs_func(device="cpu",
                                                                     dtype=torch.float32)):
            desc = error_input.optimizer_error_input.desc
            yield pytest.param(name, n, id=f"{name}-{n}-{desc}")


def _error_input(name, n):
    info = next(i for i in INFOS if i.optim_cls.__name__ == name)
    return info.optim_error_inputs_func(device="cpu", dtype=torch.float32)[n]


@pytest.mark.parametrize("name, n", list(_error_inputs()))
def test_optim_db_error_input_raises_like_torch(name, n):
    error_input = _error_input(name, n)
    optim_input = error_input.optimizer_error_input
    params, kwargs = optim_input.params, optim_input.kwargs
    cls = getattr(ot, name)
    if optim_input.desc in ACCEPTED_FOREACH_ONLY:
        with pytest.raises(error_input.error_type, match=error_input.error_regex):
            getattr(torch.optim, name)([torch.zeros(2, requires_grad=True)], **kwargs)
        torch_kwargs = dict(kwargs, foreach=False)
        _run_twins(name, torch_kwargs, kwargs, torch.float32)
        return
    expect = (pytest.warns if issubclass(error_input.error_type, Warning)
              else pytest.raises)
    if error_input.error_on == OptimizerErrorEnum.CONSTRUCTION_ERROR:
        with expect(error_input.error_type, match=error_input.error_regex):
            cls(params, **kwargs)
    else:
        opt = cls(params, **kwargs)
        with expect(error_input.error_type, match=error_input.error_regex):
            opt.step()


def test_every_foreach_only_exception_is_an_optim_db_input():
    """The exceptions are torch's inputs (none of them stale)."""
    descs = {e.optimizer_error_input.desc for info in INFOS
             for e in info.optim_error_inputs_func(device="cpu", dtype=torch.float32)}
    assert set(ACCEPTED_FOREACH_ONLY) <= descs
