"""ZeroOptimizer: any optcore NumPy optimizer, its state sharded over an MPI
communicator (ZeRO stages 1 and 2), or replicated (stage 0: plain data
parallel)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from optcore.distributed._collective import (Averager, agree, allgather_in_place,
                                             attempt)
from optcore.distributed._inputs import checked_grads, user_groups
from optcore.distributed._layout import Segment, param_views, segments, shard_state
from optcore.optim._checks import _check_params
from optcore.optim.base import Optimizer

__all__ = ["ZeroOptimizer", "DataParallelOptimizer"]

#: Kernels whose update of an element reads other elements of its tensor
#: (LAMB's trust ratio is a ratio of whole-tensor norms): sharded at the
#: granularity of whole parameters, each stepped as its own array.
_PER_TENSOR_KERNELS = frozenset({"lamb_step"})

#: Stage 2's all-to-all bucket, in elements sent per step of the loop.
_STAGE2_BUCKET = 1 << 20


class ZeroOptimizer:
    """An optcore optimizer data-parallel over an MPI communicator, its state
    sharded (ZeRO).

    Every rank passes the same parameters (same shapes, dtypes and groups)
    and, at each step, its own gradients. ``step`` averages the gradients
    over the ranks, steps, and leaves every rank's parameter arrays updated
    in place with the same values. Stage 1 and 2: the parameters of each
    group and dtype are packed into one flat buffer padded to a multiple of
    the world size; each rank owns one slice of it, holds the optimizer
    state of that slice only (1/N of it) and steps it with one native call
    of ``optimizer_class``; the stepped slices are then all-gathered in place
    and copied into the parameter arrays (or, after ``flat_params()``, left
    in the flat buffer the returned arrays view). LAMB, whose trust ratio
    needs whole tensors, is sharded by whole parameters: each rank's slice
    holds the parameters it owns, each stepped as its own array. Stage 0
    keeps the whole state on
    every rank and steps all of it (DeepSpeed's "stage 0", torch's
    ``DistributedDataParallel`` with a local optimizer).

    Parameters
    ----------
    optimizer_class : type
        An optcore NumPy optimizer class (``optcore.AdamW``, ``optcore.SGD``,
        ...) or a subclass of one.
    params : iterable of numpy.ndarray or of dict
        The parameters, or parameter groups, as for ``optimizer_class``.
    comm : mpi4py.MPI.Comm
        The communicator (an intracommunicator, e.g. ``MPI.COMM_WORLD``).
    stage : {1, 2, 0}, optional
        1: gradients reduce-scattered (sent from where they lie, received
        into a buffer kept between steps), state sharded. 2: the same
        through buckets of about a million elements; no buffer of the whole
        gradient is kept. 0: gradients all-reduced, state replicated.
    check_finite : bool, optional
        Refuse (on every rank, nothing changed) a step whose gradients hold
        a NaN or an infinity on any rank.
    **hyperparameters
        The options of ``optimizer_class`` (``lr``, ``betas``, ...).

    Attributes
    ----------
    optimizer : optcore.optim.Optimizer
        The wrapped optimizer: over this rank's slices (stages 1 and 2) or
        over the parameters themselves (stage 0). Its ``param_groups`` are
        this optimizer's: an option changed there (a learning-rate schedule)
        applies from the next step; change it alike on every rank.

    Raises
    ------
    TypeError
        If ``optimizer_class`` is not an optcore optimizer class, or an
        option has the wrong type.
    ValueError
        If ``stage`` is not 0, 1 or 2, the ranks disagree on the parameters
        or an option is out of range.

    See Also
    --------
    DataParallelOptimizer : The same with ``stage=0``.

    Notes
    -----
    The average is ``(((g_0 + g_1) + g_2) + ... + g_{N-1}) / N``, summed in
    rank order in the gradient's dtype: after each step every rank's
    parameters equal, bit for bit, those of a single-process
    ``optimizer_class`` stepped with that average (with N = 1, with the
    gradient itself).

    Examples
    --------
    >>> import numpy as np
    >>> import optcore
    >>> from mpi4py import MPI
    >>> from optcore.distributed import ZeroOptimizer
    >>> comm = MPI.COMM_WORLD                 # run under mpirun -n N
    >>> w = np.ones(1000, np.float32)
    >>> opt = ZeroOptimizer(optcore.AdamW, [w], comm, lr=0.5)
    >>> opt.step([np.ones(1000, np.float32)])  # each rank its own gradient
    >>> print(w[:3].round(4))                  # the same on every rank
    [0.495 0.495 0.495]
    >>> opt.state_dict()["state"][0]["exp_avg"].shape
    (1000,)
    """

    def __init__(self, optimizer_class: type, params: Iterable[Any], comm: Any, *,
                 stage: int = 1, check_finite: bool = False,
                 **hyperparameters: Any) -> None:
        if not (isinstance(optimizer_class, type) and issubclass(optimizer_class, Optimizer)
                and getattr(optimizer_class, "_rules", None) is not None):
            raise TypeError(f"optimizer_class must be an optcore optimizer class "
                            f"(optcore.AdamW, optcore.SGD, ...), got {optimizer_class!r}")
        if stage not in (0, 1, 2) or isinstance(stage, bool):
            raise ValueError(f"stage must be 0, 1 or 2, got {stage!r}")
        self._whole = optimizer_class._rules.spec.kernel in _PER_TENSOR_KERNELS
        self.comm = comm
        self.rank, self.world = comm.Get_rank(), comm.Get_size()
        self.stage = stage
        self.check_finite = bool(check_finite)
        self._class = optimizer_class
        self._hyper = dict(hyperparameters)
        self._broken: str | None = None

        built, failure = attempt(lambda: self._build(params))
        self._agree_layout(built, failure)

    # -- construction --

    def _build(self, params: Iterable[Any]) -> tuple[Any, ...]:
        groups = user_groups(params)
        user = [g["params"] for g in groups]
        # as the single-process class checks them (the wrapped optimizer of
        # stages 1 and 2 sees only the flat slices)
        _check_params([p for ps in user for p in ps],
                      [f"parameter {i} (group {g}, index {j})"
                       for i, (g, j) in enumerate((g, j) for g, ps in enumerate(user)
                                                  for j in range(len(ps)))])
        if self.stage == 0:
            optimizer = self._class(groups, **self._hyper)
            return groups, user, segments(user, self.world), optimizer, [], [], []
        segs = segments(user, self.world, self._whole)
        flats = [np.zeros(s.padded, s.dtype) for s in segs]
        r = self.rank
        shards = [f[s.owned(r)[0]:s.owned(r)[1]] for s, f in zip(segs, flats)]
        # the arrays the wrapped optimizer steps: each segment's slice, or
        # the whole parameters in it
        slots = [(i, j) for i, s in enumerate(segs) for j in s.slots(r)]
        local = [{**{k: v for k, v in group.items() if k != "params"},
                  "params": [segs[i].piece(shards[i], j, r) for i, j in slots
                             if segs[i].group == g]} for g, group in enumerate(groups)]
        optimizer = self._class(local, **self._hyper)
        return groups, user, segs, optimizer, flats, shards, slots

    def _agree_layout(self, built: Any, failure: Any) -> None:
        shape = None
        if built is not None:
            shape = [[(tuple(p.shape), p.dtype.str) for p in ps] for ps in built[1]]
        layouts = self.comm.allgather(shape)
        if failure is None and any(s != layouts[0] for s in layouts if s is not None):
            failure = ("ValueError", "the ranks passed different parameters (shapes, "
                                     "dtypes or groups); every rank passes the same")
        agree(self.comm, "ZeroOptimizer", failure)
        groups, self._params, self._segments, self.optimizer, self._flats, \
            self._shards, self._slots = built
        self._local = {id(s): i for i, s in enumerate(self._segments)}
        bucket = _STAGE2_BUCKET // self.world if self.stage == 2 else 1 << 62
        self._averagers = [Averager(self.comm, s, bucket) for s in self._segments]
        if self.stage == 0:
            self._avg_flats = [np.zeros(s.padded, s.dtype) for s in self._segments]
        else:
            self._avg_shards = [np.zeros(s.shard, s.dtype) for s in self._segments]
        # Each segment's flat gradient, which flat_grads() hands out and the
        # exchange then sends from in place.
        self._grad_flats: list[np.ndarray | None] = [None] * len(self._segments)
        self._param_views: list[np.ndarray] | None = None
        self._grad_views: list[np.ndarray] | None = None

    def flat_params(self) -> list[np.ndarray]:
        """The parameters as views into the flat buffers the step updates.

        Train with these arrays instead of the ones passed at construction
        to save two copies per step: in stages 1 and 2 ``step`` then steps
        this rank's slice of the flat buffer where it lies and all-gathers
        the slices straight into it, and stops writing the arrays passed
        at construction (their current values are copied in by this call).
        At stage 0 the parameters are stepped in place already: these are
        the arrays passed at construction. Call it alike on every rank.

        Returns
        -------
        list of numpy.ndarray
            One array per parameter (in order over all groups), each of its
            parameter's shape and dtype; the same arrays on every call.

        See Also
        --------
        flat_grads : The same for the gradients.

        Examples
        --------
        >>> import numpy as np
        >>> import optcore
        >>> from mpi4py import MPI
        >>> from optcore.distributed import ZeroOptimizer
        >>> w = np.ones((2, 3), np.float32)
        >>> opt = ZeroOptimizer(optcore.SGD, [w], MPI.COMM_WORLD, lr=0.5)
        >>> (weights,) = opt.flat_params()
        >>> opt.step([np.ones((2, 3), np.float32)])
        >>> print(weights[0], w[0])          # w is no longer written
        [0.5 0.5 0.5] [1. 1. 1.]
        """
        if self._param_views is None:
            if self.stage == 0:
                self._param_views = [p for ps in self._params for p in ps]
            else:
                for seg, flat in zip(self._segments, self._flats):
                    seg.copy_range(seg.params, 0, seg.total, flat[:seg.total])
                self._param_views = param_views(self._segments, self._flats)
        return list(self._param_views)

    def flat_grads(self) -> list[np.ndarray]:
        """Gradient arrays, views into flat buffers laid out like the
        parameters: write each step's gradients into them and pass them to
        ``step`` (at stage 2 this saves a copy of the gradients per step).

        Gradients are sent from where they lie at stages 0 and 1; at stage 2
        ``step`` recognises these arrays and sends each bucket from them in
        place instead of copying it (the first call allocates a buffer of
        the whole gradient, which stage 2 otherwise does without).

        Returns
        -------
        list of numpy.ndarray
            One zero-filled array per parameter (in order over all groups),
            each of its parameter's shape and dtype; the same arrays on
            every call.

        See Also
        --------
        flat_params : The same for the parameters.

        Examples
        --------
        >>> import numpy as np
        >>> import optcore
        >>> from mpi4py import MPI
        >>> from optcore.distributed import ZeroOptimizer
        >>> opt = ZeroOptimizer(optcore.SGD, [np.zeros(4)], MPI.COMM_WORLD, lr=1.0)
        >>> (weights,), (grad,) = opt.flat_params(), opt.flat_grads()
        >>> grad[:] = [1.0, 2.0, 3.0, 4.0]   # e.g. a backward pass writing in place
        >>> opt.step([grad])
        >>> print(weights)
        [-1. -2. -3. -4.]
        """
        if self._grad_views is None:
            for i, seg in enumerate(self._segments):
                if self._grad_flats[i] is None:
                    self._grad_flats[i] = np.zeros(seg.padded, seg.dtype)
            self._grad_views = param_views(self._segments, self._grad_flats)
        return list(self._grad_views)

    def _source(self, i: int, seg: Segment, grads: list[np.ndarray]) -> np.ndarray | None:
        """Segment ``i``'s flat gradient holding ``grads``, or None (staged)."""
        flat, views = self._grad_flats[i], self._grad_views
        if flat is not None and views is not None and all(
                g is views[idx] or (g.ctypes.data == views[idx].ctypes.data
                                    and g.strides == views[idx].strides)
                for g, idx in zip(grads, seg.indices)):
            return flat
        return None

    # -- what the wrapped optimizer shows --

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """The wrapped optimizer's parameter groups.

        Their ``params`` are this rank's slices in stages 1 and 2; options
        (``lr``, ...) set here apply at the next step, as in the wrapped class.

        Examples
        --------
        >>> import numpy as np
        >>> import optcore
        >>> from mpi4py import MPI
        >>> from optcore.distributed import ZeroOptimizer
        >>> opt = ZeroOptimizer(optcore.SGD, [np.zeros(8)], MPI.COMM_WORLD, lr=0.1)
        >>> opt.param_groups[0]["lr"]
        0.1
        >>> sum(p.size for p in opt.param_groups[0]["params"]) * MPI.COMM_WORLD.Get_size()
        8
        """
        return self.optimizer.param_groups

    @property
    def state_nbytes(self) -> int:
        """Bytes of optimizer state arrays held by this rank.

        In stages 1 and 2 about 1/N of a single process's, for N ranks.

        Examples
        --------
        >>> import numpy as np
        >>> import optcore
        >>> from mpi4py import MPI
        >>> from optcore.distributed import ZeroOptimizer
        >>> opt = ZeroOptimizer(optcore.Adam, [np.ones(1024)], MPI.COMM_WORLD)
        >>> opt.step([np.ones(1024)])
        >>> opt.state_nbytes * MPI.COMM_WORLD.Get_size()    # two float64 moments
        16384
        """
        return sum(v.nbytes for st in self.optimizer.state.values() for v in st.values()
                   if isinstance(v, np.ndarray))

    # -- the step --

    def _checked_grads(self, grads: Any) -> list[list[np.ndarray]]:
        if self._broken is not None:
            raise RuntimeError(self._broken)
        per_group = checked_grads(self._params, grads, self.check_finite)
        for g in range(len(self.optimizer.param_groups)):
            self.optimizer._group_hyper(g)      # an option edited to a bad value
        return per_group

    def _grads_of(self, per_group: list[list[np.ndarray]], seg: Segment) -> list[np.ndarray]:
        starts = np.cumsum([0] + [len(ps) for ps in self._params])
        return [per_group[seg.group][i - starts[seg.group]] for i in seg.indices]

    def step(self, grads: Any) -> None:
        """Average the gradients over the ranks and take one optimizer step.

        Collective: every rank calls it, with its own gradients. Everything
        is checked (on every rank, and agreed) before any data moves: a bad
        gradient on one rank raises the same error on every rank and changes
        nothing.

        Parameters
        ----------
        grads : list of numpy.ndarray, or list of lists
            One gradient per parameter (in order over all groups), or one
            list per group; each of its parameter's shape and dtype. None is
            refused (every parameter is stepped on every step).

        Raises
        ------
        TypeError
            If a gradient is not an array or has another dtype (on any rank).
        ValueError
            If the gradients do not match the parameters, one is missing, or
            an option was set to a bad value (on any rank).
        FloatingPointError
            If ``check_finite`` and a gradient is not finite (on any rank).
        RuntimeError
            If the step failed on a rank after the gradients were exchanged
            (the parameters are unchanged on every rank, but the state of the
            other ranks advanced: this optimizer then refuses to step until
            ``load_state_dict`` restores a checkpoint).

        Examples
        --------
        >>> import numpy as np
        >>> import optcore
        >>> from mpi4py import MPI
        >>> from optcore.distributed import ZeroOptimizer
        >>> w = np.zeros(4)
        >>> opt = ZeroOptimizer(optcore.SGD, [w], MPI.COMM_WORLD, stage=2, lr=1.0)
        >>> opt.step([np.arange(4.0)])
        >>> print(w)
        [ 0. -1. -2. -3.]
        """
        per_group, failure = attempt(lambda: self._checked_grads(grads))
        agree(self.comm, f"{type(self).__name__}.step", failure)
        if self.stage == 0:
            self._step_replicated(per_group)
        else:
            self._step_sharded(per_group)

    def _after_local_step(self, failure: Any) -> None:
        try:
            agree(self.comm, f"{type(self).__name__}.step", failure)
        except Exception as exc:
            self._broken = (f"a previous step failed after the gradients were exchanged "
                            f"({exc}); the optimizer state differs between ranks: call "
                            f"load_state_dict with a checkpoint before stepping again")
            raise RuntimeError(str(exc)) from None

    def _step_sharded(self, per_group: list[list[np.ndarray]]) -> None:
        averaged = []
        for i, seg in enumerate(self._segments):
            grads = self._grads_of(per_group, seg)
            averaged.append(self._averagers[i].reduce_scatter(
                grads, self._avg_shards[i], self._source(i, seg, grads)))
            if self._param_views is None:
                # The slice starts from the user's arrays, so values they set
                # between steps (alike on every rank) are the ones stepped.
                lo, hi = seg.owned(self.rank)
                seg.copy_range(seg.params, lo, hi, self._shards[i])
        segs, r = self._segments, self.rank
        local = [[segs[i].piece(averaged[i], j, r) for i, j in self._slots
                  if segs[i].group == g] for g in range(len(self._params))]
        _, failure = attempt(lambda: self.optimizer.step(local))
        self._after_local_step(failure)
        for seg, flat in zip(self._segments, self._flats):
            allgather_in_place(self.comm, flat)
            if self._param_views is None:
                seg.scatter(flat, seg.params)

    def _step_replicated(self, per_group: list[list[np.ndarray]]) -> None:
        views: list[list[np.ndarray]] = [[] for _ in self._params]
        where: dict[int, np.ndarray] = {}
        for i, seg in enumerate(self._segments):
            flat = self._avg_flats[i]
            lo, hi = seg.owned(self.rank)
            grads = self._grads_of(per_group, seg)
            mine = self._averagers[i].reduce_scatter(grads, flat[lo:hi],
                                                     self._source(i, seg, grads))
            if self.world > 1:
                allgather_in_place(self.comm, flat)
            else:
                flat = mine                         # the gradient itself
            for idx, p, off in zip(seg.indices, seg.params, seg.offsets):
                where[idx] = flat[off:off + p.size].reshape(p.shape)
        index = 0
        for g, ps in enumerate(self._params):
            views[g] = [where[index + j] for j in range(len(ps))]
            index += len(ps)
        _, failure = attempt(lambda: self.optimizer.step(views))
        self._after_local_step(failure)

    # -- checkpoints --

    def state_dict(self) -> dict[str, Any]:
        """The whole state, in the single-process class's ``state_dict`` format.

        Collective: every rank calls it and receives the whole state (the
        slices gathered), loadable into a ZeroOptimizer of any world size or
        stage and into the single-process ``optimizer_class``.

        Returns
        -------
        dict
            ``"state"`` by global parameter index and ``"param_groups"``.

        Examples
        --------
        >>> import numpy as np
        >>> import optcore
        >>> from mpi4py import MPI
        >>> from optcore.distributed import ZeroOptimizer
        >>> w = np.ones(5)
        >>> opt = ZeroOptimizer(optcore.Adam, [w], MPI.COMM_WORLD)
        >>> opt.step([np.ones(5)])
        >>> plain = optcore.Adam([w.copy()])     # the single-process class
        >>> plain.load_state_dict(opt.state_dict())
        >>> plain.state[0]["step"]
        1
        """
        local = self.optimizer.state_dict()
        if self.stage == 0:
            return local
        state: dict[int, dict[str, Any]] = {}
        for i, seg in enumerate(self._segments):
            mine = [(s, j) for s, (si, j) in enumerate(self._slots) if si == i]
            entries = [local["state"].get(s) for s, _ in mine]
            present = self.comm.allgather(all(e is not None for e in entries))
            if not all(present):
                if any(present):
                    raise RuntimeError("the ranks disagree on which state exists")
                continue
            entry = entries[0]
            assert entry is not None
            full: dict[str, Any] = {}
            for key, value in entry.items():
                if isinstance(value, np.ndarray):
                    flat = np.zeros(seg.padded, value.dtype)
                    lo, hi = seg.owned(self.rank)
                    for (_, j), e in zip(mine, entries):
                        seg.piece(flat[lo:hi], j, self.rank)[...] = e[key]
                    allgather_in_place(self.comm, flat)
                    full[key] = flat
                else:
                    full[key] = value
            for idx, p, off in zip(seg.indices, seg.params, seg.offsets):
                state[idx] = {k: (v[off:off + p.size].reshape(p.shape).copy()
                                  if isinstance(v, np.ndarray) else v)
                              for k, v in full.items()}
        groups, start = [], 0
        for saved, ps in zip(local["param_groups"], self._params):
            groups.append({**{k: v for k, v in saved.items() if k != "params"},
                           "params": list(range(start, start + len(ps)))})
            start += len(ps)
        return {"state": dict(sorted(state.items())), "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a ``state_dict()`` of this class (saved at any world size) or
        of the single-process ``optimizer_class``.

        Collective: every rank passes the same whole state dict. It is
        checked as the single-process class checks it (on a temporary
        optimizer over the parameters, holding the whole state for the
        moment), and the check is agreed: a load that raises raises on every
        rank and changes nothing.

        Parameters
        ----------
        state_dict : dict
            The state dict.

        Raises
        ------
        TypeError, ValueError, KeyError
            As the single-process ``load_state_dict`` (on any rank), or if
            the parameters of one group and dtype have different step counts.

        Examples
        --------
        >>> import numpy as np
        >>> import optcore
        >>> from mpi4py import MPI
        >>> from optcore.distributed import ZeroOptimizer
        >>> w = np.ones(5)
        >>> plain = optcore.Adam([w.copy()])
        >>> plain.step([np.ones(5)])
        >>> opt = ZeroOptimizer(optcore.Adam, [w], MPI.COMM_WORLD)
        >>> opt.load_state_dict(plain.state_dict())
        >>> opt.state_dict()["state"][0]["step"]
        1
        """
        local, failure = attempt(lambda: self._local_state_dict(state_dict))
        agree(self.comm, f"{type(self).__name__}.load_state_dict", failure)
        self.optimizer.load_state_dict(state_dict if self.stage == 0 else local)
        self._broken = None

    def _local_state_dict(self, state_dict: dict[str, Any]) -> dict[str, Any]:
        whole = self._class([{**{k: v for k, v in g.items() if k != "params"}, "params": ps}
                             for g, ps in zip(self.optimizer.param_groups, self._params)],
                            **self._hyper)
        whole.load_state_dict(state_dict)
        if self.stage == 0:
            return state_dict
        return shard_state(whole, self._segments, self.rank, self._slots)

def DataParallelOptimizer(optimizer_class: type, params: Iterable[Any], comm: Any,
                          **hyperparameters: Any) -> ZeroOptimizer:
    """An optcore optimizer data-parallel over MPI, its state replicated.

    ``ZeroOptimizer(optimizer_class, params, comm, stage=0, ...)``: the
    gradients are averaged over the ranks (bit for bit as ZeroOptimizer's)
    and every rank steps all of its parameters with the whole state, as
    torch's ``DistributedDataParallel`` with a local optimizer does.

    Parameters
    ----------
    optimizer_class : type
        An optcore NumPy optimizer class.
    params : iterable of numpy.ndarray or of dict
        The parameters, or parameter groups.
    comm : mpi4py.MPI.Comm
        The communicator.
    **hyperparameters
        The class's options, and ``check_finite``.

    Returns
    -------
    ZeroOptimizer
        With ``stage=0``.

    See Also
    --------
    ZeroOptimizer : The sharded optimizer.

    Examples
    --------
    >>> import numpy as np
    >>> import optcore
    >>> from mpi4py import MPI
    >>> from optcore.distributed import DataParallelOptimizer
    >>> w = np.ones(3)
    >>> opt = DataParallelOptimizer(optcore.SGD, [w], MPI.COMM_WORLD, lr=0.1)
    >>> opt.step([np.ones(3)])
    >>> print(w)
    [0.9 0.9 0.9]
    """
    return ZeroOptimizer(optimizer_class, params, comm, stage=0, **hyperparameters)
