"""The check-only entry points of optcore.kernels._buffers (check_buffers,
check_calls): every error they raise, that they write (and keep) nothing, and
that they refuse exactly what a kernel's own binding refuses, with the same
message."""

import sys

import numpy as np
import pytest

import optcore
from optcore.kernels._buffers import check_buffers, check_calls

ADAM_NAMES = ("param", "grad", "exp_avg", "exp_avg_sq", "max_exp_avg_sq")
ADAM_ROLES = ("write", "read", "write", "write", None)
N = 16


def _adam_bufs(n=N, dtype=np.float32, as_list=False):
    rng = np.random.default_rng(n)
    bufs = [rng.standard_normal(n).astype(dtype) for _ in range(4)]
    bufs[3] = np.abs(bufs[3])
    if as_list:
        bufs = [[b, b[: n // 2].copy()] for b in bufs]
    return bufs


def _adam_call(bufs):
    optcore.adam_step(*bufs, step=1, lr=1e-3)


def _check_adam(bufs, labels=None):
    # the step kernels bind with the mixed-precision rules
    check_buffers(ADAM_NAMES, list(bufs) + [None], ADAM_ROLES, labels, mixed=True)


def _error(fn):
    try:
        fn()
    except (TypeError, ValueError) as exc:
        return type(exc), str(exc)
    return None


def _snapshot(bufs):
    out = []
    for b in bufs:
        for a in (b if isinstance(b, list) else [b]):
            out.append(a.tobytes() if isinstance(a, np.ndarray) else a)
    return out


# ---- every error -------------------------------------------------------------------

def _unaligned(n, dtype=np.float32):
    raw = np.zeros(n * np.dtype(dtype).itemsize + 1, np.uint8)
    return raw[1:].view(dtype)


def _readonly(a):
    a = a.copy()
    a.flags.writeable = False
    return a


def _cases():
    """(id, bufs, error type, message fragment) for the Adam signature."""
    p, g, m, v = _adam_bufs()
    base = np.zeros(2 * N, np.float32)
    cases = [
        ("required-none", [p, g, None, v], ValueError,
         "exp_avg is required for these options but is None"),
        ("not-a-list", [[p], [g], m, [v]], ValueError,
         "param is a list of 1 tensors but exp_avg is not a list"),
        ("single-vs-list", [p, [g], m, v], ValueError,
         "grad is a list but param is a single array"),
        ("list-length", [[p, p.copy()], [g], [m, m.copy()], [v, v.copy()]], ValueError,
         "grad has 1 tensors but param has 2"),
        ("list-none", [[p], [None], [m], [v]], ValueError,
         "grad[0] is required for these options but is None"),
        ("not-a-buffer", [p, "abc", m, v], TypeError,
         "grad must be a float32 or float64 array (or buffer), got str"),
        ("int-dtype", [p, g.astype(np.int32), m, v], TypeError,
         "grad has dtype int32; optcore kernels take float32, float64, bfloat16 or "
         "float16"),
        ("byte-order", [p, g.astype(">f4"), m, v], TypeError, "non-native byte order"),
        ("list-dtypes", [[p, p.copy()], [g, g.astype(np.float64)], [m, m.copy()],
                         [v, v.copy()]], TypeError,
         "grad[1] has dtype float64 but grad[0] (another tensor of the same argument) "
         "has dtype float32"),
        ("written-strided", [p, g, np.zeros(2 * N, np.float32)[::2], v], ValueError,
         "exp_avg is not C-contiguous; optcore updates it in place"),
        ("written-fortran", [p.reshape(4, 4).T, g, m, v], ValueError,
         "param is not C-contiguous"),
        ("read-only", [p, g, _readonly(m), v], ValueError,
         "exp_avg is read-only; optcore updates it in place"),
        ("unaligned", [p, g, m, _unaligned(N)], ValueError,
         "exp_avg_sq is not aligned to its 4-byte elements"),
        ("unaligned-read", [p, _unaligned(N), m, v], ValueError,
         "grad is not aligned to its 4-byte elements"),
        ("size", [p, g[:-1].copy(), m, v], ValueError,
         "grad has 15 elements but param has 16"),
        ("size-in-list", [[p], [g[:3].copy()], [m], [v]], ValueError,
         "grad[0] has 3 elements but param[0] has 16"),
        ("same-array", [p, g, p, v], ValueError,
         "param and exp_avg overlap in memory; a buffer that is written may not "
         "share memory with another argument"),
        ("overlapping-views", [base[:N], g, base[N // 2: N // 2 + N], v], ValueError,
         "param and exp_avg overlap in memory"),
        ("grad-is-param", [p, p, m, v], ValueError, "param and grad overlap in memory"),
        ("strided-grad-in-param", [base[:N], base[::2], m, v], ValueError,
         "param and grad overlap in memory"),
        ("reversed-grad-in-param", [base[:N], base[N // 2: N // 2 + N][::-1], m, v],
         ValueError, "param and grad overlap in memory"),
        ("same-in-written-list", [[p, m], [g, g], [m.copy(), m], [v, v.copy()]],
         ValueError, "param[1] and exp_avg[1] overlap in memory"),
    ]
    return cases


CASES = _cases()


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_each_error_matches_the_kernel(case):
    _, bufs, kind, fragment = case
    before = _snapshot(bufs)
    got = _error(lambda: _check_adam(bufs))
    assert got is not None and got[0] is kind and fragment in got[1], got
    assert _snapshot(bufs) == before          # the check wrote nothing
    # The kernel refuses the same call with the same error and message.
    assert _error(lambda: _adam_call(bufs)) == got
    assert _snapshot(bufs) == before


def test_torch_tensor_message():
    torch = pytest.importorskip("torch")
    p, g, m, v = _adam_bufs()
    bufs = [p, torch.zeros(N), m, v]
    got = _error(lambda: _check_adam(bufs))
    assert got[0] is TypeError and "grad is a torch tensor; pass tensor.numpy()" in got[1]
    assert _error(lambda: _adam_call(bufs)) == got


def test_too_many_arguments():
    a = [np.zeros(4, np.float32) for _ in range(33)]
    with pytest.raises(ValueError, match="at most 32 buffer arguments per call"):
        check_buffers([f"a{i}" for i in range(33)], a, ["read"] * 33)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("as_list", [False, True])
def test_valid_calls_pass_and_write_nothing(dtype, as_list):
    bufs = _adam_bufs(dtype=dtype, as_list=as_list)
    before = _snapshot(bufs)
    refs = [sys.getrefcount(b) for b in bufs]
    _check_adam(bufs)
    assert _snapshot(bufs) == before
    assert [sys.getrefcount(b) for b in bufs] == refs        # nothing kept


def test_read_inputs_may_be_strided_read_only_or_shared():
    p, g, m, v = _adam_bufs()
    base = np.zeros(13 * N, np.float32)
    # Interleaved with the parameter without sharing an element: allowed.
    check_buffers(("param", "grad"), (base[1:13], base[::13][:12]), ("write", "read"))
    check_buffers(("param", "grad"), (p, _readonly(g)), ("write", "read"))
    check_buffers(("grad", "other"), (g, g), ("read", "read"))
    check_buffers(("param", "grad"), ([p, m], [g, g]), ("write", "read"))
    check_buffers(("a",), (memoryview(p),), ("write",))     # any buffer, any shape
    check_buffers(("a",), (p.reshape(2, 8),), ("write",))


def test_strided_read_is_not_copied():
    # bind copies a strided input; the check only looks at it.
    p = np.zeros(N, np.float32)
    g = np.arange(4 * N, dtype=np.float32)[::4]
    refs = sys.getrefcount(g)
    check_buffers(("param", "grad"), (p, g), ("write", "read"))
    assert sys.getrefcount(g) == refs


def test_labels_name_the_buffers():
    p, g, m, v = _adam_bufs()
    with pytest.raises(ValueError, match=r"^parameter 3 \(group 1, index 0\) and the "
                                         r"'exp_avg' state of it overlap in memory"):
        _check_adam([p, g, p, v], labels=["parameter 3 (group 1, index 0)", None,
                                          "the 'exp_avg' state of it", None, None])
    with pytest.raises(ValueError, match=r"^P1 has 15 elements but P0 has 16"):
        check_buffers(("p", "q"), ([p], [g[:-1].copy()]), ("write", "read"),
                      [["P0"], ["P1"]])
    with pytest.raises(TypeError, match="^gradient B has dtype int32"):
        check_buffers(("p", "q"), (p, g.astype(np.int32)), ("write", "read"),
                      [None, "gradient B"])


def test_bad_arguments_of_the_check_itself():
    p, g = _adam_bufs()[:2]
    with pytest.raises(ValueError, match="roles must be 'write', 'read', 'copy' or None"):
        check_buffers(("p",), (p,), ("modify",))
    with pytest.raises(ValueError, match="one entry per argument"):
        check_buffers(("p", "g"), (p,), ("write",))
    with pytest.raises(ValueError, match="one entry per argument"):
        check_buffers((), (), ())
    with pytest.raises(ValueError, match="labels for p: one label per tensor"):
        check_buffers(("p",), ([p, g],), ("write",), [["only one"]])
    with pytest.raises(ValueError, match="labels for p: one str for a single array"):
        check_buffers(("p",), (p,), ("write",), [["a"]])
    with pytest.raises(TypeError, match="a call is"):
        check_calls([(("p",), (p,))])


# ---- several calls -------------------------------------------------------------------

def _param_call(p, label):
    return (("param",), (p,), ("write",), [label])


def test_calls_may_differ_in_dtype_and_size():
    calls = [_param_call(np.zeros(3, np.float32), "parameter 0"),
             _param_call(np.zeros(5, np.float64), "parameter 1"),
             (ADAM_NAMES, _adam_bufs() + [None], ADAM_ROLES)]
    check_calls(calls)
    check_calls([])


def test_overlap_across_calls():
    base = np.zeros(20, np.float32)
    calls = [_param_call(base[:10], "parameter 0"), _param_call(base[5:15], "parameter 1")]
    with pytest.raises(ValueError, match=r"^parameter 0 and parameter 1 overlap in memory"):
        check_calls(calls)
    same = np.zeros(4, np.float64)
    with pytest.raises(ValueError, match=r"^parameter 0 and parameter 1 overlap"):
        check_calls([_param_call(same, "parameter 0"), _param_call(same, "parameter 1")])
    # A gradient of one call inside a parameter of another: refused.
    p, g, m, v = _adam_bufs()
    other = np.zeros(N, np.float32)
    with pytest.raises(ValueError, match=r"^param and grad overlap"):
        check_calls([(ADAM_NAMES, [p, g, m, v, None], ADAM_ROLES),
                     (("param", "grad"), (other[:8], p[:8]), ("write", "read"))])
    # Gradients of different calls may share memory; disjoint views are fine.
    check_calls([(("param", "grad"), (base[:10], g[:10]), ("write", "read")),
                 (("param", "grad"), (base[10:], g[:10]), ("write", "read"))])


def test_strided_original_across_calls():
    base = np.zeros(4 * N, np.float32)
    check_calls([(("param",), (base[1:4],), ("write",)),
                 (("grad",), (base[::4],), ("read",))])      # interleaved: fine
    with pytest.raises(ValueError, match="param and grad overlap"):
        check_calls([(("param",), (base[:N],), ("write",)),
                     (("grad",), (base[::4],), ("read",))])


def test_per_call_error_comes_first():
    p = np.zeros(4, np.float32)
    with pytest.raises(TypeError, match="has dtype int32"):
        check_calls([_param_call(p, "parameter 0"),
                     _param_call(np.zeros(4, np.int32), "parameter 1")])


# ---- the same rule as bind, over random layouts ---------------------------------------

def test_agrees_with_bind_on_random_aliasing():
    rng = np.random.default_rng(7)
    pool = np.zeros(64, np.float32)
    views = [lambda o, n: pool[o:o + n], lambda o, n: pool[o::2][:n],
             lambda o, n: pool[o::3][:n][::-1], lambda o, n: np.zeros(n, np.float32)]
    for _ in range(400):
        n = int(rng.integers(1, 10))
        bufs = []
        for k in range(4):
            make = views[int(rng.integers(len(views)))]
            bufs.append(make(int(rng.integers(0, 30)), n))
        got = _error(lambda: _check_adam(bufs))
        assert _error(lambda: _adam_call(bufs)) == got, bufs


def test_the_overlap_rule_over_single_buffer_calls():
    # Written vs read, interleaved without sharing, read vs read, written vs written.
    base = np.zeros(20, np.float32)

    def calls(written, read):
        return ([(("w",), (a,), ("write",)) for a in written]
                + [(("r",), (a,), ("read",)) for a in read])
    with pytest.raises(ValueError, match="^w and r overlap"):
        check_calls(calls([base[:10]], [base[5:15]]))
    check_calls(calls([base[1:2]], [base[::2]]))
    check_calls(calls([np.zeros(3)], [base[:4], base[:4]]))
    with pytest.raises(ValueError, match="^w and w overlap"):
        check_calls(calls([base[:4], base[2:6]], []))
    check_calls(calls([memoryview(base[:4])], [base[4:]]))      # any buffer


def test_copy_role_counts_only_the_originals_memory():
    # A misaligned gradient the caller copies itself: bind would refuse it,
    # the overlap rule still applies to its original.
    raw = np.zeros(4 * N + 4, np.uint8)
    param = raw[:4 * N].view(np.float32)
    inside = raw[1:4 * N + 1].view(np.float32)        # misaligned, inside param
    outside = np.zeros(4 * N + 1, np.uint8)[1:].view(np.float32)
    assert not inside.flags.aligned and not outside.flags.aligned
    with pytest.raises(ValueError, match="not aligned"):
        check_buffers(("param", "grad"), (param, inside), ("write", "read"))
    with pytest.raises(ValueError, match=r"^param and the grad of parameter 0 overlap"):
        check_calls([(("param",), (param,), ("write",)),
                     (("grad",), (inside,), ("copy",), ["the grad of parameter 0"])])
    with pytest.raises(ValueError, match=r"^param and grad overlap"):
        check_buffers(("param", "grad"), (param, inside), ("write", "copy"))
    check_buffers(("param", "grad"), (param, outside), ("write", "copy"))
    check_buffers(("param", "grad"), (param, outside.astype(np.int8)), ("write", "copy"))
    # Interleaved without sharing an element, or only read: allowed.
    base = np.zeros(4 * N, np.float32)
    check_calls([(("param",), (base[1:4],), ("write",)),
                 (("grad",), ([base[::4], base[::4]],), ("copy",))])
    check_calls([(("grad",), (param,), ("read",)), (("grad",), (inside,), ("copy",))])


def test_the_overlap_rule_over_many_buffers():
    # More buffers than the stack holds (the sort that merges address-ordered
    # runs): the same verdict as comparing every pair of ranges.
    rng = np.random.default_rng(11)
    pool = np.zeros(20000, np.float32)
    verdicts = set()
    for trial in range(150):
        m = int(rng.integers(65, 300))
        starts = rng.integers(0, pool.size - 40, m)
        if trial % 3 == 0:
            starts.sort()                       # one run
        elif trial % 3 == 1:
            starts = np.concatenate([np.sort(s) for s in np.array_split(starts, 5)])
        sizes = rng.integers(1, 40, m)
        written = rng.random(m) < 0.1
        calls = [(("b",), (pool[o:o + n],), ("write" if w else "read",))
                 for o, n, w in zip(starts, sizes, written)]
        clash = any(written[i] or written[j]
                    for i in range(m) for j in range(i + 1, m)
                    if starts[i] < starts[j] + sizes[j] and starts[j] < starts[i] + sizes[i])
        try:
            check_calls(calls)
            refused = False
        except ValueError as exc:
            assert "overlap in memory" in str(exc)
            refused = True
        assert refused == clash, trial
        verdicts.add(refused)
    assert verdicts == {True, False}
