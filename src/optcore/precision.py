"""Low-precision storage of parameters and optimizer states, defined in NumPy.

The step kernels compute in float32 whatever the storage and round each
stored element once; this module defines those roundings bit for bit (the
kernels equal it, tests hold them to it) and the block-quantized int8 state:

- **bfloat16**: round to nearest even on the 16 dropped bits of a float32
  (NaN stays NaN); **stochastic** rounding adds 16 random bits below the kept
  ones and truncates, so that it rounds up with probability equal to the
  distance from the lower neighbour in ulps (unbiased). The random bits come
  from a counter-based hash of (seed, step, tensor, element index): the same
  for any thread count.
- **float16**: IEEE round to nearest even (NumPy's ``astype``); stochastic
  rounding adds 13 random bits below a normal float16's kept fraction bits
  and truncates, and below ``2**-14`` (the subnormal grid, ``2**-24`` apart)
  compares the distance in grid units with 23 random bits.
- **int8 states** (:class:`QuantizedState`): blocks of :data:`QBLOCK`
  elements, one float32 absmax per block, and a floating-point-like code per
  element: the signed map (first moments, momentum) is a sign bit, 4 exponent
  and 3 fraction bits of ``|x| / absmax`` over ``[2**-15, 1]``; the unsigned
  map (second moments) 4 exponent and 4 fraction bits. Code 0 is zero.
  Quantizing rounds to nearest (ties to even); below ``2**-15`` the signed
  map rounds to 0 or ``2**-15`` (nearest), the unsigned map to ``2**-15``
  unless the value is exactly 0, so that no adaptive denominator is ever
  rounded to zero. A block holding a non-finite value keeps it in its absmax
  and codes 0: it reads back as NaN. A block whose absmax is subnormal is
  scaled by ``2**24`` (exactly) before its reciprocal is taken.

ml_dtypes is imported only to make a bfloat16 array (``bfloat16_array``);
arrays of it are handled as their 16-bit patterns.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["QBLOCK", "MIN_QUANTIZED_SIZE", "QuantizedState", "bfloat16_round",
           "stochastic_round", "bfloat16_array", "parameter_seed"]

#: Elements per int8 quantization block (one float32 absmax each).
QBLOCK = 256
#: Tensors with fewer elements keep float32 state in the optimizer classes.
MIN_QUANTIZED_SIZE = 4096

_U32 = np.uint32


def _bits(x: NDArray[np.float32]) -> NDArray[np.uint32]:
    return np.ascontiguousarray(x, dtype=np.float32).view(_U32)


def _floats(u: NDArray[np.uint32]) -> NDArray[np.float32]:
    return np.ascontiguousarray(u, dtype=_U32).view(np.float32)


def is_bfloat16(dtype: Any) -> bool:
    """Whether ``dtype`` is ml_dtypes' bfloat16 (recognised without importing it)."""
    dt = np.dtype(dtype)
    return dt.name == "bfloat16" and dt.itemsize == 2


def machine_eps(dtype: Any) -> float:
    """The machine epsilon of a float dtype, ml_dtypes' bfloat16 (2**-7)
    included (recognised without importing it), as torch.finfo gives it."""
    if is_bfloat16(dtype):
        return 2.0 ** -7
    return float(np.finfo(dtype).eps)


def bfloat16_array(x: ArrayLike) -> NDArray[Any]:
    """``x`` rounded to an ``ml_dtypes.bfloat16`` array (nearest even; needs ml_dtypes).

    Parameters
    ----------
    x : array_like
        Values to round.

    Returns
    -------
    numpy.ndarray
        A new bfloat16 array of ``x``'s shape.

    Examples
    --------
    >>> from optcore.precision import bfloat16_array
    >>> bfloat16_array([1.0, 1.00390625]).astype("float32")
    array([1., 1.], dtype=float32)
    """
    import ml_dtypes

    x = np.asarray(x, dtype=np.float32)
    return bf16_nearest(x).reshape(x.shape).view(ml_dtypes.bfloat16)


# ---- bfloat16 / float16 roundings (the kernels' bits) ---------------------------

