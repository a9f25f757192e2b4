"""Smoke workload for memory checkers (valgrind memcheck, ASan), and the
checker of valgrind's log.

    python tests/memcheck_smoke.py                 # the workload (run it under valgrind)
    python tests/memcheck_smoke.py --overflow      # a deliberate heap overflow in an optcore kernel
    python tests/memcheck_smoke.py --check LOG     # exit 1 if LOG has an error in optcore's code

The workload calls every kernel of registry.py (single and multi-tensor,
float32 and float64, 1 and 2 threads, sizes across the vector width and the
parallel threshold), calls that raise for each kind of bad input, the linear
model and a checkpoint round trip. ``--overflow`` calls a kernel's C entry
point (through its Cython capsule) with a length past the end of its buffer:
a memory checker must report it, which shows the setup can fail.
"""

import ctypes
import os
import re
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402


def workload():
    import optcore
    from registry import KERNELS, hyper_variants, make_buffers, run_steps

    rng = np.random.default_rng(0)
    old = optcore.set_parallel_threshold(64)      # parallel regions on small sizes
    calls = 0
    try:
        for threads in (1, 2):
            optcore.set_num_threads(threads)
            for entry in KERNELS:
                for hp in hyper_variants(entry):
                    for dtype in (np.float32, np.float64):
                        sizes = [0, 7, 100, 1025] if entry.multi else [1025]
                        bufs = make_buffers(entry, hp, rng, sizes, dtype,
                                            as_list=entry.multi)
                        run_steps(entry, bufs, hp, steps=2)
                        calls += 2
                        calls += _bad_calls(entry, bufs, hp)
        X = rng.standard_normal((50, 4))
        for w, b in [(rng.standard_normal(4), None), (rng.standard_normal((4, 3)),
                                                      rng.standard_normal(3))]:
            y = X @ w if b is None else X @ w + b
            optcore.linear_mse_grad(X, y + 0.1, w, b)
            calls += 1
        with tempfile.TemporaryDirectory() as tmp:
            state = {"state": {0: {"exp_avg": rng.standard_normal(100), "step": 3}},
                     "param_groups": [{"params": [0], "lr": 0.1}]}
            optcore.save(state, os.path.join(tmp, "c.ckpt"))
            optcore.load(os.path.join(tmp, "c.ckpt"))
    finally:
        optcore.set_num_threads(None)
        optcore.set_parallel_threshold(old)
    print(f"memcheck smoke: {calls} kernel calls")


def _bad_calls(entry, bufs, hp):
    """Calls that must raise: wrong dtype, size, read-only, aliasing, hyperparameter."""
    first = entry.buffers[0].name
    written = [b.name for b in entry.buffers if b.role == "write" and bufs[b.name] is not None]
    one = (lambda x: x[-1]) if isinstance(bufs[first], list) else (lambda x: x)

    def replace(name, make):
        out = dict(bufs)
        if isinstance(bufs[name], list):
            out[name] = bufs[name][:-1] + [make(bufs[name][-1])]
        else:
            out[name] = make(bufs[name])
        return out

    cases = [(replace(first, lambda a: np.ones(a.shape, np.int32)), hp)]
    if sum(v is not None for v in bufs.values()) > 1:        # sizes must agree
        cases.append((replace(first, lambda a: np.ones(a.size + 1, a.dtype)), hp))
    if written:
        cases.append((replace(written[0], lambda a: np.broadcast_to(a, a.shape)), hp))
        others = [b.name for b in entry.buffers
                  if b.name != written[0] and bufs[b.name] is not None]
        if others:
            cases.append((replace(written[0], lambda a: one(bufs[others[0]])), hp))
        elif isinstance(bufs[written[0]], list) and len(bufs[written[0]]) > 1:
            # the same array twice in one written list
            cases.append((replace(written[0], lambda a: bufs[written[0]][-2]), hp))
    for k, v in (("step", 0), ("reduction", "bad"), ("norm_type", -1.0)):
        if k in hp:
            cases.append((bufs, dict(hp, **{k: v})))
    n = 0
    for b, h in cases:
        try:
            entry.call(entry.fast, b, h)
        except (TypeError, ValueError):
            n += 1
        else:
            raise AssertionError(f"{entry.name} accepted a bad call")
    return n


def overflow():
    """Write past the end of a heap buffer through sgd_step_f32's C entry point."""
    from optcore.kernels import sgd
    cap = sgd.__pyx_capi__["sgd_step_f32"]
    api = ctypes.pythonapi
    api.PyCapsule_GetName.restype = ctypes.c_char_p
    api.PyCapsule_GetName.argtypes = [ctypes.py_object]
    api.PyCapsule_GetPointer.restype = ctypes.c_void_p
    api.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    ptr = api.PyCapsule_GetPointer(cap, api.PyCapsule_GetName(cap))
    fn = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                          ctypes.c_ssize_t, ctypes.c_longlong, ctypes.c_double,
                          ctypes.c_double, ctypes.c_double, ctypes.c_int, ctypes.c_double,
                          ctypes.c_int, ctypes.c_int)(ptr)
    n = 1000                     # 4000 bytes: allocated by malloc, not NumPy's small cache
    p, g = np.ones(n, np.float32), np.ones(n, np.float32)
    fn(p.ctypes.data, g.ctypes.data, None, n + 16, 1, 0.5, 0.0, 0.0, 0, 0.0, 0, 1)
    print("overflow call returned")


# ---- valgrind log checking ----------------------------------------------------------

_OURS = re.compile(r"optcore/kernels/|__pyx_|optcore[^ ]*\.so")
_KINDS = re.compile(r"Invalid (read|write|free)|uninitialised|Uninitialised|"
                    r"definitely lost|Mismatched free|overlap|Syscall param")


def check_log(path):
    """Error records of a valgrind log that involve optcore's code."""
    with open(path) as f:
        text = f.read()
    records, current = [], []
    for line in text.splitlines():
        body = re.sub(r"^==\d+== ?", "", line)
        if not body.strip():
            if current:
                records.append(current)
            current = []
        else:
            current.append(body)
    if current:
        records.append(current)
    errors = [r for r in records if _KINDS.search(r[0])]
    ours = [r for r in errors if any(_OURS.search(x) for x in r)]
    summary = re.findall(r"ERROR SUMMARY: (\d+) errors", text)
    print(f"valgrind: {len(errors)} error records in all "
          f"(ERROR SUMMARY {summary[-1] if summary else '?'}), {len(ours)} in optcore")
    for r in ours:
        print("\n".join(r[:25]))
        print("-" * 60)
    return ours


if __name__ == "__main__":
    if sys.argv[1:2] == ["--check"]:
        sys.exit(1 if check_log(sys.argv[2]) else 0)
    elif sys.argv[1:2] == ["--overflow"]:
        overflow()
    else:
        workload()
