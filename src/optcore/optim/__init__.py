"""Stateful optimizers for NumPy parameters (torch.optim's classes, arguments,
defaults and state keys), each step one multi-tensor kernel call per group."""

from optcore.optim.base import Optimizer, OptimizerState
from optcore.optim.family import *  # noqa: F401,F403
from optcore.optim.family import __all__ as _classes
from optcore.optim.lbfgs import LBFGS
from optcore.optim.muon import Muon
from optcore.optim.sparse_adam import SparseAdam

__all__ = ["Optimizer", "OptimizerState", *_classes, "LBFGS", "Muon", "SparseAdam"]
