# Gradient utilities: the C-level API for Cython code (`cimport`).
#
# Every function takes arrays of `ntensors` pointers and sizes (a single buffer
# is ntensors = 1), contiguous buffers, and runs one native call; num_threads:
# 1 = the calling thread, 0 = optcore's process setting. Nothing is checked.
#
# global_norm_*: the norm_type-norm (p > 0, or INFINITY) of all elements as one
#   vector, in double, the same bits for any thread count; NaN for p <= 0.
# clip_grad_norm_*: grads *= min(max_norm / (norm + 1e-6), 1) (torch's rule);
#   returns the norm before clipping (NaN, grads untouched, for p <= 0). Check the norm with global_norm_* first
#   for torch's error_if_nonfinite behaviour.
# clip_grad_value_*: clamp to [-clip_value, clip_value]; NaN stays NaN.
# all_finite_*: 1 when no element is NaN or +-inf (stops early otherwise).
# unscale_*: grads *= inv_scale (skipped when inv_scale == 1); returns 1 when
#   any value was non-finite before scaling (torch's AMP unscale on CPU).

cdef double global_norm_f32(const float** arrays, const Py_ssize_t* sizes,
                            Py_ssize_t ntensors, double norm_type,
                            int num_threads) noexcept nogil
cdef double global_norm_f64(const double** arrays, const Py_ssize_t* sizes,
                            Py_ssize_t ntensors, double norm_type,
                            int num_threads) noexcept nogil

cdef double clip_grad_norm_f32(float** grads, const Py_ssize_t* sizes,
                               Py_ssize_t ntensors, double max_norm, double norm_type,
                               int num_threads) noexcept nogil
cdef double clip_grad_norm_f64(double** grads, const Py_ssize_t* sizes,
                               Py_ssize_t ntensors, double max_norm, double norm_type,
                               int num_threads) noexcept nogil

cdef void clip_grad_value_f32(float** grads, const Py_ssize_t* sizes,
                              Py_ssize_t ntensors, double clip_value,
                              int num_threads) noexcept nogil
cdef void clip_grad_value_f64(double** grads, const Py_ssize_t* sizes,
                              Py_ssize_t ntensors, double clip_value,
                              int num_threads) noexcept nogil

cdef bint all_finite_f32(const float** arrays, const Py_ssize_t* sizes,
                         Py_ssize_t ntensors, int num_threads) noexcept nogil
cdef bint all_finite_f64(const double** arrays, const Py_ssize_t* sizes,
                         Py_ssize_t ntensors, int num_threads) noexcept nogil

cdef bint unscale_f32(float** grads, const Py_ssize_t* sizes, Py_ssize_t ntensors,
                      double inv_scale, int num_threads) noexcept nogil
cdef bint unscale_f64(double** grads, const Py_ssize_t* sizes, Py_ssize_t ntensors,
                      double inv_scale, int num_threads) noexcept nogil
