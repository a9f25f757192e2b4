"""The stateful NumPy optimizers refuse bad input (docs/contract.md §8): bad
parameters, hyperparameters and gradients raise, and a step that raises changes
nothing, however many kernel calls it spans."""

import copy

import numpy as np
import pytest

import optcore
from optcore.precision import bfloat16_array
from support import random_array
from optim_numpy_support import (ALL, all_params, assert_unchanged, grads_like, ids,
    random_options, snapshot)


# ---- bad input -------------------------------------------------------------

def test_bad_parameters_are_rejected(rng):
    good = random_array(rng, 10, np.float32)
    ro = random_array(rng, 10, np.float32)
    ro.flags.writeable = False
    base = random_array(rng, 20, np.float32)
    cases = [
        (good, TypeError, "single ndarray"),
        ([], ValueError, "empty parameter list"),
        ({"params": [good]}, TypeError, "pass a list of dicts"),
        ({good.tobytes()}, TypeError, "ordered collection"),
        ([good.tolist()], TypeError, "NumPy arrays"),
        ([good.astype(np.int32)], TypeError, "dtype int32"),
        ([good.astype(np.uint16)], TypeError, "dtype uint16"),
        ([good.astype(np.uint8)], TypeError, "dtype uint8"),
        ([random_array(rng, 20, np.float32)[::2]], ValueError, "not C-contiguous"),
        ([random_array(rng, 20, np.float32).reshape(4, 5).T], ValueError,
         "not C-contiguous"),
        ([ro], ValueError, "read-only"),
        ([good, good], ValueError, "same array"),
        ([base[:12], base[10:]], ValueError, "share memory"),
        ([{"params": [good]}, {"params": [good]}], ValueError, "same array"),
        ([{"lr": 0.1}], ValueError, "no 'params'"),
    ]
    for params, error, match in cases:
        with pytest.raises(error, match=match):
            optcore.Adam(params)
    # Adafactor takes the four float dtypes, as the tiled kernels
    with pytest.raises(TypeError, match="float32, float64, bfloat16 or float16"):
        optcore.Adafactor([good.astype(np.int32)])
    # byte-swapped data is not float32 as the kernels read it
    with pytest.raises(TypeError):
        optcore.SGD([good.astype(">f4")])
    # non-overlapping views of one buffer are fine
    optcore.SGD([base[:10], base[10:]], lr=0.1)


def test_bad_hyperparameters_are_rejected(rng):
    p = random_array(rng, 4, np.float64)
    cases = [
        (optcore.Adam, dict(lr=-1.0), ValueError, "Invalid learning rate"),
        (optcore.Adam, dict(eps=-1e-8), ValueError, "Invalid epsilon value"),
        (optcore.Adam, dict(betas=(1.0, 0.9)), ValueError, "beta parameter at index 0"),
        (optcore.Adam, dict(betas=(0.9, -0.1)), ValueError, "beta parameter at index 1"),
        (optcore.Adam, dict(betas=0.9), TypeError, "pair"),
        (optcore.Adam, dict(lr=float("nan")), ValueError, "Invalid learning rate"),
        (optcore.Adam, dict(lr="0.1"), TypeError, "real number"),
        (optcore.Adam, dict(amsgrad="yes"), TypeError, "bool"),
        (optcore.Adam, dict(capturable=True), ValueError, "capturable"),
        (optcore.Adam, dict(differentiable=True), ValueError, "differentiable"),
        (optcore.AdamW, dict(weight_decay=-0.1), ValueError, "weight_decay"),
        (optcore.SGD, dict(momentum=-0.5), ValueError, "momentum"),
        (optcore.SGD, dict(nesterov=True), ValueError, "Nesterov"),
        (optcore.SGD, dict(nesterov=True, momentum=0.9, dampening=0.1), ValueError,
         "Nesterov"),
        (optcore.RMSprop, dict(alpha=-0.1), ValueError, "alpha"),
        (optcore.Adagrad, dict(lr_decay=-1), ValueError, "lr_decay"),
        (optcore.Adagrad, dict(initial_accumulator_value=-1), ValueError,
         "initial_accumulator_value"),
        (optcore.Adadelta, dict(rho=1.5), ValueError, "rho"),
        (optcore.NAdam, dict(momentum_decay=-1), ValueError, "momentum_decay"),
    ]
    for cls, opts, error, match in cases:
        with pytest.raises(error, match=match):
            cls([p], **opts)
    # per-group values are checked too, at add_param_group ...
    opt = optcore.Adam([p])
    with pytest.raises(ValueError, match="param group 1.*learning rate"):
        opt.add_param_group({"params": [random_array(rng, 3, np.float64)], "lr": -2})
    assert len(opt.param_groups) == 1
    # ... and at step, before anything is written
    opt.param_groups[0]["betas"] = (0.9, 2.0)
    before = p.copy()
    with pytest.raises(ValueError, match="beta parameter at index 1"):
        opt.step([np.ones_like(p)])
    np.testing.assert_array_equal(p, before)
    assert len(opt.state) == 0


