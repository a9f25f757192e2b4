# optcore's C-level kernel API for Cython code:
#
#     from optcore.kernels cimport adam_step_f32, sgd_step_f64, mse_loss_grad_f32
#
# Build with `include_path=[optcore.get_include()]` (cythonize) against an
# installed optcore (a regular, non-editable install: editable installs do not
# expose .pxd files to other builds). No linking is needed: the functions are
# imported from optcore's extension modules when your module is imported.
#
# The contract, for every function declared here:
# - nothing is checked: buffers are contiguous, hold `n` elements (or
#   `sizes[i]` for tensor i of a *_multi_* call), are aligned to their element
#   type, and buffers that are written overlap no other buffer of the call;
# - the update is the one the Python function of the same name applies
#   (torch.optim's rule), with the same hyperparameters resolved to C scalars
#   (bools are ints); `step` is the 1-based count of this update, and bias
#   corrections are computed inside from it;
# - num_threads = 1 runs on the calling thread: use it inside your own `prange`
#   or threads. num_threads = 0 uses optcore's process setting
#   (optcore.set_num_threads / OMP_NUM_THREADS); a larger value asks for that
#   many OpenMP threads. Calls below optcore.get_parallel_threshold() elements
#   always run on the calling thread;
# - all functions are `noexcept nogil` and may be called without the GIL;
# - results are bitwise identical for any num_threads.
#
# Each family's own .pxd (optcore/kernels/<family>.pxd) documents its functions.

from optcore.kernels.sgd cimport (
    sgd_step_f32, sgd_step_f64, sgd_step_multi_f32, sgd_step_multi_f64)
from optcore.kernels.adam cimport (
    adam_step_f32, adam_step_f64, adam_step_multi_f32, adam_step_multi_f64)
from optcore.kernels.mse cimport mse_loss_grad_f32, mse_loss_grad_f64
from optcore.kernels.rmsprop cimport (
    rmsprop_step_f32, rmsprop_step_f64, rmsprop_step_multi_f32, rmsprop_step_multi_f64)
from optcore.kernels.adagrad cimport (
    adagrad_step_f32, adagrad_step_f64, adagrad_step_multi_f32, adagrad_step_multi_f64)
from optcore.kernels.adadelta cimport (
    adadelta_step_f32, adadelta_step_f64, adadelta_step_multi_f32,
    adadelta_step_multi_f64)
from optcore.kernels.adamax cimport (
    adamax_step_f32, adamax_step_f64, adamax_step_multi_f32, adamax_step_multi_f64)
# nadam_step_* return the new mu_product (NAdam's scalar state).
from optcore.kernels.nadam cimport (
    nadam_step_f32, nadam_step_f64, nadam_step_multi_f32, nadam_step_multi_f64)
from optcore.kernels.radam cimport (
    radam_step_f32, radam_step_f64, radam_step_multi_f32, radam_step_multi_f64)
from optcore.kernels.lion cimport (
    lion_step_f32, lion_step_f64, lion_step_multi_f32, lion_step_multi_f64)
from optcore.kernels.lamb cimport (
    lamb_step_f32, lamb_step_f64, lamb_step_multi_f32, lamb_step_multi_f64)
from optcore.kernels.grad_utils cimport (
    global_norm_f32, global_norm_f64, clip_grad_norm_f32, clip_grad_norm_f64,
    clip_grad_value_f32, clip_grad_value_f64, all_finite_f32, all_finite_f64,
    unscale_f32, unscale_f64)
