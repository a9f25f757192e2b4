"""Smoke test of an installed optcore wheel: every step kernel of the spec
once against its NumPy twin, the loss and gradient utilities, show_config."""

import ast

import numpy as np

import optcore
from optcore import _kernel_docs, _spec, reference

# the values the docstring examples give the arguments without a default
REQUIRED_VALUES = {k: ast.literal_eval(v) for k, v in _kernel_docs.EXAMPLE_VALUES.items()}
rng = np.random.default_rng(0)


def buffers(kernel, options):
    """The buffers the kernel takes positionally under these options (a
    ``needed`` one too when its option's default asks for it, as Muon's
    ``out`` with ``nesterov=True``)."""
    out = []
    for b in kernel.buffers:
        if b.keyword or (b.needed is not None and not b.needed.holds(options)):
            continue
        positive = b.name not in ("param", "grad")
        values = rng.random(37) + 0.1 if positive else rng.standard_normal(37)
        out.append(values.astype(np.float32))
    return out


for kernel in _spec.KERNELS:
    kwargs = {h.name: REQUIRED_VALUES.get(h.name, 1 if h.ctype == "step" else 0.1)
              for h in kernel.hypers
              if h.python and h.default is _spec.REQUIRED}
    options = {h.name: kwargs.get(h.name, h.default) for h in kernel.hypers}
    fast = buffers(kernel, options)
    slow = [b.copy() for b in fast]
    getattr(optcore, kernel.name)(*fast, **kwargs)
    getattr(reference, kernel.name)(*slow, **kwargs)
    for a, b in zip(fast, slow):
        assert np.array_equal(a, b), kernel.name
    print(f"{kernel.name}: equal to its reference")

x = rng.standard_normal(100).astype(np.float32)
y = rng.standard_normal(100).astype(np.float32)
assert np.isclose(optcore.mse_loss(x, y), reference.mse_loss(x, y), rtol=1e-5)
g = rng.standard_normal(1000).astype(np.float32)
assert np.isclose(optcore.global_norm([g]), np.linalg.norm(g), rtol=1e-5)
assert optcore.all_finite([g])
optcore.show_config()
print("wheel smoke test passed")
