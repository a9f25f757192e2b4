# Type stubs of optcore.kernels._plan (hand-written: not a spec kernel).

from typing import Any

from optcore.kernels._bound import BoundCall

class _GroupPlan:
    owner: Any
    group: dict[str, Any]
    data: Any
    def set_options(self, group: dict[str, Any]) -> bool: ...
    def same_options(self, group: dict[str, Any]) -> bool: ...

class NumpyPlan(_GroupPlan):
    @staticmethod
    def build(owner: Any, group: dict[str, Any], keys: tuple[str, ...],
              entries: list[dict[str, Any]], kinds: tuple[str, ...],
              columns: list[list[Any]], scalar_names: tuple[str, ...],
              data: Any, kernel: Any, max_step: int) -> NumpyPlan | None: ...
    def check(self, owner: Any, group: dict[str, Any], grads: Any) -> tuple[Any, ...] | None: ...
    def run(self, opt: Any, grads: Any) -> bool | None: ...
    @property
    def compiled(self) -> bool: ...
    def store(self, new: dict[str, Any]) -> None: ...

class TorchPlan(_GroupPlan):
    columns: Any
    @staticmethod
    def build(owner: Any, group: dict[str, Any], keys: tuple[str, ...], state: Any,
              entries: list[dict[str, Any]], entry_items: list[list[tuple[str, Any]]],
              scalar_views: list[tuple[Any, ...]], dtype: Any, typenum: int,
              data: Any) -> TorchPlan | None: ...
    def check(self, owner: Any, group: dict[str, Any],
              state: Any) -> tuple[list[Any], tuple[float, ...]] | None: ...
    def store_scalars(self, values: tuple[float, ...]) -> None: ...

def bound_call(kernel: Any, params: Any, plain: dict[str, Any]) -> BoundCall | None: ...
