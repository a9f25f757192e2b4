# Type stubs of optcore.kernels._bound (hand-written: not a spec kernel).

from typing import Any

class BoundCall:
    def run(self, inputs: Any, step: int) -> bool: ...
    def retune_lr(self, lr: float) -> bool: ...
