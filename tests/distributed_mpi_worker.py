"""The rank side of tests/test_distributed_mpi.py, run under mpirun:

    mpirun -n N python -m mpi4py distributed_mpi_worker.py SCENARIO [PATH]

Each scenario checks on every rank and exits non-zero on a failure
(``python -m mpi4py`` aborts the whole job on an uncaught exception, so a
failing rank never leaves the others waiting)."""

import pickle
import sys

import numpy as np
from mpi4py import MPI

import optcore
from optcore.distributed import ZeroOptimizer
from optcore.distributed import _collective as collective
from optcore.distributed import zero as zero_module

comm = MPI.COMM_WORLD
RANK, WORLD = comm.Get_rank(), comm.Get_size()

# Sizes that are not multiples of the world size, across dtypes and groups.
SHAPES = [(5, 3), (7,), (1,), (4, 2)]
DTYPES = [np.float32, np.float32, np.float64, np.float64]

CLASSES = {
    "SGD": dict(lr=0.1, momentum=0.9, weight_decay=0.01),
    "Adam": dict(lr=0.01, amsgrad=True),
    "AdamW": dict(lr=0.01, weight_decay=0.1),
    "RMSprop": dict(lr=0.01, momentum=0.5, centered=True),
    "Adagrad": dict(lr=0.1, initial_accumulator_value=0.1),
    "Adadelta": dict(lr=0.5),
    "Adamax": dict(lr=0.01),
    "NAdam": dict(lr=0.01),
    "RAdam": dict(lr=0.01),
    "Lion": dict(lr=0.001),
    "LAMB": dict(lr=0.01),
}


def same_bits(a, b, what):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape, what
    assert a.tobytes() == b.tobytes(), f"{what}: bits differ on rank {RANK}"


def initial_params():
    rng = np.random.default_rng(0)
    return [rng.standard_normal(s).astype(d) for s, d in zip(SHAPES, DTYPES)]


def rank_grads(rank, step, params):
    rng = np.random.default_rng(1000 * step + rank + 1)
    return [rng.standard_normal(p.shape).astype(p.dtype) for p in params]


def averaged(step, params):
    """The reference average: rank order, in the dtype, then divided by N."""
    per_rank = [rank_grads(r, step, params) for r in range(WORLD)]
    if WORLD == 1:
        return per_rank[0]
    out = []
    for j in range(len(params)):
        acc = per_rank[0][j] + per_rank[1][j]
        for r in range(2, WORLD):
            acc = acc + per_rank[r][j]
        out.append(acc / params[j].dtype.type(WORLD))
    return out


def groups(params, **second):
    return [{"params": params[:2]}, {"params": params[2:], **second}]


def run_exact(name, stage, first=0, steps=3, bucket=None, flat=False):
    """``flat``: train with flat_params() and write the gradients into
    flat_grads() (no copies), checking the same bits."""
    cls = getattr(optcore, name)
    hyper = CLASSES[name]
    params, ref_params = initial_params(), initial_params()
    opt = ZeroOptimizer(cls, groups(params, lr=hyper["lr"] / 2), comm, stage=stage, **hyper)
    if bucket is not None:
        for avg in opt._averagers:
            avg.__init__(comm, avg.segment, bucket)
    ref = cls(groups(ref_params, lr=hyper["lr"] / 2), **hyper)
    if flat:
        originals, passed = params, [p.copy() for p in params]
        views = opt.flat_params()
        assert all(a is b for a, b in zip(opt.flat_params(), views))
        for p, v in zip(params, views):
            same_bits(v, p, "flat_params() starts from the parameters")
        if stage:
            params = views
        flat_grads = opt.flat_grads()
    for step in range(first, first + steps):
        grads = rank_grads(RANK, step, params)
        if flat:
            for view, g in zip(flat_grads, grads):
                view[...] = g
            grads = flat_grads
        opt.step(grads)
        ref.step(averaged(step, ref_params))
        for j, (p, q) in enumerate(zip(params, ref_params)):
            same_bits(p, q, f"{name} stage {stage} step {step} parameter {j}")
    sd, ref_sd = opt.state_dict(), ref.state_dict()
    assert sd["param_groups"] == ref_sd["param_groups"], (sd["param_groups"],
                                                          ref_sd["param_groups"])
    assert sorted(sd["state"]) == sorted(ref_sd["state"])
    for idx, st in ref_sd["state"].items():
        assert list(sd["state"][idx]) == list(st), (list(sd["state"][idx]), list(st))
        for key, value in st.items():
            same_bits(sd["state"][idx][key], value, f"{name} state {idx} {key}")
    # ... loads back into a sharded optimizer unchanged
    again = ZeroOptimizer(cls, groups([p.copy() for p in params], lr=hyper["lr"] / 2), comm,
                          stage=stage, **hyper)
    again.load_state_dict(sd)
    for idx, st in again.state_dict()["state"].items():
        for key, value in st.items():
            same_bits(value, sd["state"][idx][key], f"{name} reloaded state {idx} {key}")
    # the gathered state loads into the plain class, which steps on alike
    plain_params = [p.copy() for p in params]
    plain = cls(groups(plain_params, lr=hyper["lr"] / 2), **hyper)
    plain.load_state_dict(sd)
    if flat and stage:
        for p, q in zip(originals, passed):
            same_bits(p, q, "flat_params() leaves the arrays passed at construction")
    opt.step(rank_grads(RANK, 99, params))
    plain.step(averaged(99, plain_params))
    for j, (p, q) in enumerate(zip(params, plain_params)):
        same_bits(p, q, f"{name} stage {stage} after reloading, parameter {j}")
    if stage:
        # state for this rank's slice only: 1/N of the whole, plus padding
        whole = sum(v.nbytes for st in ref.state.values() for v in st.values()
                    if isinstance(v, np.ndarray))
        padding = sum((s.padded - s.total) * s.dtype.itemsize for s in opt._segments)
        assert opt.state_nbytes * WORLD <= whole + 4 * padding, (opt.state_nbytes, whole)


