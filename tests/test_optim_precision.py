"""Low-precision storage of the NumPy optimizer classes: bfloat16/float16
parameters, bfloat16 and int8 states, master weights, stochastic and Kahan
rounding; each class equals its functional kernel called by hand with the
same buffers, bit for bit."""

import copy
import pickle

import ml_dtypes
import numpy as np
import pytest

import optcore
from optcore.precision import (MIN_QUANTIZED_SIZE, QuantizedState, bfloat16_array,
                               bfloat16_round, parameter_seed)

BF16 = np.dtype(ml_dtypes.bfloat16)
SIZES = (MIN_QUANTIZED_SIZE + 37, 301)      # one quantized tensor, one small

# class, its constructor options, the kernel, its keywords, state (arg, key,
# unsigned map, fill)
CASES = {
    "Adam": (optcore.Adam, {"lr": 1e-2, "weight_decay": 0.01}, optcore.adam_step,
             {"lr": 1e-2, "weight_decay": 0.01},
             [("exp_avg", "exp_avg", False, 0.0), ("exp_avg_sq", "exp_avg_sq", True, 0.0)]),
    "AdamW": (optcore.AdamW, {"lr": 1e-2}, optcore.adamw_step, {"lr": 1e-2},
              [("exp_avg", "exp_avg", False, 0.0), ("exp_avg_sq", "exp_avg_sq", True, 0.0)]),
    "SGD": (optcore.SGD, {"lr": 1e-2, "momentum": 0.9}, optcore.sgd_step,
            {"lr": 1e-2, "momentum": 0.9},
            [("momentum_buffer", "momentum_buffer", False, 0.0)]),
    "RMSprop": (optcore.RMSprop, {"lr": 1e-3}, optcore.rmsprop_step, {"lr": 1e-3},
                [("square_avg", "square_avg", True, 0.0)]),
    "Adagrad": (optcore.Adagrad, {"lr": 1e-2, "initial_accumulator_value": 0.1},
                optcore.adagrad_step, {"lr": 1e-2},
                [("state_sum", "sum", True, 0.1)]),
    "Lion": (optcore.Lion, {"lr": 1e-3}, optcore.lion_step, {"lr": 1e-3},
             [("exp_avg", "exp_avg", False, 0.0)]),
    "LAMB": (optcore.LAMB, {"lr": 1e-3, "weight_decay": 0.01}, optcore.lamb_step,
             {"lr": 1e-3, "weight_decay": 0.01},
             [("exp_avg", "exp_avg", False, 0.0), ("exp_avg_sq", "exp_avg_sq", True, 0.0)]),
}
#: classes whose states stay float32 whatever the parameter's dtype
FLOAT32_STATES = {"LAMB"}

CONFIGS = {
    "f32-none": (np.float32, {}),
    "f32-bf16": (np.float32, {"state_dtype": "bfloat16"}),
    "f32-int8": (np.float32, {"state_dtype": "int8"}),
    "bf16-none": (BF16, {}),
    "bf16-f32": (BF16, {"state_dtype": "float32"}),
    "bf16-int8": (BF16, {"state_dtype": "int8"}),
    "f16-none": (np.float16, {}),
    "bf16-master": (BF16, {"master_weights": True}),
    "bf16-master-int8": (BF16, {"master_weights": True, "state_dtype": "int8"}),
    "f16-master-bf16": (np.float16, {"master_weights": True, "state_dtype": "bfloat16"}),
    "bf16-stochastic": (BF16, {"rounding": "stochastic", "seed": 12345}),
    "f16-stochastic-bf16": (np.float16, {"rounding": "stochastic", "seed": 7,
                                         "state_dtype": "bfloat16"}),
    "bf16-kahan": (BF16, {"rounding": "kahan"}),
    "f16-kahan-int8": (np.float16, {"rounding": "kahan", "state_dtype": "int8"}),
}


def as_dtype(x, dtype):
    if np.dtype(dtype) == BF16:
        return bfloat16_array(x)
    return np.asarray(x, np.float32).astype(dtype)


def bits(a):
    if isinstance(a, QuantizedState):
        return (a.codes.tobytes(), a.absmax.tobytes())
    return np.ascontiguousarray(a).tobytes()


def hand_state(p, sd, fill, unsigned, float32_states=False):
    """A parameter's state as the class documents it."""
    if float32_states:
        return np.full(p.shape, fill, np.float32)
    if sd == "int8" and p.size >= MIN_QUANTIZED_SIZE:
        return QuantizedState.from_float(np.full(p.shape, fill, np.float32),
                                         signed=not unsigned)
    if sd == "bfloat16" or (sd is None and p.dtype == BF16):
        return bfloat16_array(np.full(p.shape, fill, np.float32))
    return np.full(p.shape, fill, np.float32)


