"""The numpydoc docstrings of the hand-written functions: the MSE loss, the
linear model and the gradient utilities.

They are kept here, in plain Python, rather than in the ``.pyx`` files so that
the compiled modules stay short and ``optcore.reference`` can render its twins'
docstrings from the same text without importing compiled code. Each module
assigns them with ``assign`` (the Cython functions are compiled with
``binding=True``, so their ``__doc__`` is writable).
"""

from __future__ import annotations

from typing import Any, MutableMapping

_BUFFER_ERRORS = """TypeError
    If an array is not float32 or float64, or the arrays' dtypes differ.
ValueError
    If the arrays' sizes differ"""

_UPDATED = """, or a gradient is not C-contiguous or is read-only (it is updated in
    place)"""

_GRADS = """grads : numpy.ndarray or list of numpy.ndarray
    The gradients: float32 or float64 (one dtype), C-contiguous and writable;
    updated in place."""

_ARRAYS = """arrays : numpy.ndarray or list of numpy.ndarray
    One array or a list of them (float32 or float64, one dtype), taken as one
    vector."""

_MSE_ARGS = """pred : numpy.ndarray
    The predictions: float32 or float64.
target : numpy.ndarray
    The targets: the shape and dtype of ``pred``."""

_OUT = """out : numpy.ndarray, optional
    Where the gradient is written (the size and dtype of ``pred``,
    C-contiguous and writable); a new array when None."""

_MSE_RAISES = """Raises
------
TypeError
    If ``pred``, ``target`` (or ``out``) are not float32 or float64 arrays of
    one dtype.
ValueError
    If ``reduction`` is unknown, or the shapes or sizes of the arrays differ."""

