"""Argument checks shared by every API: the functional kernels, optcore.optim
and optcore.torch give the same bad value the same error.

Messages start with torch.optim's wording ("Invalid learning rate: -1.0") and
name the argument. Bounds are written as ``not (lo <= x)`` so that NaN fails.
Wrongly typed values raise TypeError naming the argument, instead of a C
conversion error.
"""

from cpython.number cimport PyNumber_Index
from cpython.float cimport PyFloat_AS_DOUBLE


cdef inline bint _is_array_like(object value):
    # NumPy arrays and torch tensors with dimensions: refuse, even with one
    # element (a silent scalar conversion hides shape bugs).
    cdef object ndim = getattr(value, "ndim", 0)
    return ndim is not None and ndim != 0


cpdef double real(object value, str name) except? -1.0:
    """``value`` as a C double: a real number (int, float, NumPy or 0-d
    array/tensor scalar). Anything else raises TypeError naming ``name``."""
    if type(value) is float:
        return PyFloat_AS_DOUBLE(value)
    if (value is None or isinstance(value, (str, bytes, complex))
            or _is_array_like(value) or not hasattr(value, "__float__")):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    if "complex" in str(getattr(value, "dtype", "")):
        # complex NumPy scalars, 0-d arrays and tensors
        raise TypeError(f"{name} must be a real number, got {value!r}")
    return float(value)


cpdef bint flag(object value, str name) except -1:
    """``value`` as a C flag: a bool (Python or NumPy) or the integer 0 or 1.
    Anything else (e.g. the string "yes") raises TypeError naming ``name``."""
    if value is True:
        return 1
    if value is False:
        return 0
    if type(value).__name__ == "bool" or type(value).__name__ == "bool_":
        return bool(value)
    if not isinstance(value, (str, bytes, float)) and not _is_array_like(value):
        try:
            i = PyNumber_Index(value)
        except TypeError:
            pass
        else:
            if i == 0 or i == 1:
                return i == 1
    raise TypeError(f"{name} must be a bool, got {value!r}")


cpdef long long step(object value) except? -1:
    """The 1-based update count: an integer >= 1 (anything with __index__;
    a float step would be truncated, so it is refused)."""
    try:
        value = PyNumber_Index(value)
    except TypeError:
        raise TypeError(
            f"step must be an integer (the 1-based count of this update), got "
            f"{value!r}") from None
    if value < 1:
        raise ValueError(
            f"Invalid step: {value} (step is the 1-based count of this update, >= 1)")
    return value


cpdef double hyper(object value, str name, str check, str what,
                   int index=-1) except? -1.0:
    """``real(value, name)``, then the constraint ``check`` of optcore._spec.CHECKS
    ("nonneg", "beta", "unit", "notnan", "open_unit", "above_one"; "" for
    none) with torch.optim's wording:
    ``what`` is the noun of its message ("learning rate", "epsilon value")."""
    cdef double x = real(value, name)
    if not check:
        return x
    if check == "nonneg":
        if not (0.0 <= x):
            raise ValueError(f"Invalid {what}: {x} ({name} must be >= 0)")
    elif check == "beta":
        if not (0.0 <= x < 1.0):
            raise ValueError(
                f"Invalid {what} at index {index}: {x} ({name} must be in [0, 1))")
    elif check == "unit":
        if not (0.0 <= x <= 1.0):
            raise ValueError(f"Invalid {what}: {x} ({name} must be in [0, 1])")
    elif check == "notnan":
        if x != x:
            raise ValueError(f"Invalid {what}: {x} ({name} must not be NaN)")
    elif check == "open_unit":
        if not (0.0 < x < 1.0):
            raise ValueError(f"Invalid {what}: {x} ({name} must be in (0, 1))")
    elif check == "above_one":
        if not (1.0 < x):
            raise ValueError(f"Invalid {what}: {x} ({name} must be > 1)")
    else:
        raise ValueError(f"unknown constraint {check!r} for {name}")
    return x
