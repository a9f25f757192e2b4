"""The Examples of every public docstring run as doctests.

Objects are found programmatically (optcore.__all__, the classes' public
methods, optcore.schedules, optcore.reference, optcore.torch), and each
object's own docstring is searched directly: module-level doctest finders skip
Cython functions."""

import doctest
import inspect

import numpy as np
import pytest

import optcore
from optcore import reference, schedules

from support import require_torch


def _public(module, names):
    for name in names:
        obj = getattr(module, name)
        if inspect.ismodule(obj):
            continue
        yield f"{module.__name__}.{name}", obj
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                if not attr.startswith("_") and callable(member):
                    yield f"{module.__name__}.{name}.{attr}", member


OBJECTS = dict(_public(optcore, optcore.__all__))
OBJECTS.update(_public(schedules, schedules.__all__))
OBJECTS.update(_public(reference, [n for n in dir(reference)
                                   if not n.startswith("_")
                                   and callable(getattr(reference, n))
                                   and getattr(getattr(reference, n), "__module__", "")
                                   == reference.__name__]))


def _run(name, obj):
    tests = [t for t in doctest.DocTestFinder(recurse=False).find(
        obj, name, globs={"np": np, "optcore": optcore}) if t.examples]
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in tests:
        runner.run(test)
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
