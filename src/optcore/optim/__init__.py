"""Stateful optimizers for NumPy parameters (torch.optim's classes, arguments,
defaults and state keys), each step one multi-tensor kernel call per group."""

from optcore.optim.base import Optimizer, OptimizerState
from optcore.optim.family import (SGD, Adam, AdamW, RMSprop, Adagrad, Adadelta,
                                  Adamax, NAdam, RAdam, Lion, LAMB)

__all__ = ["Optimizer", "OptimizerState", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad",
           "Adadelta", "Adamax", "NAdam", "RAdam", "Lion", "LAMB"]
