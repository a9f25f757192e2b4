"""The docstrings of the optimizer classes and schedules: numpydoc-valid, and
every example runs (doctests with checked output).

numpydoc is a documentation tool, not a dependency: without it the
validation tests skip (the doctests still run). The torch classes follow the
optional-dependency rule of support.py (skip, or fail with
OPTCORE_REQUIRE_TORCH=1).
"""

import doctest
import inspect

import numpy as np
import pytest

import optcore
from optcore import schedules
from optcore.optim import family
from support import require_module, require_torch

#: numpydoc checks every object here must pass: docstring present, summary,
#: parameters documented and known and in order, returns, examples.
CHECKS = ("GL08", "SS01", "SS02", "SS03", "SS05", "PR01", "PR02", "PR03", "PR04",
          "RT01", "EX01")


def _public_methods(cls):
    for name, member in vars(cls).items():
        if name.startswith("_") and name != "__call__":
            continue
        if inspect.isfunction(member) or isinstance(member, property):
            yield name


def _names(module_name, cls):
    # The class, its own public methods and those it inherits from optcore.
    yield f"{module_name}.{cls.__name__}"
    for klass in cls.__mro__:
        if not klass.__module__.startswith("optcore"):
            continue
        for name in _public_methods(klass):
            yield f"{module_name}.{cls.__name__}.{name}"


def numpy_objects():
    names = []
    for name in [*family.__all__, "LBFGS", "Muon", "SparseAdam"]:
        names += _names("optcore", getattr(optcore, name))
    names += _names("optcore.optim", optcore.optim.Optimizer)
    names += _names("optcore.optim", optcore.optim.OptimizerState)
    return sorted(set(names))


def schedule_objects():
    names = ["optcore.schedules"]
    for name in schedules.__all__:
        obj = getattr(schedules, name)
        if inspect.isclass(obj):
            names += _names("optcore.schedules", obj)
        else:
            names.append(f"optcore.schedules.{name}")
    return sorted(set(names))


def torch_objects():
    import optcore.torch as ot
    names = []
    for name in ot.__all__:
        cls = getattr(ot, name)
        names.append(f"optcore.torch.{name}")
        for klass in cls.__mro__:
            if klass.__module__.startswith("optcore"):
                names += [f"optcore.torch.{name}.{m}" for m in _public_methods(klass)]
    return sorted(set(names))


def _resolve(dotted):
    import importlib
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


def _validate(dotted):
    validate = require_module("numpydoc.validate")
    result = validate.validate(dotted)
    errors = [f"{code}: {msg}" for code, msg in result["errors"] if code in CHECKS]
    assert not errors, f"{dotted}:\n" + "\n".join(errors)


def _run_doctests(dotted):
    obj = _resolve(dotted)
    if isinstance(obj, property):
        obj = obj.fget
    finder = doctest.DocTestFinder(recurse=False)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    tests = [t for t in finder.find(obj, dotted, globs={}) if t.examples]
    assert tests, f"{dotted} has no examples"
    old = np.get_printoptions()
    try:
        for test in tests:
            runner.run(test)
    finally:
        np.set_printoptions(**old)
        optcore.set_num_threads(None)
    assert runner.failures == 0, f"{runner.failures} example(s) of {dotted} failed"


@pytest.mark.parametrize("dotted", numpy_objects() + schedule_objects())
def test_numpydoc(dotted):
    _validate(dotted)


@pytest.mark.parametrize("dotted", numpy_objects() + schedule_objects())
def test_examples(dotted):
    _run_doctests(dotted)


def test_torch_docstrings():
    require_torch()
    for dotted in torch_objects():
        _run_doctests(dotted)
        _validate(dotted)


def test_class_docstrings_follow_signatures():
    # Rendered from the spec in the constructor's order, defaults included.
    sig = inspect.signature(optcore.Adam.__init__)
    doc = optcore.Adam.__doc__
    positions = [doc.index(f"\n{name} : ") for name in sig.parameters if name != "self"]
    assert positions == sorted(positions)
    assert "betas : tuple of float, default (0.9, 0.999)" in doc
    assert "Each must be in ``[0, 1)``." in doc
    assert "``max_exp_avg_sq`` (only with ``amsgrad``)" in doc
