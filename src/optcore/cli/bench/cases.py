"""The bench's case table: which kernels it measures, with which buffers,
options, memory traffic and comparisons, and how one call of each is built.

The optimizer steps take their function, buffers (and when each is needed),
hyperparameter defaults, multi-tensor form and torch.optim class from the
kernel spec (``optcore._spec``); a case only states what the bench chooses:
its name, the options it overrides, its memory traffic when that is not one
pass over its buffers, which buffers must hold positive data, and the
DeepSpeed mode. The gradient utilities and the loss are not in the spec and
are described here in full.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal, Optional, overload

import numpy as np

import optcore
from optcore import _spec, reference
from optcore.kernels import bandwidth

if TYPE_CHECKING:
    from optcore._typing import FloatArray, FloatDType

    #: a zero-argument callable making one call of a kernel
    Call = Callable[[], Any]
    #: a torch implementation of a case that is not a torch.optim class:
    #: (torch, tensors, variant options) -> Call, or None without that variant
    TorchCall = Callable[[ModuleType, Any, Mapping[str, bool]], Optional[Call]]
    #: a multi-tensor case: (name, tensor sizes, description)
    MultiCase = tuple[str, list[int], str]

FULL_SIZES = tuple(2 ** k for k in range(10, 27))
# quick: the sizes of the scorecard's mid-size goals (the overhead section
# covers 1024 elements)
QUICK_SIZES = (2 ** 16, 2 ** 20)
STEP = 10                # the step count passed to every call (bias corrections on)
IMPLS = ("optcore", "reference", "torch", "torch-foreach", "torch-fused", "deepspeed")
TORCH_IMPLS = {"torch": {"foreach": False}, "torch-foreach": {"foreach": True},
               "torch-fused": {"fused": True}}


@dataclasses.dataclass(frozen=True)
class Kernel:
    """One benchmarked kernel.

    ``func`` names the function in ``optcore`` and ``optcore.reference``;
    ``buffers`` its array arguments in order (``keyword_buffers``: those passed
    by name, the ones a kernel needs only under some option); ``traffic`` the
    bandwidth patterns of its passes over the data
    (optcore.kernels.bandwidth.PATTERNS), which fix its bytes per element and
    its ceiling. ``call`` says how it is called:
      "step"   func(*buffers, step=STEP, **kwargs)       (optimizers)
      "loss"   func(pred, target, out=out, **kwargs)     (buffers: pred, target, out)
      "grads"  func(list_of_grads, **kwargs)             (gradient utilities)
    ``torch`` is a torch.optim class name (for "step") or a function
    (torch, grads, variant_kwargs) -> callable or None; ``deepspeed`` takes the
    DeepSpeedCPUAdam mode ("adam" / "adamw").
    """
    name: str
    func: str
    traffic: tuple[str, ...]
    buffers: tuple[str, ...]
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    positive: tuple[str, ...] = ()
    call: str = "step"
    torch: str | TorchCall | None = None
    torch_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    deepspeed: Optional[str] = None
    multi: bool = True
    keyword_buffers: tuple[str, ...] = ()

    def available(self) -> bool:
        return hasattr(optcore, self.func) and hasattr(reference, self.func)

    def bytes_per_element(self, itemsize: int) -> int:
        return sum(bandwidth.bytes_per_element(p, itemsize) for p in self.traffic)

    def describe(self) -> str:
        reads = writes = 0
        for p in self.traffic:
            r, w, _ = bandwidth.PATTERNS[p]
            reads, writes = reads + r, writes + w
        passes = f" in {len(self.traffic)} passes" if len(self.traffic) > 1 else ""
        return (f"{self.bytes_per_element(4)} B/element in float32, "
                f"{self.bytes_per_element(8)} in float64: {reads} reads + "
                f"{writes} writes{passes}")


def _torch_class(spec: _spec.Kernel,
                 fixed: Mapping[str, Any]) -> _spec.OptimizerSpec | None:
    """The torch.optim class running ``spec`` with the ``fixed`` options."""
    for opt in _spec.OPTIMIZERS:
        if opt.kernel == spec.name and opt.in_torch and dict(opt.fixed) == fixed:
            return opt
    return None


def step_case(name: str, kernel: str, *, alias: str | None = None,
              traffic: Sequence[str] | None = None, positive: Sequence[str] = (),
              deepspeed: str | None = None, **options: Any) -> Kernel:
    """A case for the spec's kernel ``kernel`` (or its Python alias ``alias``,
    e.g. ``adamw_step``) with ``options`` overriding the spec's defaults."""
    spec = _spec.KERNEL[kernel]
    fixed: dict[str, Any] = dict(spec.aliases[alias]) if alias else {}
    defaults = fixed.pop("defaults", {})
    resolved = {h.name: h.default for h in spec.hypers if h.python and h.name != "step"}
    resolved.update(defaults)
    resolved.update(fixed)
    resolved.update(options)
    missing = [k for k, v in resolved.items() if v is _spec.REQUIRED]
    if missing:
        raise ValueError(f"bench case {name}: {kernel} needs {missing}")
    buffers = tuple(b.name for b in spec.buffers
                    if b.needed is None or b.needed.holds(resolved))
    keyword = tuple(b.name for b in spec.buffers
                    if b.needed is not None and b.name in buffers)
    if traffic is None:
        # one pass: every buffer read, the written ones written back
        writes = sum(1 for b in spec.buffers if b.name in buffers and b.role == "write")
        traffic = (f"{len(buffers)}r{writes}w",)
    # The call names the learning rate, as a user's does, and what the case sets.
    kwargs = {"lr": resolved["lr"], **options} if "lr" in resolved else dict(options)
    opt = _torch_class(spec, fixed)
    torch_kwargs: dict[str, Any] = {}
    if opt is not None:
        for key in opt.options:
            pair = _spec.PAIRS.get(key)
            if pair is not None:
                torch_kwargs[key] = tuple(resolved[n] for n in pair.names)
            elif key in resolved:
                torch_kwargs[key] = resolved[key]
    return Kernel(name, alias or kernel, tuple(traffic), buffers, kwargs,
                  positive=tuple(positive), torch=opt.name if opt else None,
                  torch_kwargs=torch_kwargs, deepspeed=deepspeed, multi=spec.multi,
                  keyword_buffers=keyword)


