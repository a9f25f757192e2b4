# Adam / AdamW kernels: the C-level API for Cython code (`cimport`).
#
# Contract (nothing is checked here; the Python wrappers check everything):
# - buffers are contiguous, hold `n` elements, and written buffers (param,
#   exp_avg, exp_avg_sq, max_exp_avg_sq) overlap no other buffer;
# - `step` is the 1-based count of this update; the bias corrections
#   1 - beta1**step and 1 - beta2**step are computed inside;
# - max_exp_avg_sq may be NULL unless amsgrad;
# - num_threads: 1 runs on the calling thread (use it inside your own prange or
#   nogil threads), 0 uses optcore's process setting; calls below the parallel
#   threshold always run on the calling thread.
# The update is torch.optim.Adam's (AdamW: decoupled_weight_decay=1).

cdef void adam_step_f32(float* param, const float* grad, float* exp_avg,
                        float* exp_avg_sq, float* max_exp_avg_sq, Py_ssize_t n,
                        long long step, double lr, double beta1, double beta2,
                        double eps, double weight_decay, bint decoupled_weight_decay,
                        bint amsgrad, bint maximize, int num_threads) noexcept nogil

cdef void adam_step_f64(double* param, const double* grad, double* exp_avg,
                        double* exp_avg_sq, double* max_exp_avg_sq, Py_ssize_t n,
                        long long step, double lr, double beta1, double beta2,
                        double eps, double weight_decay, bint decoupled_weight_decay,
                        bint amsgrad, bint maximize, int num_threads) noexcept nogil

# Multi-tensor forms: arrays of `ntensors` pointers and sizes, one parallel region.
cdef void adam_step_multi_f32(float** param, const float** grad, float** exp_avg,
                              float** exp_avg_sq, float** max_exp_avg_sq,
                              const Py_ssize_t* sizes, Py_ssize_t ntensors,
                              long long step, double lr, double beta1, double beta2,
                              double eps, double weight_decay,
                              bint decoupled_weight_decay, bint amsgrad, bint maximize,
                              int num_threads) noexcept nogil

cdef void adam_step_multi_f64(double** param, const double** grad, double** exp_avg,
                              double** exp_avg_sq, double** max_exp_avg_sq,
                              const Py_ssize_t* sizes, Py_ssize_t ntensors,
                              long long step, double lr, double beta1, double beta2,
                              double eps, double weight_decay,
                              bint decoupled_weight_decay, bint amsgrad, bint maximize,
                              int num_threads) noexcept nogil
