# MSE loss kernels: the C-level API for Cython code (`cimport`).
#
# mse_loss_grad_*: one pass over pred and target; returns sum((pred-target)**2)
# accumulated in double over fixed blocks summed in a fixed order (the same bits
# for any thread count), and, when grad is not NULL, writes
# grad = grad_scale * (pred - target) (grad_scale = 2/n for a mean loss, 2 for
# a sum). grad may not overlap pred or target. num_threads: 1 = the calling
# thread, 0 = optcore's process setting.

cdef double mse_loss_grad_f32(const float* pred, const float* target, float* grad,
                              Py_ssize_t n, double grad_scale,
                              int num_threads) noexcept nogil
cdef double mse_loss_grad_f64(const double* pred, const double* target, double* grad,
                              Py_ssize_t n, double grad_scale,
                              int num_threads) noexcept nogil