def scenario_exact():
    for name in CLASSES:
        for stage in (0, 1, 2):
            run_exact(name, stage)
    run_exact("AdamW", 2, bucket=2)      # several all-to-all buckets per slice
    for stage in (0, 1, 2):
        run_exact("AdamW", stage, flat=True)
        run_exact("SGD", stage, flat=True, bucket=3)
    # many parameters: one all-to-all instead of a message per piece
    limit, collective.MAX_POINT_TO_POINT = collective.MAX_POINT_TO_POINT, 1
    for stage in (0, 1):
        run_exact("AdamW", stage)
        run_exact("AdamW", stage, flat=True)
    collective.MAX_POINT_TO_POINT = limit
    # LAMB: whole parameters per rank, with more parameters than ranks, as
    # many, and fewer (ranks that own none step a slice of padding)
    for n in (9, WORLD, 1):
        global SHAPES, DTYPES
        saved = SHAPES, DTYPES
        SHAPES = [(3 + k % 4, 2) for k in range(n)] + [(5,)]
        DTYPES = [np.float32] * n + [np.float64]
        run_exact("LAMB", 1)
        run_exact("LAMB", 2, flat=True, bucket=2)
        SHAPES, DTYPES = saved


def scenario_save(path):
    params = initial_params()
    opt = ZeroOptimizer(optcore.AdamW, groups(params, lr=0.005), comm, lr=0.01)
    for step in range(2):
        opt.step(rank_grads(RANK, step, params))
    sd = opt.state_dict()
    if RANK == 0:
        with open(path, "wb") as f:
            pickle.dump({"params": params, "sd": sd, "world": WORLD}, f)
    comm.Barrier()


def scenario_load(path):
    with open(path, "rb") as f:
        saved = pickle.load(f)
    assert saved["world"] != WORLD
    for stage in (1, 2, 0):
        params = [p.copy() for p in saved["params"]]
        ref_params = [p.copy() for p in saved["params"]]
        opt = ZeroOptimizer(optcore.AdamW, groups(params, lr=0.7), comm, stage=stage,
                            lr=0.01)
        opt.load_state_dict(saved["sd"])
        ref = optcore.AdamW(groups(ref_params, lr=0.7), lr=0.01)
        ref.load_state_dict(saved["sd"])
        assert opt.param_groups[1]["lr"] == 0.005     # the loaded options
        for step in range(2, 4):
            opt.step(rank_grads(RANK, step, params))
            ref.step(averaged(step, ref_params))
            for j, (p, q) in enumerate(zip(params, ref_params)):
                same_bits(p, q, f"loaded at stage {stage}, step {step}, parameter {j}")


