"""Data-parallel and sharded (ZeRO) optimizers for NumPy parameters over MPI.

``ZeroOptimizer(optimizer_class, params, comm, stage=1, **hyperparameters)``
wraps any optcore NumPy optimizer class; ``comm`` is an mpi4py communicator
(mpi4py is imported here only, when a step or a state dict moves data).
See docs/distributed.md for launching and the stage semantics.
"""

from optcore.distributed.zero import DataParallelOptimizer, ZeroOptimizer

__all__ = ["ZeroOptimizer", "DataParallelOptimizer"]
