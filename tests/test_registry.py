"""The library's kernel spec (optcore._spec) against the test registry
(tests/registry.py), written independently: the only test module that imports
the spec. A disagreement means one of the two describes a kernel wrongly."""

import inspect

import pytest

import optcore
from registry import KERNELS, OPTIMIZER_STEPS, TORCH_TWINS, by_name

spec = pytest.importorskip("optcore._spec")


def _spec_kernels():
    """Every public kernel the spec describes (aliases such as adamw_step
    included), name -> spec entry."""
    out = {}
    for k in spec.KERNELS:
        out[k.name] = k
        for alias in (k.aliases or {}):
            out[alias] = k
    return out


SPEC = _spec_kernels()
SPEC_STEPS = sorted(n for n in SPEC if n.endswith("_step"))


def test_same_optimizer_kernels():
    assert SPEC_STEPS == sorted(e.name for e in OPTIMIZER_STEPS)


@pytest.mark.parametrize("name", SPEC_STEPS)
def test_same_buffers_roles_and_needs(name):
    entry, kernel = by_name(name), SPEC[name]
    assert [b.name for b in kernel.buffers] == [b.name for b in entry.buffers]
    assert [b.role for b in kernel.buffers] == [b.role for b in entry.buffers]
    for b in kernel.buffers:
        if b.needed is None:
            assert entry.buf(b.name).needed({}), b.name
        else:
            # the spec's condition names one option; the registry's needs it on
            assert b.needed.option in {"momentum", "amsgrad", "centered"}, b.needed
            assert not entry.buf(b.name).needed({}), b.name


@pytest.mark.parametrize("name", SPEC_STEPS)
def test_same_hyperparameters(name):
    entry, kernel = by_name(name), SPEC[name]
    fixed = set((kernel.aliases or {}).get(name, {})) - {"defaults"}   # set by the alias
    assert {h.name for h in kernel.hypers if h.python} - fixed == set(entry.hyper)


@pytest.mark.parametrize("name", SPEC_STEPS)
def test_registry_calls_the_public_signature(name):
    entry = by_name(name)
    try:
        params = inspect.signature(entry.fast).parameters
    except (TypeError, ValueError):
        pytest.skip("compiled function without a signature")
    for b in entry.buffers:
        assert b.name in params, b.name
        kind = params[b.name].kind
        assert (kind == inspect.Parameter.KEYWORD_ONLY) == b.keyword, b.name


def test_torch_twins_have_classes():
    for entry in TORCH_TWINS:
        assert hasattr(optcore, entry.torch_class), entry.torch_class
    assert all(e.name in SPEC for e in KERNELS if e.name.endswith("_step"))
