# RMSprop kernels: the C-level API for Cython code (`cimport`).
#
# Contract (nothing is checked here; the Python wrapper checks everything):
# - buffers are contiguous, hold `n` elements, and written buffers (param,
#   square_avg, momentum_buffer, grad_avg) overlap no other buffer;
# - momentum_buffer may be NULL unless momentum > 0, grad_avg NULL unless
#   centered (torch.optim.RMSprop's state keys; zero-initialised by the caller);
# - `step` is the 1-based count of this update; RMSprop's rule does not use it
#   (it is part of the signature so that every optimizer's call looks alike);
# - num_threads: 1 runs on the calling thread (use it inside your own prange or
#   nogil threads), 0 uses optcore's process setting; calls below the parallel
#   threshold always run on the calling thread.
# The update is torch.optim.RMSprop's (weight decay added to the gradient).

cdef void rmsprop_step_f32(float* param, const float* grad, float* square_avg,
                           float* momentum_buffer, float* grad_avg, Py_ssize_t n,
                           long long step, double lr, double alpha, double eps,
                           double weight_decay, double momentum, bint centered,
                           bint maximize, int num_threads) noexcept nogil

cdef void rmsprop_step_f64(double* param, const double* grad, double* square_avg,
                           double* momentum_buffer, double* grad_avg, Py_ssize_t n,
                           long long step, double lr, double alpha, double eps,
                           double weight_decay, double momentum, bint centered,
                           bint maximize, int num_threads) noexcept nogil

# Multi-tensor forms: arrays of `ntensors` pointers and sizes, one parallel region.
cdef void rmsprop_step_multi_f32(float** param, const float** grad,
                                 float** square_avg, float** momentum_buffer,
                                 float** grad_avg, const Py_ssize_t* sizes,
                                 Py_ssize_t ntensors, long long step, double lr,
                                 double alpha, double eps, double weight_decay,
                                 double momentum, bint centered, bint maximize,
                                 int num_threads) noexcept nogil

cdef void rmsprop_step_multi_f64(double** param, const double** grad,
                                 double** square_avg, double** momentum_buffer,
                                 double** grad_avg, const Py_ssize_t* sizes,
                                 Py_ssize_t ntensors, long long step, double lr,
                                 double alpha, double eps, double weight_decay,
                                 double momentum, bint centered, bint maximize,
                                 int num_threads) noexcept nogil
