"""NaN and inf in gradients: propagated exactly as torch.optim does (same NaN
positions, same infinities with the same signs, in parameters and state, step
after step), and the recipe for skipping a step on non-finite gradients
without touching any state (docs/contract.md §9)."""

import numpy as np
import pytest

import optcore
from registry import TORCH_TWINS, hyper_variants
from support import TORCH_RTOL

TWINS = [(e, hp) for e in TORCH_TWINS for hp in hyper_variants(e)]


def _poisoned_grads(rng, shape, dtype, steps):
    """Gradients with NaN, +inf and -inf at a few places, different per step,
    and one step that is entirely finite (state must stay poisoned)."""
    grads = []
    for s in range(steps):
        g = rng.standard_normal(shape).astype(dtype)
        if s != 1:
            flat = g.reshape(-1)
            idx = rng.choice(flat.size, 6, replace=False)
            flat[idx[:2]] = np.nan
            flat[idx[2:4]] = np.inf
            flat[idx[4:]] = -np.inf
        grads.append(g)
    return grads


def assert_same_nonfinite(actual, expected, dtype, what):
    actual, expected = np.asarray(actual), np.asarray(expected)
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected), err_msg=f"{what}: NaN")
    np.testing.assert_array_equal(np.isposinf(actual), np.isposinf(expected),
                                  err_msg=f"{what}: +inf")
    np.testing.assert_array_equal(np.isneginf(actual), np.isneginf(expected),
                                  err_msg=f"{what}: -inf")
    fin = np.isfinite(expected)
    scale = max(1.0, float(np.abs(expected[fin]).max(initial=0.0)))
    np.testing.assert_allclose(actual[fin], expected[fin], rtol=TORCH_RTOL[dtype],
                               atol=TORCH_RTOL[dtype] * scale, err_msg=what)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("entry,hp", TWINS,
                         ids=[f"{e.name}-{i}" for i, (e, _) in enumerate(TWINS)])
def test_nonfinite_gradients_propagate_as_in_torch(entry, hp, dtype, torch, rng):
    shape, steps = (40, 25), 4
    param0 = rng.standard_normal(shape).astype(dtype)
    grads = _poisoned_grads(rng, shape, dtype, steps)

    tp = torch.nn.Parameter(torch.from_numpy(param0.copy()))
    topt = entry.torch_optimizer(torch, [tp], hp)
    p = param0.copy()
    state = {b.name: np.zeros(shape, dtype) for b in entry.buffers[2:] if b.needed(hp)}
    h = dict(hp)
    if "mu_product" in h:
        h["mu_product"] = 1.0                  # NAdam's scalar state starts at 1
    for s, g in enumerate(grads, start=1):
        tp.grad = torch.from_numpy(g.copy())
        topt.step()
        h["step"] = s
        args = [p, g] + [state.get(b.name) for b in entry.buffers[2:] if not b.keyword]
        kwargs = {b.name: state.get(b.name) for b in entry.buffers[2:] if b.keyword}
        out = entry.fast(*args, **kwargs, **h)
        assert_same_nonfinite(p, tp.detach().numpy(), dtype, f"param after step {s}")
        tstate = topt.state[tp]
        for name, buf in state.items():
            tbuf = tstate[entry.torch_key(name)].numpy()
            assert_same_nonfinite(buf, tbuf, dtype, f"{name} after step {s}")
        if "mu_product" in h:
            h["mu_product"] = out
            assert out == pytest.approx(float(tstate["mu_product"]), rel=1e-6)
    assert not np.isfinite(p).all()          # the poison did arrive


# ---- skipping a step ------------------------------------------------------------

def _require_utilities():
    missing = [n for n in ("all_finite", "unscale_") if not hasattr(optcore, n)]
    if missing:
        pytest.skip(f"optcore.{', '.join(missing)} not available in this build")


def skip_nonfinite_recipe(params, grads, state, step, inv_scale, **hp):
    """The documented recipe (README, "Reliability"): unscale the gradients of
    a loss-scaled backward pass, and take the step only when all are finite.
    Returns (new step count, whether the step was taken)."""
    found_inf = optcore.unscale_(grads, inv_scale)
    if found_inf:
        return step, False                       # nothing touched: params, state, step
    optcore.adam_step(params, grads, state["exp_avg"], state["exp_avg_sq"],
                      step=step + 1, **hp)
    return step + 1, True


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_skipping_nonfinite_steps_leaves_everything_untouched(dtype, rng):
    _require_utilities()
    shapes = [(30, 7), (5,), (1000,)]
    params = [rng.standard_normal(s).astype(dtype) for s in shapes]
    state = {k: [np.zeros(s, dtype) for s in shapes] for k in ("exp_avg", "exp_avg_sq")}
    clean = [p.copy() for p in params]
    clean_state = {k: [b.copy() for b in v] for k, v in state.items()}
    scale, step, clean_step = 1024.0, 0, 0
    bad_steps = {2, 3, 7}
    for it in range(10):
        grads = [rng.standard_normal(s).astype(dtype) for s in shapes]
        scaled = [g * dtype(scale) for g in grads]
        if it in bad_steps:
            bad = scaled[it % 3].reshape(-1)
            bad[it % bad.size] = [np.inf, np.nan, -np.inf][it % 3]
        before = [a.tobytes() for a in params + state["exp_avg"] + state["exp_avg_sq"]]
        step, taken = skip_nonfinite_recipe(params, scaled, state, step, 1.0 / scale,
                                            lr=1e-2, weight_decay=0.01)
        after = [a.tobytes() for a in params + state["exp_avg"] + state["exp_avg_sq"]]
        assert taken == (it not in bad_steps)
        if not taken:
            assert before == after                       # not one byte changed
            continue
        # the same run without the bad steps at all
        unscaled = [(g * dtype(scale)) * dtype(1.0 / scale) for g in grads]
        clean_step += 1
        optcore.adam_step(clean, unscaled, clean_state["exp_avg"], clean_state["exp_avg_sq"],
                          step=clean_step, lr=1e-2, weight_decay=0.01)
    assert step == clean_step == 10 - len(bad_steps)
    for a, b in zip(params + state["exp_avg"], clean + clean_state["exp_avg"]):
        assert a.tobytes() == b.tobytes()


def test_all_finite_finds_every_kind_of_nonfinite(rng):
    _require_utilities()
    for dtype in (np.float32, np.float64):
        for bad in (np.nan, np.inf, -np.inf):
            for n, pos in [(1, 0), (17, 16), (100_003, 99_999), (100_003, 0)]:
                arrays = [rng.standard_normal(5).astype(dtype),
                          rng.standard_normal(n).astype(dtype)]
                assert optcore.all_finite(arrays) is True
                arrays[1][pos] = bad
                assert optcore.all_finite(arrays) is False
