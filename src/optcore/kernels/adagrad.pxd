# Adagrad kernels: the C-level API for Cython code (`cimport`).
#
# Contract (nothing is checked here; the Python wrapper checks everything):
# - buffers are contiguous, hold `n` elements, and written buffers (param,
#   state_sum) overlap no other buffer;
# - state_sum is torch.optim.Adagrad's state "sum": the caller fills it with
#   initial_accumulator_value before the first step;
# - `step` is the 1-based count of this update; the step size
#   lr / (1 + (step - 1) * lr_decay) is computed inside;
# - num_threads: 1 runs on the calling thread (use it inside your own prange or
#   nogil threads), 0 uses optcore's process setting; calls below the parallel
#   threshold always run on the calling thread.
# The update is torch.optim.Adagrad's dense one (weight decay added to the gradient).

cdef void adagrad_step_f32(float* param, const float* grad, float* state_sum,
                           Py_ssize_t n, long long step, double lr, double lr_decay,
                           double weight_decay, double eps, bint maximize,
                           int num_threads) noexcept nogil

cdef void adagrad_step_f64(double* param, const double* grad, double* state_sum,
                           Py_ssize_t n, long long step, double lr, double lr_decay,
                           double weight_decay, double eps, bint maximize,
                           int num_threads) noexcept nogil

# Multi-tensor forms: arrays of `ntensors` pointers and sizes, one parallel region.
cdef void adagrad_step_multi_f32(float** param, const float** grad,
                                 float** state_sum, const Py_ssize_t* sizes,
                                 Py_ssize_t ntensors, long long step, double lr,
                                 double lr_decay, double weight_decay, double eps,
                                 bint maximize, int num_threads) noexcept nogil

cdef void adagrad_step_multi_f64(double** param, const double** grad,
                                 double** state_sum, const Py_ssize_t* sizes,
                                 Py_ssize_t ntensors, long long step, double lr,
                                 double lr_decay, double weight_decay, double eps,
                                 bint maximize, int num_threads) noexcept nogil