def test_bad_grads_change_nothing(rng):
    groups = [{"params": [random_array(rng, 6, np.float32)]},
              {"params": [random_array(rng, 4, np.float32), random_array(rng, 3, np.float32)]}]
    opt = optcore.Adam(copy.deepcopy(groups), lr=0.1)
    opt.step(grads_like(rng, groups))
    snap = snapshot(opt)
    before = [p.copy() for p in all_params(opt)]
    g = grads_like(rng, groups)
    cases = [
        ([g[0][0], g[1][0]], ValueError, "2 entries but the optimizer has 3"),
        ([g[0][0], g[1][0], g[1][1].astype(np.float64)], TypeError, "dtype float64"),
        ([g[0][0], g[1][0], np.ones(4, np.float32)], ValueError, "shape"),
        ([g[0][0], g[1][0], g[1][1].astype(np.int32)], TypeError, "dtype int32"),
        ([g[0], g[1][:1]], ValueError, "group 1 has 1 entries"),
        ({5: g[0]}, ValueError, "not a parameter group"),
        (g[0][0], TypeError, "grads must be a list"),
    ]
    for grads, error, match in cases:
        with pytest.raises(error, match=match):
            opt.step(grads)
        assert_unchanged(opt, snap)
        for p, q in zip(all_params(opt), before):
            np.testing.assert_array_equal(p, q)


def test_optcore_import_does_not_import_torch():
    from support import run_python
    code = "import sys, optcore, optcore.schedules; assert 'torch' not in sys.modules"
    run_python(["-c", code], check=True)


def test_grad_overlapping_a_parameter_changes_nothing(rng):
    groups = [{"params": [random_array(rng, 6, np.float64)]},
              {"params": [random_array(rng, 4, np.float64)]}]
    opt = optcore.Adam(copy.deepcopy(groups), lr=0.1)
    opt.step(grads_like(rng, groups))
    snap = snapshot(opt)
    before = [p.copy() for p in all_params(opt)]
    p1 = opt.param_groups[1]["params"][0]
    for grads in ([np.ones(6), p1],                                   # a parameter
                  [np.ones(6), p1[::-1]],                             # reversed view
                  [opt.param_groups[0]["params"][0], np.ones(4)],
                  [np.ones(6), opt.arena(0, "exp_avg")[:4]]):         # optimizer state
        with pytest.raises(ValueError, match="share memory|overlap"):
            opt.step(grads)
        assert_unchanged(opt, snap)
        for p, q in zip(all_params(opt), before):
            np.testing.assert_array_equal(p, q)
    # gradients may share memory with each other
    g = np.ones(10)
    opt.step([g[:6], g[6:]])


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_copy_and_pickle_keep_the_arena_layout(how, rng):
    import pickle
    groups = [{"params": [random_array(rng, 9, np.float32), random_array(rng, 4, np.float32)]},
              {"params": [random_array(rng, 5, np.float32)], "lr": 0.3}]
    opt = optcore.RMSprop(copy.deepcopy(groups), lr=0.01, momentum=0.5, centered=True)
    for _ in range(3):
        opt.step(grads_like(rng, groups))
    twin = copy.deepcopy(opt) if how == "deepcopy" else pickle.loads(pickle.dumps(opt))
    assert all(p is not q and np.array_equal(p, q)
               for p, q in zip(all_params(opt), all_params(twin)))
    for i, st in twin.state.items():
        g = 0 if i < 2 else 1
        for key, value in st.items():
            if isinstance(value, np.ndarray):
                assert np.shares_memory(value, twin.arena(g, key))
    for _ in range(3):
        grads = grads_like(rng, groups)
        opt.step(grads)
        twin.step(grads)
    for p, q in zip(all_params(opt), all_params(twin)):
        np.testing.assert_array_equal(p, q)


