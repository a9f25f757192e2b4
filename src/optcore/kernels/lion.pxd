# Lion kernels: the C-level API for Cython code (`cimport`).
#
# Contract (nothing is checked here; the Python wrapper checks everything):
# contiguous buffers of `n` elements; param and exp_avg overlap no other
# buffer. `step` (1-based) is accepted for a uniform signature; Lion has no
# bias correction. num_threads: 1 = the calling thread, 0 = optcore's process
# setting. The update is Lion's (Chen et al. 2023; optax.lion), see lion.pyx.

cdef void lion_step_f32(float* param, const float* grad, float* exp_avg, Py_ssize_t n,
                        long long step, double lr, double beta1, double beta2,
                        double weight_decay, bint maximize,
                        int num_threads) noexcept nogil

cdef void lion_step_f64(double* param, const double* grad, double* exp_avg,
                        Py_ssize_t n, long long step, double lr, double beta1,
                        double beta2, double weight_decay, bint maximize,
                        int num_threads) noexcept nogil

# Multi-tensor forms: arrays of `ntensors` pointers and sizes, one parallel region.
cdef void lion_step_multi_f32(float** param, const float** grad, float** exp_avg,
                              const Py_ssize_t* sizes, Py_ssize_t ntensors,
                              long long step, double lr, double beta1, double beta2,
                              double weight_decay, bint maximize,
                              int num_threads) noexcept nogil

cdef void lion_step_multi_f64(double** param, const double** grad, double** exp_avg,
                              const Py_ssize_t* sizes, Py_ssize_t ntensors,
                              long long step, double lr, double beta1, double beta2,
                              double weight_decay, bint maximize,
                              int num_threads) noexcept nogil