def expect_same_error(fn, exc_type, words):
    """fn raises exc_type on every rank, with one message naming the rank."""
    try:
        fn()
    except exc_type as exc:
        message = str(exc)
    else:
        raise AssertionError(f"no {exc_type.__name__} on rank {RANK}")
    messages = comm.allgather(message)
    assert len(set(messages)) == 1, messages
    for word in words:
        assert word in message, (word, message)
    return message


def scenario_faults():
    bad = WORLD - 1
    rank_word = f"rank {bad}"
    for stage in (1, 2, 0):
        params = initial_params()
        before = [p.copy() for p in params]
        opt = ZeroOptimizer(optcore.Adam, groups(params), comm, stage=stage, lr=0.1,
                            check_finite=True)
        good = rank_grads(RANK, 0, params)

        def with_fault(fault):
            gs = [g.copy() for g in good]
            if RANK == bad:
                fault(gs)
            return lambda: opt.step(gs)

        def shape(gs):
            gs[1] = np.zeros(8, np.float32)

        def dtype(gs):
            gs[0] = gs[0].astype(np.float64)

        def missing(gs):
            gs[3] = None

        def nan(gs):
            gs[2][0] = np.nan

        def count(gs):
            gs.pop()

        expect_same_error(with_fault(shape), ValueError, [rank_word, "shape (8,)"])
        expect_same_error(with_fault(dtype), TypeError, [rank_word, "dtype float64"])
        expect_same_error(with_fault(missing), ValueError, [rank_word, "missing"])
        expect_same_error(with_fault(nan), FloatingPointError, [rank_word, "not finite"])
        expect_same_error(with_fault(count), ValueError, [rank_word, "entries"])
        if RANK == bad:
            opt.param_groups[0]["lr"] = -1.0
        expect_same_error(lambda: opt.step(good), ValueError, [rank_word, "learning rate"])
        opt.param_groups[0]["lr"] = 0.1
        for p, q in zip(params, before):
            same_bits(p, q, "parameters after refused steps")
        assert not opt.optimizer.state, "a refused step created state"
        opt.step(good)                  # still usable
        sd = opt.state_dict()
        stepped = [p.copy() for p in params]

        # A rank that raises in the middle of its step, after the exchange.
        local = opt.optimizer
        real_step = local.step

        def failing_step(grads):
            raise MemoryError("injected failure")

        if RANK == bad:
            local.step = failing_step
        expect_same_error(lambda: opt.step(good), RuntimeError,
                          [rank_word, "injected failure", "MemoryError"])
        local.step = real_step
        if stage:
            for p, q in zip(params, stepped):
                same_bits(p, q, "parameters after a step that failed mid-way")
        else:
            # stage 0 steps the parameters themselves: the other ranks did
            for p, q in zip(params, stepped):
                p[...] = q
        expect_same_error(lambda: opt.step(good), RuntimeError, ["load_state_dict"])
        opt.load_state_dict(sd)         # restores a consistent state
        opt.step(good)
        # a bad state dict on one rank: refused everywhere
        broken = pickle.loads(pickle.dumps(sd))
        if RANK == bad:
            broken["state"][0]["exp_avg"] = np.zeros(3, np.float32)
        expect_same_error(lambda: opt.load_state_dict(broken), ValueError, [rank_word])
    # different parameters on one rank: refused at construction
    params = initial_params()
    if RANK == bad:
        params[0] = np.zeros((5, 4), np.float32)
    expect_same_error(lambda: ZeroOptimizer(optcore.SGD, params, comm, lr=0.1),
                      ValueError, ["different parameters"])
    # a parameter the optimizer cannot update in place, on one rank
    params = initial_params()
    if RANK == bad:
        params[1].flags.writeable = False
    expect_same_error(lambda: ZeroOptimizer(optcore.SGD, params, comm, lr=0.1),
                      ValueError, [rank_word, "parameter 1"])


def scenario_abort():
    """A rank that dies outside the optimizer: mpirun must end the job."""
    params = initial_params()
    opt = ZeroOptimizer(optcore.SGD, params, comm, lr=0.1)
    if RANK == WORLD - 1:
        raise RuntimeError("a rank dies before its step")
    opt.step(rank_grads(RANK, 0, params))


def scenario_doctest():
    import doctest
    failed, attempted = doctest.testmod(zero_module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert failed == 0 and attempted > 0, (failed, attempted)


def main():
    scenario, *args = sys.argv[1:]
    globals()[f"scenario_{scenario}"](*args)
    comm.Barrier()
    print(f"rank {RANK} of {WORLD}: {scenario} ok", flush=True)


if __name__ == "__main__":
    main()