def test_replaced_state_arrays_are_used(rng):
    """State entries are the truth even though a group's call arguments are
    cached: an array a user puts into the state is the one updated."""
    p = random_array(rng, 8, np.float64)
    opt = optcore.Adam([p], lr=0.1)
    g = random_array(rng, 8, np.float64)
    opt.step([g])
    mine = np.full(8, 0.5)
    opt.state[0]["exp_avg"] = mine
    ref, m, v = p.copy(), mine.copy(), opt.state[0]["exp_avg_sq"].copy()
    opt.step([g])
    optcore.adam_step(ref, g, m, v, step=2, lr=0.1)
    np.testing.assert_array_equal(p, ref)
    np.testing.assert_array_equal(mine, m)
    # and a step count set by hand is honoured
    opt.state[0]["step"] = 10
    opt.step([g])
    assert opt.state[0]["step"] == 11


# ---- a step that raises changes nothing, however many kernel calls ---------

def assert_params(opt, before):
    for p, q in zip(all_params(opt), before):
        np.testing.assert_array_equal(p, q)


def assert_same_state(opt, other):
    assert sorted(opt.state) == sorted(other.state)
    for i, st in opt.state.items():
        assert sorted(st) == sorted(other.state[i])
        for key, value in st.items():
            np.testing.assert_array_equal(value, other.state[i][key], err_msg=key)


@pytest.mark.parametrize("cls", ALL, ids=ids(ALL))
def test_a_refused_first_step_creates_no_state(cls, rng):
    """A first step the kernel refuses (a parameter passed as its own
    gradient) registers no state entry: the next step is still a first step."""
    opts = random_options(cls, rng)
    if cls is optcore.SGD:
        opts.update(momentum=0.9)
    params = [random_array(rng, 7, np.float64), random_array(rng, 5, np.float64)]
    opt = cls([p.copy() for p in params], **opts)
    twin = cls([p.copy() for p in params], **opts)
    snap = snapshot(opt)
    mine = all_params(opt)
    with pytest.raises(ValueError, match="overlap|share memory"):
        opt.step([random_array(rng, 7, np.float64), mine[1]])
    assert_unchanged(opt, snap)
    assert_params(opt, params)
    for _ in range(2):
        grads = [random_array(rng, 7, np.float64), random_array(rng, 5, np.float64)]
        opt.step(grads)
        twin.step(grads)
        assert_params(opt, all_params(twin))
        assert_same_state(opt, twin)


def test_sgd_momentum_starts_from_the_gradient_after_a_refused_step(rng):
    p = random_array(rng, 6, np.float64)
    before = p.copy()
    opt = optcore.SGD([p], lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="overlap"):
        opt.step([p])
    assert len(opt.state) == 0
    g = random_array(rng, 6, np.float64)
    opt.step([g])
    np.testing.assert_array_equal(opt.state[0]["momentum_buffer"], g)     # torch's first step
    np.testing.assert_array_equal(p, before - 0.1 * g)


def test_a_refused_first_step_next_to_stepped_parameters_changes_nothing(rng):
    """One group, two kernel calls (a parameter with state, a fresh one):
    the fresh one's refusal comes before the other call writes."""
    p0, p1 = random_array(rng, 6, np.float64), random_array(rng, 4, np.float64)
    opt = optcore.Adam([p0, p1], lr=0.1)
    opt.step([random_array(rng, 6, np.float64), None])
    snap, before = snapshot(opt), [p0.copy(), p1.copy()]
    with pytest.raises(ValueError, match="overlap|share memory"):
        opt.step([random_array(rng, 6, np.float64), p1])
    assert_unchanged(opt, snap)
    assert_params(opt, before)
    assert sorted(opt.state) == [0]


