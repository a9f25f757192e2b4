# The shared argument checks (implemented in _checks.pyx, callable from Python
# too): the generated kernel wrappers (build_tools/templates/kernel_api.pxi.tp),
# the hand-written ones and the class layers all use these.
cpdef double real(object value, str name) except? -1.0
cpdef bint flag(object value, str name) except -1
cpdef long long step(object value) except? -1
cpdef double hyper(object value, str name, str check, str what,
                   int index=*) except? -1.0


# Fast paths for hand-written wrappers: a Python float within bounds and a
# plain bool are taken as they are (the common case costs no call); anything
# else goes through the checks above, which convert it or raise.
cdef inline double nonneg(object value, str name, str what) except? -1.0:
    if type(value) is float and 0 <= <double>value:
        return <double>value
    return hyper(value, name, "nonneg", what, -1)


cdef inline bint flag_fast(object value, str name) except -1:
    if value is True:
        return 1
    if value is False:
        return 0
    return flag(value, name)