class Hand:
    """The kernel called by hand: one call per (quantized or not), one per
    parameter with stochastic rounding."""

    def __init__(self, case, params, options):
        _, _, self.kernel, self.hyper, self.states = CASES[case]
        self.params = params
        self.options = options
        sd = options.get("state_dtype")
        self.state = [{arg: hand_state(p, sd, fill, u, case in FLOAT32_STATES)
                       for arg, _, u, fill in self.states} for p in params]
        self.extra = [{} for _ in params]
        for p, ex in zip(params, self.extra):
            if options.get("master_weights"):
                ex["master_param"] = p.astype(np.float32)
            if options.get("rounding") == "kahan":
                ex["compensation"] = np.zeros_like(p)
        self.t = 0

    def step(self, grads):
        self.t += 1
        rounding = self.options.get("rounding", "nearest")
        if rounding == "stochastic":
            groups = [[i] for i in range(len(self.params))]
        else:
            quantized = [isinstance(next(iter(s.values())), QuantizedState)
                         for s in self.state]
            groups = [[i for i, q in enumerate(quantized) if q == flag]
                      for flag in (True, False)]
        for idx in groups:
            if not idx:
                continue
            kw = {arg: [self.state[i][arg] for i in idx] for arg, *_ in self.states}
            for key in self.extra[idx[0]]:
                kw[key] = [self.extra[i][key] for i in idx]
            if rounding != "nearest":
                kw["rounding"] = rounding
            if rounding == "stochastic":
                kw["seed"] = parameter_seed(self.options["seed"], idx[0])
            self.kernel([self.params[i] for i in idx], [grads[i] for i in idx],
                        step=self.t, **kw, **self.hyper)


@pytest.mark.parametrize("case,config", [
    (case, config) for case in CASES for config in CONFIGS
    if case not in FLOAT32_STATES or CONFIGS[config][1].get("state_dtype") in (None, "float32")])
def test_class_equals_the_kernel_by_hand(case, config, rng):
    cls, opts, _, _, states = CASES[case]
    dtype, storage = CONFIGS[config]
    params = [as_dtype(rng.standard_normal(n), dtype) for n in SIZES]
    mine = [p.copy() for p in params]
    opt = cls(mine, **opts, **storage)
    hand = Hand(case, params, storage)
    for step in range(4):
        gdtype = (np.float32, dtype)[step % 2]       # float32 and low-precision grads
        grads = [as_dtype(rng.standard_normal(n), gdtype) for n in SIZES]
        opt.step(grads)
        hand.step(grads)
    for j, p in enumerate(params):
        assert mine[j].dtype == p.dtype
        assert bits(mine[j]) == bits(p), f"param {j}"
        st = opt.state[j]
        for arg, key, _, _ in states:
            assert type(st[key]) is type(hand.state[j][arg])
            assert bits(st[key]) == bits(hand.state[j][arg]), f"{key} of param {j}"
        for key, value in hand.extra[j].items():
            assert bits(st[key]) == bits(value), f"{key} of param {j}"
        assert set(st) - {k for _, k, _, _ in states} - {"step"} == set(hand.extra[j])


def test_default_state_dtypes():
    for dtype, expected in ((np.float32, np.float32), (np.float64, np.float64),
                            (BF16, BF16), (np.float16, np.float32)):
        p = as_dtype(np.ones(10), dtype)
        opt = optcore.Adam([p])
        opt.step([as_dtype(np.ones(10), dtype)])
        assert opt.state[0]["exp_avg"].dtype == expected


def test_int8_small_tensor_rule(rng):
    ps = [rng.standard_normal(n).astype(np.float32)
          for n in (MIN_QUANTIZED_SIZE - 1, MIN_QUANTIZED_SIZE, 5)]
    opt = optcore.Adam(ps, state_dtype="int8")
    opt.step([np.ones_like(p) for p in ps])
    kinds = [type(opt.state[i]["exp_avg"]) for i in range(3)]
    assert kinds == [np.ndarray, QuantizedState, np.ndarray]
    assert opt.state[0]["exp_avg"].dtype == np.float32
    q = opt.state[1]["exp_avg_sq"]
    assert q.codes.shape == ps[1].shape and not q.signed and opt.state[1]["exp_avg"].signed
    assert opt.arena(0, "exp_avg", np.uint8).size >= MIN_QUANTIZED_SIZE


