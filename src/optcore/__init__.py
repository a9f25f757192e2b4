"""optcore: optimizer-step and loss-gradient kernels (Cython + OpenMP).

Every ``*_step`` function updates its buffers in place, for one array or a list
of arrays (one native call), and has a pure-NumPy twin of the same name in
``optcore.reference``.
"""

import os as _os

from optcore._version import __version__

from optcore.kernels._runtime import (
    get_num_threads,
    set_num_threads,
    get_parallel_threshold,
    set_parallel_threshold,
    openmp_enabled,
    get_dynamic_threads,
    set_dynamic_threads,
)
from optcore._kernels import *  # noqa: F401,F403  (every step kernel of the spec)
from optcore._kernels import __all__ as _kernel_names
from optcore.kernels.mse import mse_loss, mse_grad, mse_loss_grad
from optcore.linear import linear_mse_grad
from optcore.checkpoint import save, load, CheckpointError
from optcore.kernels.grad_utils import (
    global_norm,
    clip_grad_norm_,
    clip_grad_value_,
    all_finite,
    unscale_,
)
from optcore.optim.family import *  # noqa: F401,F403  (every optimizer class)
from optcore.optim.family import __all__ as _optimizer_names
from optcore.optim.lbfgs import LBFGS
from optcore.optim.muon import Muon
from optcore.optim.sparse_adam import SparseAdam
from optcore.kernels.sparse_rows import sparse_adam_rows, adagrad_rows, sgd_rows
from optcore.kernels.adafactor import adafactor_step
from optcore.optim.adafactor import Adafactor
from optcore import schedules, precision
from optcore.precision import QuantizedState
from optcore._config import build_info, show_config


__all__ = [
    *_kernel_names,
    "mse_loss",
    "mse_grad",
    "mse_loss_grad",
    "linear_mse_grad",
    "global_norm",
    "clip_grad_norm_",
    "clip_grad_value_",
    "all_finite",
    "unscale_",
    *_optimizer_names,
    "LBFGS",
    "Muon",
    "SparseAdam",
    "sparse_adam_rows",
    "adagrad_rows",
    "sgd_rows",
    "Adafactor",
    "adafactor_step",
    "schedules",
    "precision",
    "QuantizedState",
    "get_num_threads",
    "set_num_threads",
    "get_parallel_threshold",
    "set_parallel_threshold",
    "openmp_enabled",
    "get_dynamic_threads",
    "set_dynamic_threads",
    "get_include",
    "show_config",
    "build_info",
    "save",
    "load",
    "CheckpointError",
]


def get_include() -> str:
    """Directory of optcore's ``.pxd`` files, for a Cython build's include path.

    With it on the include path ``cimport optcore.kernels.adam`` (and the
    others) resolve, as ``numpy.get_include()`` does for NumPy.

    Returns
    -------
    str
        The directory that holds the ``optcore`` package.

    See Also
    --------
    numpy.get_include : The same for NumPy's headers.

    Examples
    --------
    >>> import os
    >>> os.path.isfile(os.path.join(optcore.get_include(), "optcore", "kernels", "adam.pxd"))
    True
    """
    return _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
