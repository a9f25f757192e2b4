# SGD kernels: the C-level API for Cython code (`cimport`).
#
# Contract (nothing is checked here): contiguous buffers of `n` elements;
# param and momentum_buffer overlap no other buffer; momentum_buffer may be
# NULL when momentum == 0. `step` is the 1-based count of this update: at
# step 1 the momentum buffer is set to the (decayed, maximized) gradient, as
# torch.optim.SGD does. num_threads: 1 = the calling thread, 0 = optcore's
# process setting. The update is torch.optim.SGD's.

cdef void sgd_step_f32(float* param, const float* grad, float* momentum_buffer,
                       Py_ssize_t n, long long step, double lr, double momentum,
                       double dampening, bint nesterov, double weight_decay,
                       bint maximize, int num_threads) noexcept nogil

cdef void sgd_step_f64(double* param, const double* grad, double* momentum_buffer,
                       Py_ssize_t n, long long step, double lr, double momentum,
                       double dampening, bint nesterov, double weight_decay,
                       bint maximize, int num_threads) noexcept nogil

cdef void sgd_step_multi_f32(float** param, const float** grad,
                             float** momentum_buffer, const Py_ssize_t* sizes,
                             Py_ssize_t ntensors, long long step, double lr,
                             double momentum, double dampening, bint nesterov,
                             double weight_decay, bint maximize,
                             int num_threads) noexcept nogil

cdef void sgd_step_multi_f64(double** param, const double** grad,
                             double** momentum_buffer, const Py_ssize_t* sizes,
                             Py_ssize_t ntensors, long long step, double lr,
                             double momentum, double dampening, bint nesterov,
                             double weight_decay, bint maximize,
                             int num_threads) noexcept nogil
