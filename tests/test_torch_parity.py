"""sgd_step / adam_step / adamw_step against torch.optim.SGD / Adam / AdamW
(single-tensor foreach=False path), step after step with random options.

Required in CI (OPTCORE_REQUIRE_TORCH=1); skipped locally without torch.
`python tests/torch_deviation.py` prints the deviations these tests bound.
"""

import numpy as np
import pytest

from support import DTYPES
from step_cases import (ADAM, ADAMW, FAMILIES, SGD, deviation, draw_options,
                        torch_trajectory)

pytestmark = pytest.mark.torch

STEPS = 60

# torch evaluates the same update with a few operations fused (fmadd in its
# vectorised add/lerp/addcmul) where optcore rounds twice, so trajectories
# differ by ulps: after 100 steps at most 3.2e-7 (float32) and 4.8e-16
# (float64) of the parameter scale over 20 random option draws per optimizer
# (tests/torch_deviation.py). The bounds leave ~30x / ~200x room; a formula
# difference (bias correction, weight-decay form, lerp branch) shows at 1e-3.
# Tighter than support.TORCH_RTOL, which also serves optimizers whose torch
# form is further from a single-tensor elementwise update.
TORCH_RTOL = {np.float32: 1e-5, np.float64: 1e-13}
SEEDS = range(8)
SHAPES = [(33,), (4, 17), (1,), (1000,)]


def _flat(v):
    return v if isinstance(v, list) else [v]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_step_after_step(torch, family, dtype, seed, rng):
    # Alternate seeds pin beta1 to either side of 0.5 (both lerp branches).
    opts = draw_options(rng, family, lerp_branch=("low", "high")[seed % 2])
    shapes = SHAPES if seed % 4 else SHAPES[3]          # some single-tensor runs
    for step, bufs, twin in torch_trajectory(torch, family, opts, dtype, shapes,
                                             STEPS, rng):
        dev = deviation(_flat(bufs["param"]), [p.numpy() for p in twin.params])
        assert dev <= TORCH_RTOL[dtype], (
            f"step {step}: param deviates from torch by {dev:.3g} of its scale; {opts}")
    # The state torch keeps under the same names.
    for name in family.needed_states(opts):
        dev = deviation(_flat(bufs[name]), twin.state(name))
        assert dev <= TORCH_RTOL[dtype], f"{name} deviates by {dev:.3g}; {opts}"


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("family,opts", [
    (SGD, dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01)),
    (SGD, dict(lr=0.05, momentum=0.9, nesterov=True, maximize=True)),
    (ADAM, dict(lr=0.01, beta1=0.9, beta2=0.999, amsgrad=True, weight_decay=0.01)),
    (ADAM, dict(lr=0.01, beta1=0.2, beta2=0.99, decoupled_weight_decay=True,
                weight_decay=0.05, maximize=True)),
    (ADAMW, dict(lr=0.01, beta1=0.9, amsgrad=True)),
    (ADAMW, dict(lr=0.01, beta1=0.4, weight_decay=0.1)),
], ids=["sgd-dampening", "sgd-nesterov-max", "adam-amsgrad-l2", "adam-decoupled-b1low",
        "adamw-amsgrad", "adamw-b1low"])
def test_large_multi_tensor_against_torch(torch, family, opts, dtype, rng):
    # Above the parallel threshold: threads split the call, torch does not.
    shapes = [(30_000,), (100, 300), (5,)]
    for step, bufs, twin in torch_trajectory(torch, family, opts, dtype, shapes, 50, rng):
        pass
    dev = deviation(bufs["param"], [p.numpy() for p in twin.params])
    assert dev <= TORCH_RTOL[dtype], f"{dev:.3g}"
