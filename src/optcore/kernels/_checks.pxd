from cpython.number cimport PyNumber_Index

# The shared checks (implemented in _checks.pyx, callable from Python too).
cpdef double real(object value, str name) except? -1.0
cpdef bint flag(object value, str name) except -1
cpdef long long step(object value) except? -1
cpdef double hyper(object value, str name, str check, str what,
                   int index=*) except? -1.0

# Older inline checks, still used by kernels not yet on the generated wrappers.

# Hyperparameter checks shared by the kernel wrappers, with torch.optim's
# wording where torch has one. Written as `not (lo <= x)` so that NaN fails.

cdef inline check_lr(double lr):
    if not (0.0 <= lr):
        raise ValueError(f"Invalid learning rate: {lr} (lr must be >= 0)")

cdef inline check_eps(double eps, str name="eps"):
    if not (0.0 <= eps):
        raise ValueError(f"Invalid epsilon value: {eps} ({name} must be >= 0)")

cdef inline check_beta(double beta, int index, str name):
    if not (0.0 <= beta < 1.0):
        raise ValueError(
            f"Invalid beta parameter at index {index}: {beta} ({name} must be in [0, 1))")

cdef inline check_weight_decay(double weight_decay):
    if not (0.0 <= weight_decay):
        raise ValueError(
            f"Invalid weight_decay value: {weight_decay} (weight_decay must be >= 0)")

cdef inline check_nonneg(double value, str what, str name):
    if not (0.0 <= value):
        raise ValueError(f"Invalid {what} value: {value} ({name} must be >= 0)")

cdef inline object check_step(object step):
    # An integer (Python, NumPy, or anything with __index__); a float step
    # would be truncated by the C conversion, so it is refused here.
    try:
        step = PyNumber_Index(step)
    except TypeError:
        raise TypeError(
            f"step must be an integer (the 1-based count of this update), got "
            f"{step!r}") from None
    if step < 1:
        raise ValueError(
            f"Invalid step: {step} (step is the 1-based count of this update, >= 1)")
    return step

cdef inline check_unit_interval(double value, str what, str name):
    # Closed interval [0, 1] (Adadelta's rho).
    if not (0.0 <= value <= 1.0):
        raise ValueError(f"Invalid {what} value: {value} ({name} must be in [0, 1])")
