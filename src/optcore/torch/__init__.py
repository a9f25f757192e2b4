"""PyTorch drop-in: torch.optim optimizers whose steps run optcore's kernels.

``from optcore.torch import Adam`` in place of ``from torch.optim import Adam``:
the classes subclass ``torch.optim.Optimizer`` and take torch.optim's
arguments, keep torch.optim's state keys (so state_dicts move between the two
both ways), and work with torch's lr_schedulers, hooks, ``zero_grad`` and
``add_param_group``. Each step updates the parameters in place, zero-copy, in
one multi-tensor kernel call per parameter group.

Parameters must be CPU, dense, C-contiguous float32/float64 tensors (gradients
dense too, but for SparseAdam, SGD and Adagrad: sparse COO where torch.optim
takes them, see optcore.torch.sparse); anything
else is rejected with an error (never copied). ``foreach`` and ``fused`` are
accepted and have no effect (every step is already one fused multi-tensor
call); ``capturable=True`` and ``differentiable=True`` cannot be honoured and
raise. Inputs torch.optim refuses only for its foreach implementation (a
tensor ``lr`` or tensor ``betas`` with ``foreach=True``) are therefore
accepted; any other input it refuses raises its exception and message.

Importing this module imports torch; ``import optcore`` alone never does.
"""

try:
    import torch as _torch  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised without torch only
    raise ImportError(
        "optcore.torch needs PyTorch; install it (pip install 'optcore[torch]') "
        "or use the NumPy optimizers in optcore") from exc

from optcore.torch.optimizers import *  # noqa: F401,F403
from optcore.torch.optimizers import __all__ as _kernel_classes
from optcore.torch.lbfgs import LBFGS
from optcore.torch.muon import Muon
from optcore.torch.sparse import SparseAdam
from optcore.torch.adafactor import Adafactor

__all__ = [*_kernel_classes, "LBFGS", "Muon", "SparseAdam", "Adafactor"]