def test_options_are_checked_at_construction():
    p = [np.ones(3, np.float32)]
    bad = [({"state_dtype": "int4"}, ValueError, "state_dtype"),
           ({"state_dtype": np.float32}, TypeError, "state_dtype"),
           ({"rounding": "up"}, ValueError, "rounding"),
           ({"rounding": 1}, TypeError, "rounding"),
           ({"master_weights": 1}, TypeError, "master_weights"),
           ({"seed": -1}, ValueError, "seed"),
           ({"seed": 1.5}, TypeError, "seed"),
           ({"seed": 2**64}, ValueError, "seed"),
           ({"master_weights": True, "rounding": "kahan"}, ValueError, "rounding")]
    for cls in (optcore.Adam, optcore.SGD, optcore.Lion):
        for kw, error, match in bad:
            with pytest.raises(error, match=match):
                cls(p, **kw)
    for sd in ("int8", "bfloat16"):
        with pytest.raises(TypeError, match=f"state_dtype='{sd}': LAMB keeps its states in "
                                            "float32"):
            optcore.LAMB(p, state_dtype=sd)


def test_dtype_dependent_errors_before_any_write(rng):
    with pytest.raises(TypeError, match="state_dtype"):
        optcore.Adam([np.ones(3)], state_dtype="int8")         # float64 params
    with pytest.raises(TypeError, match="dtype"):
        optcore.LAMB([np.ones(3, np.int32)])
    opt = optcore.Adam([np.ones(3, np.float32)], state_dtype="bfloat16")
    with pytest.raises(TypeError, match="state_dtype"):
        opt.add_param_group({"params": [np.ones(3)]})
    assert len(opt.param_groups) == 1
    # a step of several kernel calls with a bad gradient in the last one: nothing written
    ps = [bfloat16_array(rng.standard_normal(50)) for _ in range(3)]
    before = [p.copy() for p in ps]
    opt = optcore.Adam(ps, rounding="stochastic")          # one call per parameter
    grads = [bfloat16_array(rng.standard_normal(50)) for _ in range(2)]
    for bad in (rng.standard_normal(50), rng.standard_normal(50).astype(np.int32)):
        with pytest.raises(TypeError, match=r"grad of parameter 2.*dtype"):
            opt.step(grads + [bad])
        assert all(bits(p) == bits(b) for p, b in zip(ps, before)) and len(opt.state) == 0
    # a replaced state of a wrong dtype, in a multi-call step
    opt.step(grads + [grads[0].copy()])
    saved = [p.copy() for p in ps]
    opt.state[2]["exp_avg"] = np.zeros(50, np.float16)
    with pytest.raises(TypeError, match=r"'exp_avg' state of parameter 2.*float16"):
        opt.step(grads + [grads[0].copy()])
    assert all(bits(p) == bits(b) for p, b in zip(ps, saved))
    assert opt.state[0]["step"] == 1
    opt.state[2]["exp_avg"] = QuantizedState.zeros(50, signed=False)
    with pytest.raises(TypeError, match="unsigned"):
        opt.step(grads + [grads[0].copy()])
    assert all(bits(p) == bits(b) for p, b in zip(ps, saved))


def test_row_form_gradients_need_plain_storage():
    opt = optcore.Adagrad([np.ones((4, 3), np.float32)], state_dtype="bfloat16")
    with pytest.raises(TypeError, match="row-form"):
        opt.step([(np.array([1]), np.ones((1, 3), np.float32))])


def _trained(storage, rng, cls=optcore.Adam, dtype=np.float32):
    ps = [as_dtype(rng.standard_normal(n), dtype) for n in SIZES]
    opt = cls(ps, lr=1e-2, **storage)
    for _ in range(3):
        opt.step([as_dtype(rng.standard_normal(n), dtype) for n in SIZES])
    return ps, opt


@pytest.mark.parametrize("storage", [{"state_dtype": "int8"}, {"state_dtype": "bfloat16"},
                                     {"master_weights": True}, {"rounding": "kahan"},
                                     {"rounding": "stochastic", "seed": 7}])