def _torch_norm(torch: ModuleType, grads: list[Any],
                variant: Mapping[str, bool]) -> Call | None:
    if "fused" in variant or not hasattr(torch.nn.utils, "get_total_norm"):
        return None
    return lambda: torch.nn.utils.get_total_norm(grads, 2.0, foreach=variant["foreach"])


def _params_of(torch: ModuleType, grads: list[Any]) -> list[Any]:
    params = []
    for g in grads:
        p = torch.empty_like(g)
        p.grad = g
        params.append(p)
    return params


def _torch_clip_norm(torch: ModuleType, grads: list[Any],
                     variant: Mapping[str, bool]) -> Call | None:
    if "fused" in variant:
        return None
    params = _params_of(torch, grads)
    return lambda: torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=variant["foreach"])


def _torch_clip_value(torch: ModuleType, grads: list[Any],
                      variant: Mapping[str, bool]) -> Call | None:
    if "fused" in variant:
        return None
    params = _params_of(torch, grads)
    return lambda: torch.nn.utils.clip_grad_value_(params, 1.0, foreach=variant["foreach"])


def _torch_all_finite(torch: ModuleType, grads: list[Any],
                      variant: Mapping[str, bool]) -> Call | None:
    if variant != {"foreach": False}:
        return None
    return lambda: all(bool(torch.isfinite(g).all()) for g in grads)


def _torch_unscale(torch: ModuleType, grads: list[Any],
                   variant: Mapping[str, bool]) -> Call | None:
    # GradScaler's own kernel (a foreach kernel in torch).
    if variant != {"foreach": True}:
        return None
    found = torch.zeros(1, dtype=torch.float32)
    inv = torch.ones(1, dtype=torch.float32)
    return lambda: torch._amp_foreach_non_finite_check_and_unscale_(grads, found, inv)


def _torch_mse(torch: ModuleType, tensors: Sequence[Sequence[Any]],
               variant: Mapping[str, bool]) -> Call | None:
    # torch's own loss and gradient kernels: F.mse_loss and its backward op.
    if variant != {"foreach": False}:
        return None
    (pred,), (target,), _ = tensors
    one = torch.ones((), dtype=pred.dtype)

    def call() -> tuple[Any, Any]:
        loss = torch.nn.functional.mse_loss(pred, target)
        return loss, torch.ops.aten.mse_loss_backward(one, pred, target, 1)
    return call


