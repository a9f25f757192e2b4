"""optcore: optimizer-step and loss-gradient kernels (Cython + OpenMP).

Every ``*_step`` function updates its buffers in place, for one array or a list
of arrays (one native call), and has a pure-NumPy twin of the same name in
``optcore.reference``.
"""

import os as _os

from optcore.kernels._runtime import (
    get_num_threads,
    set_num_threads,
    get_parallel_threshold,
    set_parallel_threshold,
    openmp_enabled,
)
from optcore.kernels.sgd import sgd_step
from optcore.kernels.adam import adam_step, adamw_step
from optcore.kernels.rmsprop import rmsprop_step
from optcore.kernels.adagrad import adagrad_step
from optcore.kernels.adadelta import adadelta_step
from optcore.kernels.adamax import adamax_step
from optcore.kernels.nadam import nadam_step
from optcore.kernels.radam import radam_step
from optcore.kernels.mse import mse_loss, mse_grad, mse_loss_grad
from optcore.linear import linear_mse_grad
from optcore.checkpoint import save, load, CheckpointError
from optcore.kernels.lion import lion_step
from optcore.kernels.lamb import lamb_step
from optcore.kernels.grad_utils import (
    global_norm,
    clip_grad_norm_,
    clip_grad_value_,
    all_finite,
    unscale_,
)
from optcore.optim import (SGD, Adam, AdamW, RMSprop, Adagrad, Adadelta, Adamax, NAdam,
                           RAdam, Lion, LAMB)
from optcore import schedules

__version__ = "0.1.0"

__all__ = [
    "sgd_step",
    "adam_step",
    "adamw_step",
    "rmsprop_step",
    "adagrad_step",
    "adadelta_step",
    "adamax_step",
    "nadam_step",
    "radam_step",
    "mse_loss",
    "mse_grad",
    "mse_loss_grad",
    "linear_mse_grad",
    "lion_step",
    "lamb_step",
    "global_norm",
    "clip_grad_norm_",
    "clip_grad_value_",
    "all_finite",
    "unscale_",
    "SGD",
    "Adam",
    "AdamW",
    "RMSprop",
    "Adagrad",
    "Adadelta",
    "Adamax",
    "NAdam",
    "RAdam",
    "Lion",
    "LAMB",
    "schedules",
    "get_num_threads",
    "set_num_threads",
    "get_parallel_threshold",
    "set_parallel_threshold",
    "openmp_enabled",
    "get_include",
    "save",
    "load",
    "CheckpointError",
]


def get_include() -> str:
    """Directory to add to a Cython build's include path so that
    ``cimport optcore.kernels.adam`` (and the others) resolve, as
    ``numpy.get_include()`` does for NumPy."""
    return _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
