"""SGD step with momentum, dampening, Nesterov and weight decay
(torch.optim.SGD's update rule)."""

include "_sgd_call.pxi"

from optcore.kernels._math cimport GradTerm, set_grad_term, load_grad_term, signed_grad
from optcore.kernels._buffers cimport (BufferSet, bind, FLOAT32, WRITE, READ,
                                       ABSENT)
from optcore.kernels._checks cimport nonneg, flag_fast


cdef struct Call:
    Buffers bufs               # the call's tensors (_sgd_call.pxi)
    GradTerm grad              # ±grad + weight_decay * param
    double momentum
    double one_minus_dampening
    double neg_lr
    bint first                 # step 1: the buffer takes the gradient
    bint nesterov


cdef inline void _sgd_segment(const Call* c, Py_ssize_t t, Py_ssize_t n, floating* p,
                              const floating* g, floating* buf) noexcept nogil:
    cdef Py_ssize_t i
    # Scalars in the buffer's type, so float32 math stays float32.
    cdef floating sign, wd
    cdef bint use_wd = load_grad_term(&c.grad, &sign, &wd)
    cdef floating mom = <floating>c.momentum
    cdef floating omd = <floating>c.one_minus_dampening
    cdef floating neg_lr = <floating>c.neg_lr
    cdef bint first = c.first, nesterov = c.nesterov
    cdef floating gi, bi
    if buf == NULL:
        for i in range(n):
            gi = signed_grad(g[i], p[i], sign, wd, use_wd)
            p[i] = p[i] + neg_lr * gi
    else:
        for i in range(n):
            gi = signed_grad(g[i], p[i], sign, wd, use_wd)
            bi = gi if first else buf[i] * mom + omd * gi
            buf[i] = bi
            if nesterov:
                gi = gi + mom * bi
            else:
                gi = bi
            p[i] = p[i] + neg_lr * gi


cdef inline void _prepare(Call* c, long long step, double lr, double momentum,
                          double dampening, bint nesterov, double weight_decay,
                          bint maximize) noexcept nogil:
    set_grad_term(&c.grad, weight_decay, maximize)
    c.momentum = momentum
    c.one_minus_dampening = 1.0 - dampening
    c.neg_lr = -lr
    c.first = step <= 1
    c.nesterov = nesterov


include "_sgd_api.pxi"


# ---- Python API ------------------------------------------------------------

cdef tuple _NAMES = ("param", "grad", "momentum_buffer", "master_param", "compensation")


def sgd_step(param, grad, momentum_buffer=None, *, step, lr, momentum=0.0,
             dampening=0.0, nesterov=False, weight_decay=0.0, maximize=False,
             master_param=None, rounding="nearest", compensation=None, seed=0):
    # hand-written (spec wrapper="hand"): the nesterov and dampening rules
    cdef long long c_step = _step(step)
    cdef double c_lr = nonneg(lr, "lr", "learning rate")
    cdef double c_momentum = nonneg(momentum, "momentum", "momentum value")
    cdef double c_weight_decay = nonneg(weight_decay, "weight_decay", "weight_decay value")
    cdef double c_dampening = (<double>dampening
                               if type(dampening) is float and dampening == dampening
                               else _hyper(dampening, "dampening", "notnan",
                                           "dampening value", -1))
    cdef bint c_nesterov = flag_fast(nesterov, "nesterov")
    cdef bint c_maximize = flag_fast(maximize, "maximize")
    if c_nesterov and (c_momentum <= 0.0 or c_dampening != 0.0):
        raise ValueError("Nesterov momentum requires a momentum and zero dampening")
    cdef tuple objs = (param, grad, momentum_buffer, master_param, compensation)
    cdef BufferSet b = bind_mixed(_NAMES, objs,
                                  (WRITE, READ, WRITE if c_momentum != 0.0 else ABSENT,
                                   WRITE if master_param is not None else ABSENT,
                                   WRITE if compensation is not None else ABSENT))
    cdef Py_ssize_t k = b.ntensors
    cdef Precision pr
    cdef const Py_ssize_t* sizes
    if (b.dtype == MIXED or master_param is not None or compensation is not None
            or rounding != "nearest"):
        pr = _prepare_precision(b, _NAMES, objs, _LAYOUT, rounding, seed, c_step,
                                "sgd_step")
        sizes = pr.run_sizes if pr.run_sizes != NULL else b.sizes
        with nogil:
            _run(b.data, b.data + k, b.data + 2 * k, sizes, k, c_step, c_lr, c_momentum,
                 c_dampening, c_nesterov, c_weight_decay, c_maximize, 0, _segment_tiled,
                 &pr.storage, pr.align)
        return
    cdef segment_fn fn = _segment_f32 if b.dtype == FLOAT32 else _segment_f64
    with nogil:
        _run(b.data, b.data + k, b.data + 2 * k, b.sizes, k, c_step, c_lr, c_momentum,
             c_dampening, c_nesterov, c_weight_decay, c_maximize, 0, fn, NULL,
             PARTITION_ALIGN)


# the docstring, rendered from the spec (_sgd_api.pxi)
sgd_step.__doc__ = _DOCS["sgd_step"]
