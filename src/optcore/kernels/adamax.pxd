# Adamax kernels: the C-level API for Cython code (`cimport`).
#
# Contract (nothing is checked here; the Python wrapper checks everything):
# - buffers are contiguous, hold `n` elements, and written buffers (param,
#   exp_avg, exp_inf) overlap no other buffer; both states start at zero
#   (torch.optim.Adamax's state keys);
# - `step` is the 1-based count of this update; the bias correction
#   1 - beta1**step is computed inside;
# - num_threads: 1 runs on the calling thread (use it inside your own prange or
#   nogil threads), 0 uses optcore's process setting; calls below the parallel
#   threshold always run on the calling thread.
# The update is torch.optim.Adamax's (weight decay added to the gradient).

cdef void adamax_step_f32(float* param, const float* grad, float* exp_avg,
                          float* exp_inf, Py_ssize_t n, long long step, double lr,
                          double beta1, double beta2, double eps,
                          double weight_decay, bint maximize,
                          int num_threads) noexcept nogil

cdef void adamax_step_f64(double* param, const double* grad, double* exp_avg,
                          double* exp_inf, Py_ssize_t n, long long step, double lr,
                          double beta1, double beta2, double eps,
                          double weight_decay, bint maximize,
                          int num_threads) noexcept nogil

# Multi-tensor forms: arrays of `ntensors` pointers and sizes, one parallel region.
cdef void adamax_step_multi_f32(float** param, const float** grad, float** exp_avg,
                                float** exp_inf, const Py_ssize_t* sizes,
                                Py_ssize_t ntensors, long long step, double lr,
                                double beta1, double beta2, double eps,
                                double weight_decay, bint maximize,
                                int num_threads) noexcept nogil

cdef void adamax_step_multi_f64(double** param, const double** grad,
                                double** exp_avg, double** exp_inf,
                                const Py_ssize_t* sizes, Py_ssize_t ntensors,
                                long long step, double lr, double beta1,
                                double beta2, double eps, double weight_decay,
                                bint maximize, int num_threads) noexcept nogil