def bf16_load(h: NDArray[Any]) -> NDArray[np.float32]:
    """16-bit bfloat16 patterns (any 2-byte dtype) as float32, exactly."""
    u = np.ascontiguousarray(h).reshape(-1).view(np.uint16).astype(_U32)
    return _floats(u << _U32(16))


def bf16_nearest(x: NDArray[np.float32]) -> NDArray[np.uint16]:
    """float32 to bfloat16 patterns, nearest even (NaN stays NaN, quiet)."""
    u = _bits(x).reshape(-1)
    r = (u + _U32(0x7FFF) + ((u >> _U32(16)) & _U32(1))) >> _U32(16)
    nan = ((u >> _U32(16)) | _U32(0x40))
    return np.where(np.isnan(x.reshape(-1)), nan, r).astype(np.uint16)


def bf16_stochastic(x: NDArray[np.float32], random: NDArray[np.uint32]) -> NDArray[np.uint16]:
    """float32 to bfloat16 patterns, rounded up with probability equal to the
    distance from the lower neighbour (``random``: 32 random bits per element)."""
    u = _bits(x).reshape(-1)
    r = (u + (random & _U32(0xFFFF))) >> _U32(16)
    nan = ((u >> _U32(16)) | _U32(0x40))
    return np.where(np.isnan(x.reshape(-1)), nan, r).astype(np.uint16)


def f16_stochastic(x: NDArray[np.float32], random: NDArray[np.uint32]) -> NDArray[np.uint16]:
    """float32 to float16 patterns, rounded up (away from zero) with
    probability equal to the distance from the lower neighbour: 13 random bits
    below a normal float16's 10 kept fraction bits; below 2**-14, where the
    float16 grid is 2**-24 apart, the distance in grid units against 23 random
    bits (NaN: as ``f16_nearest``)."""
    x = x.reshape(-1)
    u = _bits(x).reshape(-1)
    a = np.abs(x)
    normal = ((u + (random & _U32(0x1FFF))) & _U32(0xFFFFE000)).view(np.float32)
    y = a * np.float32(2.0**24)
    m = np.trunc(np.where(y < 1024, y, 0)).astype(np.float32)
    up = (y - m) * np.float32(2.0**23) > (random & _U32(0x7FFFFF)).astype(np.float32)
    low = ((m + up.astype(np.float32)) * np.float32(2.0**-24)).view(_U32) | (u & _U32(0x80000000))
    nan = np.isnan(x)
    rounded = np.where(nan, x, np.where(a >= np.float32(2.0**-14), normal, low.view(np.float32)))
    with np.errstate(over="ignore"):       # beyond float16's range: inf
        return f16_nearest(rounded)


def f16_load(h: NDArray[Any]) -> NDArray[np.float32]:
    return np.ascontiguousarray(h).reshape(-1).view(np.float16).astype(np.float32)


def f16_nearest(x: NDArray[np.float32]) -> NDArray[np.uint16]:
    return x.reshape(-1).astype(np.float16).view(np.uint16)


def _mix32(h: Any) -> Any:
    h = np.asarray(h, dtype=_U32)
    with np.errstate(over="ignore"):
        h = h ^ (h >> _U32(16))
        h = h * _U32(0x7FEB352D)
        h = h ^ (h >> _U32(15))
        h = h * _U32(0x846CA68B)
        h = h ^ (h >> _U32(16))
    return h


def rounding_key(seed: int, step: int) -> np.uint32:
    """The per-call key of the random bits of stochastic rounding."""
    s, t = int(seed) & (2**64 - 1), int(step) & (2**64 - 1)
    k = _mix32(_U32(s & 0xFFFFFFFF) ^ _U32(0x9E3779B9))
    k = _mix32(k ^ _U32(s >> 32))
    k = _mix32(k ^ _U32(t & 0xFFFFFFFF))
    return np.uint32(_mix32(k ^ _U32(t >> 32)))


