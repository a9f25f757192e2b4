"""Every public docstring is a complete numpydoc docstring, and its Examples
run as doctests.

Objects are found programmatically (optcore.__all__, the classes' public
methods, optcore.schedules, optcore.reference, optcore.linear, optcore.torch,
optcore.numba), and each object's own docstring is searched directly:
module-level doctest finders skip Cython functions. There is no list of
exceptions: every object found passes."""

import doctest
import inspect

import numpy as np
import pytest

import optcore
import optcore.linear
import optcore.optim
from optcore import reference, schedules

from support import require_module, require_torch

#: numpydoc checks every public object passes: a docstring, a summary line,
#: every parameter documented and none unknown, a Returns section where the
#: code returns, an Examples section.
NUMPYDOC_CHECKS = ("GL08", "SS01", "PR01", "PR02", "RT01", "EX01")


def _public(module, names):
    for name in names:
        obj = getattr(module, name)
        if inspect.ismodule(obj):
            continue
        yield f"{module.__name__}.{name}", obj
        if inspect.isclass(obj):
            # Its public methods and properties, inherited ones included, each
            # under the class that defines it (so a base's are found once).
            for klass in obj.__mro__:
                if not klass.__module__.startswith("optcore"):
                    continue
                for attr, member in vars(klass).items():
                    if not attr.startswith("_") and (callable(member)
                                                     or isinstance(member, property)):
                        yield f"{klass.__module__}.{klass.__qualname__}.{attr}", member


OBJECTS = dict(_public(optcore, optcore.__all__))
OBJECTS.update(_public(schedules, schedules.__all__))
OBJECTS.update(_public(reference, [n for n in dir(reference)
                                   if not n.startswith("_")
                                   and callable(getattr(reference, n))
                                   and getattr(getattr(reference, n), "__module__", "")
                                   == reference.__name__]))
OBJECTS.update(_public(optcore.linear, optcore.linear.__all__))
OBJECTS.update(_public(optcore.optim, ["Optimizer", "OptimizerState"]))


def _run(name, obj):
    if isinstance(obj, property):
        obj = obj.fget
    tests = [t for t in doctest.DocTestFinder(recurse=False).find(
        obj, name, globs={"np": np, "optcore": optcore}) if t.examples]
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    old = np.get_printoptions()
    try:
        for test in tests:
            runner.run(test)
    finally:       # an example may change the print options or the thread count
        np.set_printoptions(**old)
        optcore.set_num_threads(None)
    failed, attempted = runner.summarize(verbose=False)
    assert failed == 0, f"{failed} of {attempted} examples of {name} failed"
    return attempted


def test_some_docstrings_have_examples():
    assert sum(_run(n, o) for n, o in OBJECTS.items()) > 0


@pytest.mark.parametrize("name", sorted(OBJECTS))
def test_docstring_examples(name):
    _run(name, OBJECTS[name])


def test_torch_docstring_examples():
    require_torch()
    import optcore.torch as ot
    for name, obj in _public(ot, ot.__all__):
        _run(name, obj)


def _numba_objects():
    require_module("numba")
    import optcore.numba as onb
    return dict(_public(onb, onb.__all__))


def _torch_objects():
    require_torch()
    import optcore.torch as ot
    return dict(_public(ot, ot.__all__))


def _numpydoc_errors(name):
    validate = require_module("numpydoc.validate")
    result = validate.validate(name)
    return [f"{name} {code}: {message}" for code, message in result["errors"]
            if code in NUMPYDOC_CHECKS]


def test_objects_enumerated():
    # The enumeration finds what it should (a broken one would pass vacuously).
    assert {"optcore.adam_step", "optcore.sgd_step", "optcore.unscale_",
            "optcore.optim.base.Optimizer.step", "optcore._schedulers.ReduceOnPlateau.step",
            "optcore.reference.adam_step", "optcore.linear.linear_mse_grad"} <= set(OBJECTS)
    assert set(optcore.reference.__all__) <= {n.rsplit(".", 1)[1] for n in OBJECTS
                                             if n.startswith("optcore.reference.")}


@pytest.mark.parametrize("name", sorted(OBJECTS))
def test_numpydoc(name):
    errors = _numpydoc_errors(name)
    assert not errors, "\n".join(errors)


def test_numba_docstrings():
    objects = _numba_objects()
    assert "optcore.numba.adam_step_f32" in objects
    errors = [e for name in sorted(objects) for e in _numpydoc_errors(name)]
    assert not errors, "\n".join(errors)
    for name, obj in objects.items():
        assert _run(name, obj) > 0, f"{name} has no examples"


def test_torch_numpydoc():
    objects = _torch_objects()
    errors = [e for name in sorted(objects) for e in _numpydoc_errors(name)]
    assert not errors, "\n".join(errors)


def test_distributed_numpydoc():
    # The examples of optcore.distributed need several MPI processes: they run
    # under mpirun in tests/test_distributed_mpi.py; validated here.
    import optcore.distributed as od
    objects = dict(_public(od, od.__all__))
    assert "optcore.distributed.zero.ZeroOptimizer.step" in objects or \
        "optcore.distributed.ZeroOptimizer.step" in objects, sorted(objects)
    errors = [e for name in sorted(objects) for e in _numpydoc_errors(name)]
    assert not errors, "\n".join(errors)
