# NAdam kernels: the C-level API for Cython code (`cimport`).
#
# Contract (nothing is checked here; the Python wrapper checks everything):
# - buffers are contiguous, hold `n` elements, and written buffers (param,
#   exp_avg, exp_avg_sq) overlap no other buffer; both start at zero
#   (torch.optim.NAdam's state keys);
# - `step` is the 1-based count of this update; mu_t, mu_{t+1} and the bias
#   correction 1 - beta2**step are computed inside;
# - NAdam's scalar state `mu_product` goes in by value and its new value
#   (mu_product * mu_t) is the return value: pass 1.0 at step 1, then what the
#   previous call returned (kept in double for every buffer dtype). A
#   multi-tensor call shares one mu_product across its tensors;
# - num_threads: 1 runs on the calling thread (use it inside your own prange or
#   nogil threads), 0 uses optcore's process setting; calls below the parallel
#   threshold always run on the calling thread.
# The update is torch.optim.NAdam's (decoupled_weight_decay: NAdamW's decay).

cdef double nadam_step_f32(float* param, const float* grad, float* exp_avg,
                           float* exp_avg_sq, Py_ssize_t n, long long step,
                           double mu_product, double lr, double beta1, double beta2,
                           double eps, double weight_decay, double momentum_decay,
                           bint decoupled_weight_decay, bint maximize,
                           int num_threads) noexcept nogil

cdef double nadam_step_f64(double* param, const double* grad, double* exp_avg,
                           double* exp_avg_sq, Py_ssize_t n, long long step,
                           double mu_product, double lr, double beta1, double beta2,
                           double eps, double weight_decay, double momentum_decay,
                           bint decoupled_weight_decay, bint maximize,
                           int num_threads) noexcept nogil

# Multi-tensor forms: arrays of `ntensors` pointers and sizes, one parallel region.
cdef double nadam_step_multi_f32(float** param, const float** grad, float** exp_avg,
                                 float** exp_avg_sq, const Py_ssize_t* sizes,
                                 Py_ssize_t ntensors, long long step,
                                 double mu_product, double lr, double beta1,
                                 double beta2, double eps, double weight_decay,
                                 double momentum_decay, bint decoupled_weight_decay,
                                 bint maximize, int num_threads) noexcept nogil

cdef double nadam_step_multi_f64(double** param, const double** grad,
                                 double** exp_avg, double** exp_avg_sq,
                                 const Py_ssize_t* sizes, Py_ssize_t ntensors,
                                 long long step, double mu_product, double lr,
                                 double beta1, double beta2, double eps,
                                 double weight_decay, double momentum_decay,
                                 bint decoupled_weight_decay, bint maximize,
                                 int num_threads) noexcept nogil