def misaligned(n, dtype=np.float64):
    """A writable C-contiguous array of n elements one byte off alignment."""
    itemsize = np.dtype(dtype).itemsize
    a = np.frombuffer(bytearray(itemsize * n + 1), dtype, n, 1)
    assert a.flags.writeable and a.flags.c_contiguous and not a.flags.aligned
    return a


def spoilers():
    """(what, spoil(opt) -> grads, error, match) for a two-group Adam whose
    group 1 (parameters 1 and 2) holds the defect: each would make group 1's
    kernel call fail, or alias a buffer group 0's call writes."""
    here = r"parameter 2 \(group 1, index 1\), state 'exp_avg'"
    as_buffer = r"the 'exp_avg' state of parameter 2 \(group 1, index 1\)"     # kernels' wording

    def state(key, make):
        def spoil(opt):
            opt.state[2][key] = make(opt.state[2][key])
        return spoil

    def delete(key):
        def spoil(opt):
            del opt.state[2][key]
        return spoil

    def readonly(a):
        a = a.copy()
        a.flags.writeable = False
        return a

    yield "state of the wrong dtype", state("exp_avg", lambda a: a.astype(np.float32)), \
        TypeError, as_buffer + " has dtype float32"
    yield "state of the wrong size", state("exp_avg", lambda a: np.zeros(a.size + 1)), \
        ValueError, as_buffer + " has 5 elements"
    yield "read-only state", state("exp_avg", readonly), ValueError, as_buffer + " is read-only"

    def freeze_view(opt):
        opt.state[2]["exp_avg"].flags.writeable = False
    yield "state view made read-only", freeze_view, ValueError, \
        r"'exp_avg' state of parameter 2 \(group 1, index 1\) is read-only"
    yield "strided state", state("exp_avg", lambda a: np.zeros(2 * a.size)[::2]), \
        ValueError, as_buffer + " is not C-contiguous"
    yield "misaligned state", state("exp_avg", lambda a: misaligned(a.size)), \
        ValueError, as_buffer + " is not aligned"
    yield "state not an array", state("exp_avg", lambda a: a.tolist()), TypeError, here
    yield "deleted state", delete("exp_avg"), ValueError, here + ": missing"
    yield "deleted step", delete("step"), ValueError, r"state 'step': missing"
    yield "fractional step", state("step", lambda s: 2.5), TypeError, r"'step': must be an int"
    yield "negative step", state("step", lambda s: -4), ValueError, r"'step': must be a non"
    yield "step not a number", state("step", lambda s: "2"), TypeError, r"'step'"

    def readonly_param(opt):
        opt.param_groups[1]["params"][0].flags.writeable = False
    yield "read-only parameter", readonly_param, ValueError, r"parameter 1 .*read-only"

    def state_is_a_parameter(opt):
        opt.state[1]["exp_avg"] = opt.param_groups[0]["params"][0]
    yield "state aliasing another group's parameter", state_is_a_parameter, ValueError, \
        "share memory"

    def state_of_two_parameters(opt):
        opt.state[1]["exp_avg_sq"] = opt.state[0]["exp_avg_sq"]
    yield "one state array for two parameters", state_of_two_parameters, ValueError, \
        "share memory"

    def grad_is_other_groups_state(opt):
        mine = np.zeros(6)
        opt.state[0]["exp_avg"] = mine
        return [np.ones(6), mine, np.ones(4)]
    yield "grad aliasing another group's replaced state", grad_is_other_groups_state, \
        ValueError, "share memory"


SPOILERS = list(spoilers())