def test_state_dict_round_trip(storage, rng):
    ps, opt = _trained(storage, rng, dtype=BF16)
    sd = opt.state_dict()
    assert sd["storage"] == {**{"state_dtype": None, "master_weights": False,
                                "rounding": "nearest", "seed": 0}, **storage}
    if storage.get("state_dtype") == "int8":
        assert sd["state"][0]["exp_avg"].dtype == np.uint8
        assert sd["state"][0]["exp_avg.absmax"].dtype == np.float32
        assert "exp_avg.absmax" not in sd["state"][1]
    copies = [p.copy() for p in ps]
    other = optcore.Adam(copies, lr=1e-2, **storage)
    other.load_state_dict(sd)
    sd2 = other.state_dict()
    for i in sd["state"]:
        assert sd["state"][i].keys() == sd2["state"][i].keys()
        for k, v in sd["state"][i].items():
            assert bits(v) == bits(sd2["state"][i][k]) if isinstance(v, np.ndarray) \
                else v == sd2["state"][i][k]
    # both take the same next step; so does a pickled copy
    clone = pickle.loads(pickle.dumps(opt))
    assert clone._storage.options() == opt._storage.options()
    grads = [bfloat16_array(rng.standard_normal(n)) for n in SIZES]
    opt.step(grads)
    other.step(grads)
    clone.step(grads)
    for a, b, c in zip(ps, copies, clone.param_groups[0]["params"]):
        assert bits(a) == bits(b) == bits(c)
    assert copy.deepcopy(opt)._storage.options() == opt._storage.options()


def test_float32_checkpoint_into_low_precision_states(rng):
    ps, opt = _trained({}, rng)
    sd = opt.state_dict()
    q = optcore.Adam([p.copy() for p in ps], state_dtype="int8")
    q.load_state_dict(sd)
    exp = QuantizedState.from_float(sd["state"][0]["exp_avg"], signed=True)
    assert bits(q.state[0]["exp_avg"]) == bits(exp)
    assert bits(q.state[1]["exp_avg"]) == bits(sd["state"][1]["exp_avg"])   # small: float32
    b = optcore.Adam([p.copy() for p in ps], state_dtype="bfloat16")
    b.load_state_dict(sd)
    assert b.state[0]["exp_avg_sq"].dtype == BF16
    assert np.array_equal(b.state[0]["exp_avg_sq"].astype(np.float32),
                          bfloat16_round(sd["state"][0]["exp_avg_sq"]))
    # a float64 state is refused for float32 parameters, as before
    bad = copy.deepcopy(sd)
    bad["state"][0]["exp_avg"] = bad["state"][0]["exp_avg"].astype(np.float64)
    with pytest.raises(TypeError, match="dtype float64"):
        b.load_state_dict(bad)


def test_dequantized_state_dict_loads_into_float32_optimizers(rng):
    import torch
    ps, opt = _trained({"state_dtype": "int8"}, rng)
    sd = opt.dequantized_state_dict()
    assert "storage" not in sd
    for i, st in sd["state"].items():
        assert sorted(st) == ["exp_avg", "exp_avg_sq", "step"]
        assert st["exp_avg"].dtype == np.float32
    assert np.array_equal(sd["state"][0]["exp_avg"], opt.state[0]["exp_avg"].dequantize())
    plain = optcore.Adam([p.copy() for p in ps], lr=1e-2)
    plain.load_state_dict(sd)
    assert np.array_equal(plain.state[0]["exp_avg_sq"], sd["state"][0]["exp_avg_sq"])
    tparams = [torch.tensor(p) for p in ps]
    topt = torch.optim.Adam(tparams, lr=1e-2)
    topt.load_state_dict({"param_groups": sd["param_groups"],
                          "state": {i: {k: torch.tensor(v) if isinstance(v, np.ndarray)
                                        else torch.tensor(float(v))
                                        for k, v in st.items()}
                                    for i, st in sd["state"].items()}})
    assert torch.equal(topt.state[tparams[0]]["exp_avg"], torch.tensor(sd["state"][0]["exp_avg"]))


def _least_squares(storage, dtype=np.float32, steps=300):
    rng = np.random.default_rng(42)
    blocks, m, n = 64, 96, 64                    # x: 4096 elements, quantizable
    A = rng.standard_normal((blocks, m, n)).astype(np.float32) / np.sqrt(m)
    b = rng.standard_normal((blocks, m)).astype(np.float32)
    x = as_dtype(np.zeros(blocks * n), dtype)
    opt = optcore.Adam([x], lr=1e-2, **storage)

    def loss_grad():
        xf = x.astype(np.float32).reshape(blocks, n)
        r = np.einsum("kmn,kn->km", A, xf) - b
        return 0.5 * float((r.astype(np.float64) ** 2).sum()), \
            np.einsum("kmn,km->kn", A, r).reshape(-1)
    for _ in range(steps):
        _, g = loss_grad()
        opt.step([as_dtype(g, dtype)])
    return loss_grad()[0]


def test_convergence_smoke():
    reference = _least_squares({})
    for storage, dtype in (({"state_dtype": "bfloat16"}, np.float32),
                           ({"state_dtype": "int8"}, np.float32),
                           ({"master_weights": True, "state_dtype": "int8"}, BF16)):
        loss = _least_squares(storage, dtype)
        assert abs(loss - reference) <= 0.01 * reference, (storage, loss, reference)