_STEP_CASES = (
    step_case("adam", "adam_step", positive=("exp_avg_sq",), deepspeed="adam"),
    step_case("adamw", "adam_step", alias="adamw_step", positive=("exp_avg_sq",),
              deepspeed="adamw"),
    step_case("sgd_momentum", "sgd_step", lr=1e-2, momentum=0.9),
    step_case("rmsprop", "rmsprop_step", positive=("square_avg",)),
    step_case("adagrad", "adagrad_step", positive=("state_sum",)),
    step_case("adadelta", "adadelta_step", positive=("square_avg", "acc_delta")),
    step_case("adamax", "adamax_step", positive=("exp_inf",)),
    step_case("nadam", "nadam_step", positive=("exp_avg_sq",), mu_product=0.9),
    step_case("radam", "radam_step", positive=("exp_avg_sq",)),
    step_case("rprop", "rprop_step", positive=("step_size",)),
    # mu = 1: ASGD before t0 (torch's default t0 = 1e6), the average copies the parameter
    step_case("asgd", "asgd_step", eta=1e-2, mu=1.0),
    step_case("lion", "lion_step"),
    # LAMB needs the norms of the parameter and of the update before writing:
    # one pass for the moments and norms, one for the parameter.
    step_case("lamb", "lamb_step", traffic=("4r2w", "3r1w"), positive=("exp_avg_sq",)),
)


def _default_case(spec: Any) -> Kernel:
    """The case of a spec kernel listed above under no name: the spec's defaults,
    one pass, every state buffer positive (a second moment under a square root
    must be; any other state does not mind)."""
    return step_case(spec.name.removesuffix("_step"), spec.name,
                     positive=tuple(b.name for b in spec.state))


_LISTED = {case.func for case in _STEP_CASES}
# (Muon's kernels are not steps: the bench times them in the Muon step.)
KERNELS = _STEP_CASES + tuple(_default_case(k) for k in _spec.KERNELS
                              if k.name not in _LISTED and k.name.endswith("_step")) + (
    Kernel("mse_loss_grad", "mse_loss_grad", ("triad",), ("pred", "target", "out"),
           call="loss", multi=False, torch=_torch_mse),
    Kernel("global_norm", "global_norm", ("1r",), ("grad",), call="grads",
           torch=_torch_norm),
    Kernel("clip_grad_norm_", "clip_grad_norm_", ("1r", "1r1w"), ("grad",),
           dict(max_norm=1.0), call="grads", torch=_torch_clip_norm),
    Kernel("clip_grad_value_", "clip_grad_value_", ("1r1w",), ("grad",),
           dict(clip_value=1.0), call="grads", torch=_torch_clip_value),
    Kernel("all_finite", "all_finite", ("1r",), ("grad",), call="grads",
           torch=_torch_all_finite),
    Kernel("unscale_", "unscale_", ("1r1w",), ("grad",), dict(inv_scale=1.0),
           call="grads", torch=_torch_unscale),
)


def available_kernels() -> list[Kernel]:
    """The KERNELS entries whose function exists in optcore and the reference."""
    return [k for k in KERNELS if k.available()]


def transformer_sizes(d: int = 384, layers: int = 6, vocab: int = 8192,
                      context: int = 256) -> list[int]:
    """Parameter sizes of a small GPT-style transformer (the "mix" case):
    embeddings, then per layer two layer norms, attention (qkv, projection) and
    an MLP (4x), each weight with its bias."""
    sizes = [vocab * d, context * d]
    for _ in range(layers):
        sizes += [d, d, d * 3 * d, 3 * d, d * d, d, d, d, d * 4 * d, 4 * d, 4 * d * d, d]
    sizes += [d, d]
    return sizes


#: Multi-tensor cases: (name, tensor sizes, description).
MULTI_CASES: tuple[MultiCase, ...] = (
    ("100x1024", [1024] * 100, "100 tensors x 1024"),
    ("mix", transformer_sizes(), "a GPT-style transformer: 6 layers, d=384, vocab 8192"),
)
QUICK_MULTI_CASES: tuple[MultiCase, ...] = (
    MULTI_CASES[0],
    ("mix", transformer_sizes(d=128, layers=1, vocab=1024, context=64),
     "a GPT-style transformer: 1 layer, d=128, vocab 1024"),
)