@pytest.mark.parametrize("what, spoil, error, match", SPOILERS, ids=[s[0] for s in SPOILERS])
def test_a_refused_step_over_several_groups_changes_nothing(what, spoil, error, match, rng):
    """docs/contract.md §8 across kernel calls: group 0's call must not run when group
    1's would be refused (or would alias what group 0's call writes)."""
    groups = [{"params": [random_array(rng, 6, np.float64)]},
              {"params": [random_array(rng, 6, np.float64), random_array(rng, 4, np.float64)],
               "lr": 0.01}]
    opt = optcore.Adam(copy.deepcopy(groups), lr=0.1)
    for _ in range(2):
        opt.step(grads_like(rng, groups))
    grads = spoil(opt) or [random_array(rng, 6, np.float64), random_array(rng, 6, np.float64),
                           random_array(rng, 4, np.float64)]
    snap, before = snapshot(opt), [p.copy() for p in all_params(opt)]
    with pytest.raises(error, match=match):
        opt.step(grads)
    assert_unchanged(opt, snap)
    assert_params(opt, before)


def test_a_refused_step_over_several_dtypes_changes_nothing(rng):
    """One group, a float32 and a float64 parameter: two kernel calls."""
    spoilers = [(lambda st: st.pop("momentum_buffer"), ValueError),
                (lambda st: st.update(square_avg=np.zeros(3, np.float32)), TypeError),
                (lambda st: st.update(step=1.0), TypeError)]
    for spoil, error in spoilers:
        p32, p64 = random_array(rng, 5, np.float32), random_array(rng, 3, np.float64)
        opt = optcore.RMSprop([p32, p64], lr=0.01, momentum=0.5)
        opt.step([random_array(rng, 5, np.float32), random_array(rng, 3, np.float64)])
        spoil(opt.state[1])
        snap, before = snapshot(opt), [p32.copy(), p64.copy()]
        with pytest.raises(error, match=r"(parameter 1 \(group 0, index 1\), state|state of "
                                        r"parameter 1 \(group 0, index 1\))"):
            opt.step([random_array(rng, 5, np.float32), random_array(rng, 3, np.float64)])
        assert_unchanged(opt, snap)
        assert_params(opt, before)


def test_a_refused_nadam_step_changes_nothing(rng):
    groups = [{"params": [random_array(rng, 4, np.float32)]},
              {"params": [random_array(rng, 3, np.float32)]}]
    opt = optcore.NAdam(copy.deepcopy(groups))
    opt.step(grads_like(rng, groups))
    opt.state[1]["mu_product"] = "0.9"
    snap, before = snapshot(opt), [p.copy() for p in all_params(opt)]
    with pytest.raises(TypeError, match=r"parameter 1 \(group 1, index 0\), state 'mu_product'"):
        opt.step(grads_like(rng, groups))
    assert_unchanged(opt, snap)
    assert_params(opt, before)


def test_misaligned_grads_are_read_through_an_aligned_copy(rng):
    """Gradients are only read: a misaligned one (in any group) is copied,
    and the step equals the step with an aligned gradient."""
    groups = [{"params": [random_array(rng, 6, np.float64)]},
              {"params": [random_array(rng, 4, np.float64)], "lr": 0.01}]
    opt = optcore.Adam(copy.deepcopy(groups), lr=0.1)
    twin = optcore.Adam(copy.deepcopy(groups), lr=0.1)
    for _ in range(3):
        g0, g1 = random_array(rng, 6, np.float64), random_array(rng, 4, np.float64)
        odd = misaligned(4)
        odd[:] = g1
        opt.step([g0, odd])
        twin.step([g0, g1])
        assert_params(opt, all_params(twin))
        assert_same_state(opt, twin)
    # one group too: the functional kernel would refuse the misaligned array
    p = random_array(rng, 4, np.float64)
    single, ref = optcore.SGD([p.copy()], lr=0.1), optcore.SGD([p.copy()], lr=0.1)
    single.step([odd])
    ref.step([np.array(odd)])
    assert_params(single, all_params(ref))


def test_a_misaligned_grad_overlapping_a_parameter_is_refused(rng):
    """The aligned copy must not hide that the gradient shares memory with a
    parameter (which the kernel writes while the gradient would be read)."""
    raw = np.zeros(6 * 8 + 8, np.uint8)
    p = raw[:48].view(np.float64)
    p[:] = random_array(rng, 6, np.float64)
    before = p.copy()
    opt = optcore.Adam([p], lr=0.1)
    with pytest.raises(ValueError, match="share memory"):
        opt.step([raw[1:49].view(np.float64)])
    np.testing.assert_array_equal(p, before)
    assert len(opt.state) == 0


