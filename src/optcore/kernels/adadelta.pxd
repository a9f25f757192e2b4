# Adadelta kernels: the C-level API for Cython code (`cimport`).
#
# Contract (nothing is checked here; the Python wrapper checks everything):
# - buffers are contiguous, hold `n` elements, and written buffers (param,
#   square_avg, acc_delta) overlap no other buffer; both states start at zero
#   (torch.optim.Adadelta's state keys);
# - `step` is the 1-based count of this update; Adadelta's rule does not use it
#   (it is part of the signature so that every optimizer's call looks alike);
# - num_threads: 1 runs on the calling thread (use it inside your own prange or
#   nogil threads), 0 uses optcore's process setting; calls below the parallel
#   threshold always run on the calling thread.
# The update is torch.optim.Adadelta's (weight decay added to the gradient).

cdef void adadelta_step_f32(float* param, const float* grad, float* square_avg,
                            float* acc_delta, Py_ssize_t n, long long step,
                            double lr, double rho, double eps, double weight_decay,
                            bint maximize, int num_threads) noexcept nogil

cdef void adadelta_step_f64(double* param, const double* grad, double* square_avg,
                            double* acc_delta, Py_ssize_t n, long long step,
                            double lr, double rho, double eps, double weight_decay,
                            bint maximize, int num_threads) noexcept nogil

# Multi-tensor forms: arrays of `ntensors` pointers and sizes, one parallel region.
cdef void adadelta_step_multi_f32(float** param, const float** grad,
                                  float** square_avg, float** acc_delta,
                                  const Py_ssize_t* sizes, Py_ssize_t ntensors,
                                  long long step, double lr, double rho, double eps,
                                  double weight_decay, bint maximize,
                                  int num_threads) noexcept nogil

cdef void adadelta_step_multi_f64(double** param, const double** grad,
                                  double** square_avg, double** acc_delta,
                                  const Py_ssize_t* sizes, Py_ssize_t ntensors,
                                  long long step, double lr, double rho, double eps,
                                  double weight_decay, bint maximize,
                                  int num_threads) noexcept nogil