THRESHOLD_SIZES = tuple(sorted({int(2 ** (k / 2)) // 16 * 16 for k in range(20, 37)}))
QUICK_THRESHOLD_SIZES = tuple(2 ** k for k in range(10, 19, 2))


# ---- inputs and calls ------------------------------------------------------------

def random_array(rng: np.random.Generator, n: int, dtype: FloatDType,
                 positive: bool = False) -> FloatArray:
    """Random, never-zero data."""
    if positive:
        return rng.uniform(0.1, 1.0, n).astype(dtype)
    a = rng.standard_normal(n, dtype=np.dtype(dtype).type)
    a[a == 0] = 0.5
    return a


def make_inputs(kernel: Kernel, sizes: Sequence[int], dtype: FloatDType,
                seed: int = 0) -> dict[str, list[FloatArray]]:
    """{buffer name: list of arrays, one per size in ``sizes``}."""
    rng = np.random.default_rng(seed)
    return {b: [random_array(rng, n, dtype, b in kernel.positive) for n in sizes]
            for b in kernel.buffers}


def _source_call(kernel: Kernel, lists: bool) -> str:
    # A literal call, as a user writes it: no **kwargs unpacking in the loop.
    fname, nargs, kwargs, call = "f", len(kernel.buffers), kernel.kwargs, kernel.call
    args = [f"a{i}" + ("" if lists else "[0]") for i in range(nargs)]
    kw = [f"{k}={v!r}" for k, v in kwargs.items()]
    if call == "step":
        named = [f"{b}={a}" for b, a in zip(kernel.buffers, args)
                 if b in kernel.keyword_buffers]
        args = [a for b, a in zip(kernel.buffers, args) if b not in kernel.keyword_buffers]
        text = f"{fname}({', '.join(args + named + [f'step={STEP}'] + kw)})"
    elif call == "loss":
        text = f"{fname}({args[0]}, {args[1]}, {', '.join([f'out={args[2]}'] + kw)})"
    else:   # grads: one list of arrays
        text = f"{fname}({', '.join(['a0' if lists else '[a0[0]]'] + kw)})"
    return f"lambda: {text}"


@overload
def make_call(kernel: Kernel, impl: Literal["optcore", "reference"],
              inputs: Mapping[str, Sequence[FloatArray]], lists: bool = ...,
              torch: ModuleType | None = ...) -> Call: ...
@overload
def make_call(kernel: Kernel, impl: str, inputs: Mapping[str, Sequence[FloatArray]],
              lists: bool = ..., torch: ModuleType | None = ...) -> Call | None: ...
def make_call(kernel: Kernel, impl: str, inputs: Mapping[str, Sequence[FloatArray]],
              lists: bool = False, torch: ModuleType | None = None) -> Call | None:
    """A zero-argument callable running one call of ``kernel`` by ``impl`` on
    ``inputs`` (from make_inputs; ``lists``: one multi-tensor call over all
    arrays, else the first array alone), or None when ``impl`` lacks it."""
    arrays = [inputs[b] for b in kernel.buffers]
    if impl in ("optcore", "reference"):
        module = optcore if impl == "optcore" else reference
        namespace = {"f": getattr(module, kernel.func)}
        namespace.update({f"a{i}": a for i, a in enumerate(arrays)})
        return eval(_source_call(kernel, lists), namespace)
    if torch is None:
        return None
    chosen = arrays if lists else [a[:1] for a in arrays]
    if impl == "deepspeed":
        return _deepspeed_call(kernel, chosen, torch)
    variant = TORCH_IMPLS[impl]
    if kernel.torch is None:
        return None
    if kernel.call == "loss":
        # a loss case's torch is a function (a TorchCall), never a class name
        return kernel.torch(torch,  # type: ignore[operator]
                            [[torch.from_numpy(a) for a in c] for c in chosen], variant)
    if callable(kernel.torch):
        grads = [torch.from_numpy(g) for g in chosen[0]]
        return kernel.torch(torch, grads, variant)
    params = _torch_params(torch, chosen)
    try:
        opt = getattr(torch.optim, kernel.torch)(params, **kernel.torch_kwargs, **variant)
        opt.step()                           # creates the state; may refuse a dtype
    except (RuntimeError, TypeError, ValueError):
        return None
    return opt.step


def _torch_params(torch: ModuleType,
                  chosen: Sequence[Sequence[FloatArray]]) -> list[Any]:
    params = []
    for p, g in zip(chosen[0], chosen[1]):
        t = torch.from_numpy(p)
        t.grad = torch.from_numpy(g)
        params.append(t)
    return params


def _deepspeed_call(kernel: Kernel, chosen: Sequence[Sequence[FloatArray]],
                    torch: ModuleType) -> Call | None:
    if kernel.deepspeed is None or chosen[0][0].dtype != np.float32:
        return None
    try:
        from deepspeed.ops.adam import DeepSpeedCPUAdam
    except Exception:           # not installed, or its native op does not build
        return None
    params = _torch_params(torch, chosen)
    try:
        opt = DeepSpeedCPUAdam(params, adamw_mode=kernel.deepspeed == "adamw",
                               **{k: v for k, v in kernel.torch_kwargs.items()
                                  if k in ("lr", "betas", "eps", "weight_decay")})
        opt.step()
    except Exception:
        return None
    return opt.step


def import_torch() -> ModuleType | None:
    try:
        import torch
    except ImportError:
        return None
    return torch