@pytest.mark.parametrize("cls, kind", [(optcore.Adam, "exp_avg"), (optcore.Adam, "exp_avg_sq"),
                                       (optcore.SGD, "momentum_buffer")])
def test_an_equal_valued_replacement_of_size_1_state_is_used(cls, kind):
    """The cached one-call step compares state arrays by identity: a copy
    put into the state (equal in value, one element) is the array updated,
    not the arena view it replaced."""
    opts = dict(lr=0.1, momentum=0.9) if cls is optcore.SGD else dict(lr=0.1)
    p, q = np.ones(1), np.ones(1)
    opt, twin = cls([p], **opts), cls([q], **opts)
    for _ in range(2):
        opt.step([np.ones(1)])
        twin.step([np.ones(1)])
    st = opt.state[0]
    st[kind] = st[kind].copy()
    arena = opt.arena(0, kind).copy()
    opt.step([np.ones(1)])
    twin.step([np.ones(1)])
    np.testing.assert_array_equal(p, q)
    np.testing.assert_array_equal(st[kind], twin.state[0][kind])
    assert not np.array_equal(st[kind], arena[:1])               # it was updated ...
    np.testing.assert_array_equal(opt.arena(0, kind), arena)      # ... not the old view


def test_a_strided_grad_spanning_a_parameter_without_sharing_is_fine(rng):
    """Across groups, memory is compared element-exactly: a strided gradient
    whose address range spans another group's parameter but shares no
    element with it is an ordinary input."""
    raw = random_array(rng, 5, np.float64)
    p0 = raw[2:3]                                   # between the gradient's elements
    opt = optcore.Adam([{"params": [p0]}, {"params": [random_array(rng, 2, np.float64)]}])
    twin = optcore.Adam([{"params": [p0.copy()]}, {"params": [all_params(opt)[1].copy()]}])
    g0 = random_array(rng, 1, np.float64)
    strided = raw.copy()[0::4]
    opt.step([g0, raw[0::4]])
    twin.step([g0, strided])
    assert_params(opt, all_params(twin))


def test_numpy_integer_step_counts_are_kept(rng):
    p = random_array(rng, 3, np.float32)
    opt = optcore.NAdam([p])
    opt.step([random_array(rng, 3, np.float32)])
    opt.state[0]["step"] = np.int64(10)
    opt.step([random_array(rng, 3, np.float32)])
    assert opt.state[0]["step"] == 11


# ---- the classes outside the spec registry check parameters alike --------------------

@pytest.mark.parametrize("name", ["LBFGS", "Muon", "SparseAdam", "Adafactor"])
def test_other_classes_refuse_bad_parameters(name):
    # a dtype is a TypeError naming the parameter (the spec's rule), a
    # layout a ValueError; nothing is added to the optimizer
    cls = getattr(optcore, name)
    good = np.ones((3, 4), np.float32)
    bad_dtypes = [np.ones((3, 4), np.int32), [[1.0] * 4] * 3]
    if name != "Adafactor":                         # it steps bfloat16/float16 too
        bad_dtypes += [np.ones((3, 4), np.float16), bfloat16_array(np.ones((3, 4)))]
    if name == "LBFGS":
        bad_dtypes.append(np.ones((3, 4)))          # one dtype: one flat vector
    for bad in bad_dtypes:
        with pytest.raises(TypeError, match="parameter 1"):
            cls([good, bad])
    readonly = np.ones((3, 4), np.float32)
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match="parameter 1.*read-only"):
        cls([good, readonly])
    if name not in ("LBFGS", "Muon"):               # these move any strides in place
        with pytest.raises(ValueError, match="parameter 1 .*C-contiguous"):
            cls([good, np.ones((4, 6), np.float32)[:, ::2]])
        opt = cls([good])
        with pytest.raises(TypeError, match=r"parameter 1 \(group 1, index 0\) has dtype"):
            opt.add_param_group({"params": [np.ones((3, 4), np.int32)]})
        assert len(opt.param_groups) == 1