DOCS: dict[str, str] = {
    "mse_loss": f"""Mean (or summed) squared error of ``pred`` against ``target``.

The loss is accumulated in double precision, the same bits for any thread
count. An empty input gives NaN for "mean" (as torch) and 0.0 for "sum".

Parameters
----------
{_MSE_ARGS}
reduction : {{"mean", "sum", "none"}}, default "mean"
    Mean or sum of the squared errors, or ``"none"``: the squared errors
    themselves.

Returns
-------
float or numpy.ndarray
    The loss: a float for "mean" and "sum", an array of the squared errors
    (the shape and dtype of ``pred``) for "none".

{_MSE_RAISES}

See Also
--------
mse_loss_grad : The loss and its gradient in one pass.

Examples
--------
>>> import numpy as np
>>> import optcore
>>> pred = np.array([1.0, 2.0, 3.0])
>>> target = np.array([1.0, 0.0, 0.0])
>>> optcore.mse_loss(pred, target)
4.333333333333333
>>> optcore.mse_loss(pred, target, "sum")
13.0
""",
    "mse_grad": f"""Gradient of ``mse_loss(pred, target, reduction)`` with respect to ``pred``.

``2 * (pred - target) / n`` for "mean", without ``/ n`` for "sum" and
"none".

Parameters
----------
{_MSE_ARGS}
reduction : {{"mean", "sum", "none"}}, default "mean"
    The reduction of the loss the gradient is of.
{_OUT}

Returns
-------
numpy.ndarray
    The gradient, the shape and dtype of ``pred`` (``out`` when given).

{_MSE_RAISES}

See Also
--------
mse_loss_grad : The loss and its gradient in one pass.

Examples
--------
>>> import numpy as np
>>> import optcore
>>> pred = np.array([1.0, 2.0, 3.0])
>>> target = np.array([1.0, 0.0, 0.0])
>>> optcore.mse_grad(pred, target, reduction="sum")
array([0., 4., 6.])
""",
    "mse_loss_grad": f"""The MSE loss and its gradient, computed in one pass over the data.

Parameters
----------
{_MSE_ARGS}
reduction : {{"mean", "sum", "none"}}, default "mean"
    Mean or sum of the squared errors, or ``"none"`` (the squared errors).
{_OUT}

Returns
-------
loss : float or numpy.ndarray
    ``mse_loss(pred, target, reduction)``.
grad : numpy.ndarray
    ``mse_grad(pred, target, reduction=reduction)`` (``out`` when given).

{_MSE_RAISES}

See Also
--------
mse_loss : The loss alone.
mse_grad : The gradient alone.

Examples
--------
>>> import numpy as np
>>> import optcore
>>> loss, grad = optcore.mse_loss_grad(np.array([1.0, 3.0]), np.array([0.0, 1.0]))
>>> loss, grad
(2.5, array([1., 2.]))
""",
    "linear_mse_grad": """Loss and gradients of the linear model ``pred = X @ w + b`` under MSE.

The matrix products go through NumPy (BLAS); the residual, the loss and its
gradient come from the fused one-pass MSE kernel.

Parameters
----------
X : numpy.ndarray
    The inputs, shape (n, d), float32 or float64.
y : numpy.ndarray
    The targets, the shape of ``X @ w`` and the dtype of ``X``.
w : numpy.ndarray
    The weights, shape (d,) or (d, k), the dtype of ``X``.
b : numpy.ndarray, optional
    The bias: shape (), (1,) or (k,), the dtype of ``X``; None for no bias.
reduction : {"mean", "sum"}, default "mean"
    The reduction of ``mse_loss(pred, y, reduction)``.

Returns
-------
loss : float
    The loss.
grad_w : numpy.ndarray
    Its gradient with respect to ``w`` (the shape of ``w``).
grad_b : numpy.ndarray or None
    Its gradient with respect to ``b`` (the shape of ``b``); None without
    ``b``.

Raises
------
TypeError
    If an array is not float32 or float64, or the dtypes differ.
ValueError
    If ``reduction`` is unknown or the shapes do not fit together.

Examples
--------
>>> import numpy as np
>>> import optcore
>>> X = np.array([[1.0, 0.0], [0.0, 2.0]])
>>> loss, grad_w, grad_b = optcore.linear_mse_grad(X, np.zeros(2), np.ones(2))
>>> loss, grad_w, grad_b
(2.5, array([1., 4.]), None)
""",
    "global_norm": f"""The norm of all elements of ``arrays``, as if concatenated into one vector.

``torch.nn.utils.get_total_norm``. Accumulated in double, the same bits for
any thread count, and free of overflow and underflow where the norm itself is
representable. NaN anywhere gives NaN; an infinity (and no NaN) gives inf. An
empty list gives 0.0.

Parameters
----------
{_ARRAYS}
norm_type : float, default 2.0
    The order ``p`` of the norm: any ``p > 0``, or ``inf`` for
    ``max(abs(x))``.

Returns
-------
float
    The norm.

Raises
------
{_BUFFER_ERRORS}, or ``norm_type`` is not a positive number or inf.

See Also
--------
clip_grad_norm_ : Scale gradients to a maximum global norm.

Examples
--------
>>> import numpy as np
>>> import optcore
>>> optcore.global_norm([np.array([3.0]), np.array([4.0])])
5.0
>>> optcore.global_norm(np.array([3.0, -4.0]), float("inf"))
4.0
""",
    "clip_grad_norm_": f"""Scale ``grads`` in place so that their global norm is at most ``max_norm``.

``torch.nn.utils.clip_grad_norm_``'s rule: ``grads *= min(max_norm /
(total_norm + 1e-6), 1)``, a NaN coefficient (NaN norm) included; with an
infinite norm the coefficient is 0 (finite values become 0, infinities NaN).
The norm is ``global_norm``'s (double; torch accumulates float32 gradients
in float32); the coefficient is computed in double and rounded once to the
gradients' dtype.

Parameters
----------
{_GRADS}
max_norm : float
    The largest global norm the gradients keep.
norm_type : float, default 2.0
    The order of the norm, as in ``global_norm``.
error_if_nonfinite : bool, default False
    Raise (and write nothing) when the norm is NaN or infinite.

Returns
-------
float
    The global norm before clipping.

Raises
------
RuntimeError
    With ``error_if_nonfinite``, if the norm is NaN or infinite.
{_BUFFER_ERRORS}{_UPDATED}, or ``norm_type`` is not a positive number or inf.

See Also
--------
global_norm : The norm alone.

Examples
--------
>>> import numpy as np
>>> import optcore
>>> g = np.array([3.0, 4.0])
>>> optcore.clip_grad_norm_(g, 1.0)
5.0
>>> g.round(4)
array([0.6, 0.8])
""",
    "clip_grad_value_": f"""Clamp ``grads`` in place to ``[-clip_value, clip_value]``.

``torch.nn.utils.clip_grad_value_``: clamp_min then clamp_max. NaN gradients
stay NaN; a NaN ``clip_value`` makes every element NaN.

Parameters
----------
{_GRADS}
clip_value : float
    The bound of the absolute values.

Returns
-------
None
    The gradients are clamped in place.

Raises
------
{_BUFFER_ERRORS}{_UPDATED}, or ``clip_value`` is not a real number.

Examples
--------
>>> import numpy as np
>>> import optcore
>>> g = np.array([-3.0, 0.5, 2.0])
>>> optcore.clip_grad_value_(g, 1.0)
>>> g
array([-1. ,  0.5,  1. ])
""",
    "all_finite": f"""Whether no element of ``arrays`` is NaN, +inf or -inf.

Stops early once a non-finite value is found.

Parameters
----------
{_ARRAYS}

Returns
-------
bool
    True when every element is finite.

Raises
------
{_BUFFER_ERRORS}.

Examples
--------
>>> import numpy as np
>>> import optcore
>>> optcore.all_finite([np.array([1.0, 2.0]), np.array([3.0])])
True
>>> optcore.all_finite(np.array([1.0, np.nan]))
False
""",
    "unscale_": f"""Multiply ``grads`` by ``inv_scale`` in place; report any NaN or infinity.

The CPU semantics of ``torch._amp_foreach_non_finite_check_and_unscale_``:
the check is on the values before scaling, and ``inv_scale == 1`` leaves the
values untouched. ``inv_scale`` is used in the gradients' dtype (torch keeps
it as a float32 tensor; the two agree for the power-of-two scales GradScaler
uses).

Parameters
----------
{_GRADS}
inv_scale : float
    The factor, the inverse of the loss scale.

Returns
-------
bool
    ``found_inf``: True when any gradient was NaN or infinite.

Raises
------
{_BUFFER_ERRORS}{_UPDATED}, or ``inv_scale`` is not a real number.

Examples
--------
>>> import numpy as np
>>> import optcore
>>> g = np.array([2.0, -4.0])
>>> optcore.unscale_(g, 0.5)
False
>>> g
array([ 1., -2.])
""",
}


def assign(namespace: MutableMapping[str, Any], names: tuple[str, ...]) -> None:
    """Set the docstring of each of ``names`` in ``namespace`` from ``DOCS``.

    Parameters
    ----------
    namespace : mapping
        A module's globals.
    names : tuple of str
        The functions to document.
    """
    for name in names:
        namespace[name].__doc__ = DOCS[name]
