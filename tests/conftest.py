"""Fixtures shared by the tests (helpers live in support.py)."""

import numpy as np
import pytest

import optcore
from support import require_torch


@pytest.fixture
def torch():
    return require_torch()


@pytest.fixture
def rng(request):
    # Fresh inputs per test, reproducible from the test's id.
    import zlib
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def num_threads(request):
    optcore.set_num_threads(request.param)
    yield request.param
    optcore.set_num_threads(None)
