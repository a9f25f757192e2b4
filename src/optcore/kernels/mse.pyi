# Type stubs of optcore.kernels.mse (hand-written: not a spec kernel).

from typing import Literal

import numpy as np
import numpy.typing as npt

_Reduction = Literal["mean", "sum", "none"]

def mse_loss(pred: npt.ArrayLike, target: npt.ArrayLike,
             reduction: _Reduction = ...) -> float | np.ndarray: ...
def mse_grad(pred: npt.ArrayLike, target: npt.ArrayLike, *, reduction: _Reduction = ...,
             out: np.ndarray | None = ...) -> np.ndarray: ...
def mse_loss_grad(pred: npt.ArrayLike, target: npt.ArrayLike, *,
                  reduction: _Reduction = ...,
                  out: np.ndarray | None = ...) -> tuple[float | np.ndarray, np.ndarray]: ...
