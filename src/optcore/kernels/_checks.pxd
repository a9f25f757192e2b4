# The shared argument checks (implemented in _checks.pyx, callable from Python
# too): the generated kernel wrappers (build_tools/templates/kernel_api.pxi.tp),
# the hand-written ones and the class layers all use these.
cpdef double real(object value, str name) except? -1.0
cpdef bint flag(object value, str name) except -1
cpdef long long step(object value) except? -1
cpdef double hyper(object value, str name, str check, str what,
                   int index=*) except? -1.0