def random_bits(key: np.uint32, t: int, n: int) -> NDArray[np.uint32]:
    """32 random bits for elements 0..n-1 of tensor t of a call."""
    i = np.arange(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        tmix = _U32((t * 0x85EBCA77) & 0xFFFFFFFF)
    hi = _mix32(key ^ tmix ^ (i >> np.uint64(32)).astype(_U32))
    return np.asarray(_mix32(i.astype(_U32) ^ hi), dtype=_U32)


def parameter_seed(seed: int, index: int) -> int:
    """The stochastic-rounding seed of parameter ``index`` of an optimizer
    created with ``seed`` (the optimizer classes step each such parameter in
    its own kernel call with this seed, so that no two tensors share random
    bits).

    Parameters
    ----------
    seed : int
        The optimizer's ``seed``, in ``[0, 2**64)``.
    index : int
        The parameter's global index (its position over all groups).

    Returns
    -------
    int
        A seed in ``[0, 2**64)``: two 32-bit hashes of ``(seed, index)``.

    Examples
    --------
    >>> from optcore.precision import parameter_seed
    >>> parameter_seed(0, 0) != parameter_seed(0, 1)
    True
    """
    s, i = int(seed) & (2**64 - 1), int(index) & (2**64 - 1)
    lo = _mix32(_U32(s & 0xFFFFFFFF) ^ _mix32(_U32(i & 0xFFFFFFFF) ^ _U32(0x632BE5AB)))
    hi = _mix32(_U32(s >> 32) ^ _mix32(lo ^ _U32(i >> 32) ^ _U32(0x85EBCA6B)))
    return (int(hi) << 32) | int(lo)


def bfloat16_round(x: ArrayLike) -> NDArray[np.float32]:
    """float32 values rounded to bfloat16 (nearest even), as float32.

    Parameters
    ----------
    x : array_like
        Values, converted to float32 first.

    Returns
    -------
    numpy.ndarray
        float32 array of ``x``'s shape holding bfloat16 values.

    Examples
    --------
    >>> from optcore.precision import bfloat16_round
    >>> bfloat16_round([1.0 + 2.0**-8, 1.0 + 3 * 2.0**-8])
    array([1.      , 1.015625], dtype=float32)
    """
    a = np.asarray(x, dtype=np.float32)
    return bf16_load(bf16_nearest(a)).reshape(a.shape)


def stochastic_round(x: ArrayLike, *, seed: int, step: int = 1, tensor: int = 0,
                     dtype: str = "bfloat16") -> NDArray[np.float32]:
    """float32 values rounded to bfloat16 (or float16) stochastically, as a
    kernel with ``rounding="stochastic"`` rounds tensor ``tensor`` of a call at
    ``step``.

    Parameters
    ----------
    x : array_like
        Values, converted to float32 first (element ``i`` of the flattened array
        is element ``i`` of the tensor).
    seed : int
        The call's ``seed``.
    step : int, optional
        The call's ``step``.
    tensor : int, optional
        The tensor's position in a multi-tensor call.
    dtype : {'bfloat16', 'float16'}, optional
        The parameter's dtype.

    Returns
    -------
    numpy.ndarray
        float32 array of ``x``'s shape holding ``dtype`` values.

    Raises
    ------
    ValueError
        If ``dtype`` is neither.

    Examples
    --------
    >>> import numpy as np
    >>> from optcore.precision import stochastic_round
    >>> x = np.full(100_000, 1.0 + 2.0**-9, np.float32)   # a quarter ulp above 1
    >>> round(float(stochastic_round(x, seed=0).mean() - 1.0) * 2**9, 1)
    1.0
    """
    if dtype not in ("bfloat16", "float16"):
        raise ValueError(f"dtype must be 'bfloat16' or 'float16', got {dtype!r}")
    a = np.asarray(x, dtype=np.float32)
    r = random_bits(rounding_key(seed, step), tensor, a.size)
    if dtype == "float16":
        return f16_load(f16_stochastic(a.reshape(-1), r)).reshape(a.shape)
    return bf16_load(bf16_stochastic(a.reshape(-1), r)).reshape(a.shape)


# ---- int8 block quantization ------------------------------------------------------

def q8_values(codes: NDArray[np.uint8], unsigned: bool) -> NDArray[np.float32]:
    """The codes' values relative to their block's absmax."""
    c = np.asarray(codes, dtype=np.uint8).reshape(-1).astype(_U32)
    if unsigned:
        v = _floats((c + _U32(1791)) << _U32(19))
        return np.where(c == 0, np.float32(0), v)
    m = c & _U32(0x7F)
    v = _floats(((m + _U32(895)) << _U32(20)) | ((c & _U32(0x80)) << _U32(24)))
    return np.where(m == 0, np.float32(0), v)


def q8_codes(x: NDArray[np.float32], inv_absmax: NDArray[np.float32],
             unsigned: bool) -> NDArray[np.uint8]:
    """Codes of float32 ``x`` (``inv_absmax``: per element, the block's 1/absmax)."""
    u = _bits(x).reshape(-1)
    with np.errstate(invalid="ignore"):          # inf * 0: a non-finite block's codes
        a = _floats(u & _U32(0x7FFFFFFF)) * inv_absmax
    a = np.where(a > np.float32(1), np.float32(1), a)
    b = _bits(a)
    if unsigned:
        q = ((b + _U32(0x3FFFF) + ((b >> _U32(19)) & _U32(1))) >> _U32(19)).astype(np.int64)
        q -= 1792
        # (x's magnitude, not a: the product may underflow to 0)
        m = np.where(q >= 0, q + 1, np.where((u & _U32(0x7FFFFFFF)) != 0, 1, 0))
        return m.astype(np.uint8)
    q = ((b + _U32(0x7FFFF) + ((b >> _U32(20)) & _U32(1))) >> _U32(20)).astype(np.int64)
    q -= 896
    m = np.where(q >= 0, q + 1, np.where(a > np.float32(2.0**-16), 1, 0))
    sign = ((u >> _U32(24)) & _U32(0x80)).astype(np.int64)
    return np.where(m != 0, m | sign, 0).astype(np.uint8)


def _blocks(n: int) -> int:
    return (n + QBLOCK - 1) // QBLOCK


def quantize_blocks(x: NDArray[np.float32], unsigned: bool) -> tuple[NDArray[np.uint8],
                                                                     NDArray[np.float32]]:
    """(codes, absmax) of a flat float32 array."""
    x = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
    n = x.size
    nb = _blocks(n)
    mag = _bits(x) & _U32(0x7FFFFFFF)
    padded = np.zeros(nb * QBLOCK, dtype=_U32)
    padded[:n] = mag
    absmax = _floats(padded.reshape(nb, QBLOCK).max(axis=1)) if nb else \
        np.zeros(0, np.float32)
    finite_pos = (absmax > 0) & np.isfinite(absmax)
    # a subnormal absmax: the block scaled by 2**24 (exact) keeps 1/absmax finite
    pre = np.where(absmax < np.float32(2.0**-126), np.float32(2.0**24),
                   np.float32(1)).astype(np.float32)
    inv = np.where(finite_pos, np.float32(1) / np.where(finite_pos, absmax * pre, 1),
                   np.float32(0)).astype(np.float32)
    inv_n = np.repeat(inv, QBLOCK)[:n]
    codes = q8_codes((x * np.repeat(pre, QBLOCK)[:n]).astype(np.float32), inv_n, unsigned)
    # a zero block, or one holding a non-finite value, keeps codes 0
    codes = np.where(inv_n > 0, codes, np.uint8(0)).astype(np.uint8)
    return codes, np.ascontiguousarray(absmax, dtype=np.float32)


def dequantize_blocks(codes: NDArray[np.uint8], absmax: NDArray[np.float32],
                      unsigned: bool) -> NDArray[np.float32]:
    """The float32 values of flat codes and their blocks' absmax."""
    n = np.asarray(codes).size
    scale = np.repeat(np.asarray(absmax, dtype=np.float32), QBLOCK)[:n]
    with np.errstate(invalid="ignore"):
        return (q8_values(codes, unsigned) * scale).astype(np.float32)


class QuantizedState:
    """A block-quantized int8 optimizer state (a step kernel's state argument).

    Parameters
    ----------
    codes : numpy.ndarray
        uint8 codes, one per element, in the parameter's shape (C-contiguous).
    absmax : numpy.ndarray
        float32 absmax of each block of :data:`QBLOCK` elements
        (``ceil(codes.size / QBLOCK)`` values).
    signed : bool
        The signed map (first moments, momentum) or the unsigned one (second
        moments); each state of a kernel takes one of them.

    See Also
    --------
    QuantizedState.zeros, QuantizedState.from_float

    Examples
    --------
    >>> import numpy as np
    >>> from optcore.precision import QuantizedState
    >>> q = QuantizedState.from_float(np.linspace(-1, 1, 5, dtype=np.float32), signed=True)
    >>> q.dequantize()
    array([-1. , -0.5,  0. ,  0.5,  1. ], dtype=float32)
    """

    __slots__ = ("codes", "absmax", "signed")

    def __init__(self, codes: NDArray[np.uint8], absmax: NDArray[np.float32],
                 signed: bool) -> None:
        codes = np.asarray(codes)
        absmax = np.asarray(absmax)
        if codes.dtype != np.uint8:
            raise TypeError(f"codes must be uint8, got {codes.dtype}")
        if absmax.dtype != np.float32 or absmax.ndim != 1:
            raise TypeError(f"absmax must be a 1-D float32 array, got {absmax.dtype} "
                            f"of shape {absmax.shape}")
        if absmax.size != _blocks(codes.size):
            raise ValueError(f"absmax has {absmax.size} blocks but {codes.size} codes "
                             f"need {_blocks(codes.size)}")
        self.codes, self.absmax, self.signed = codes, absmax, bool(signed)

    @property
    def shape(self) -> tuple[int, ...]:
        """The state's shape (the parameter's).

        Examples
        --------
        >>> from optcore import QuantizedState
        >>> QuantizedState.zeros((2, 3), signed=True).shape
        (2, 3)
        """
        return tuple(self.codes.shape)

    @property
    def nbytes(self) -> int:
        """Bytes of codes and scales.

        Examples
        --------
        >>> from optcore import QuantizedState
        >>> QuantizedState.zeros(1024, signed=True).nbytes   # 1024 codes, 4 scales
        1040
        """
        return int(self.codes.nbytes + self.absmax.nbytes)

    @classmethod
    def zeros(cls, shape: int | tuple[int, ...], *, signed: bool) -> QuantizedState:
        """A state of zeros.

        Parameters
        ----------
        shape : int or tuple of int
            The parameter's shape.
        signed : bool
            The map (see :class:`QuantizedState`).

        Returns
        -------
        QuantizedState
            Codes and absmax all zero.

        Examples
        --------
        >>> from optcore.precision import QuantizedState
        >>> QuantizedState.zeros((2, 300), signed=False).absmax.shape
        (3,)
        """
        codes = np.zeros(shape, dtype=np.uint8)
        return cls(codes, np.zeros(_blocks(codes.size), np.float32), signed)

    @classmethod
    def from_float(cls, x: ArrayLike, *, signed: bool) -> QuantizedState:
        """Quantize float values as the kernels do.

        Parameters
        ----------
        x : array_like
            Values (converted to float32).
        signed : bool
            The map (see :class:`QuantizedState`).

        Returns
        -------
        QuantizedState
            The values' codes (in ``x``'s shape) and block absmax.

        Examples
        --------
        >>> from optcore.precision import QuantizedState
        >>> QuantizedState.from_float([0.0, 3.0, 4.0], signed=False).dequantize()
        array([0., 3., 4.], dtype=float32)
        """
        a = np.asarray(x, dtype=np.float32)
        codes, absmax = quantize_blocks(a, not signed)
        return cls(codes.reshape(a.shape), absmax, signed)

    def dequantize(self) -> NDArray[np.float32]:
        """The state's float32 values.

        Returns
        -------
        numpy.ndarray
            float32 array of the state's shape.

        Examples
        --------
        >>> from optcore.precision import QuantizedState
        >>> QuantizedState.zeros(3, signed=True).dequantize()
        array([0., 0., 0.], dtype=float32)
        """
        return dequantize_blocks(self.codes, self.absmax,
                                 not self.signed).reshape(self.codes.shape)

    def copy(self) -> QuantizedState:
        """A copy with its own codes and absmax.

        Returns
        -------
        QuantizedState
            The copy.

        Examples
        --------
        >>> from optcore.precision import QuantizedState
        >>> q = QuantizedState.zeros(3, signed=True)
        >>> q.copy().codes is q.codes
        False
        """
        return QuantizedState(self.codes.copy(), self.absmax.copy(), self.signed)

    def __repr__(self) -> str:
        return (f"QuantizedState(shape={self.shape}, blocks={self.absmax.size}, "
                f"{'signed' if self.signed else 'unsigned'})")
