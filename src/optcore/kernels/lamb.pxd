# LAMB kernels: the C-level API for Cython code (`cimport`).
#
# Contract (nothing is checked here; the Python wrapper checks everything):
# contiguous buffers of `n` elements; param, exp_avg and exp_avg_sq overlap no
# other buffer. `step` is the 1-based count of this update (bias corrections
# inside). The trust ratio is computed per tensor (each tensor of a multi call
# has its own). num_threads: 1 = the calling thread, 0 = optcore's process
# setting. The update is LAMB's (You et al. 2019; optax.lamb), see lamb.pyx.
#
# The multi-tensor forms need 3 * ntensors doubles of scratch beyond 8 tensors:
# they return 0, or -1 when that memory could not be allocated (then nothing
# was written).

cdef void lamb_step_f32(float* param, const float* grad, float* exp_avg,
                        float* exp_avg_sq, Py_ssize_t n, long long step, double lr,
                        double beta1, double beta2, double eps, double weight_decay,
                        bint maximize, int num_threads) noexcept nogil

cdef void lamb_step_f64(double* param, const double* grad, double* exp_avg,
                        double* exp_avg_sq, Py_ssize_t n, long long step, double lr,
                        double beta1, double beta2, double eps, double weight_decay,
                        bint maximize, int num_threads) noexcept nogil

cdef int lamb_step_multi_f32(float** param, const float** grad, float** exp_avg,
                             float** exp_avg_sq, const Py_ssize_t* sizes,
                             Py_ssize_t ntensors, long long step, double lr,
                             double beta1, double beta2, double eps,
                             double weight_decay, bint maximize,
                             int num_threads) noexcept nogil

cdef int lamb_step_multi_f64(double** param, const double** grad, double** exp_avg,
                             double** exp_avg_sq, const Py_ssize_t* sizes,
                             Py_ssize_t ntensors, long long step, double lr,
                             double beta1, double beta2, double eps,
                             double weight_decay, bint maximize,
                             int num_threads) noexcept nogil
