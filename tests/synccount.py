"""A CPU stand-in for `torch.cuda.set_sync_debug_mode`: counts the calls that would block on a device."""

from __future__ import annotations

from collections import Counter

import torch
from torch.overrides import TorchFunctionMode

READS = {"item", "tolist", "nonzero", "argwhere", "__bool__", "__int__", "__float__", "__index__", "__array__",
         "numpy", "cpu", "masked_select", "unique", "unique_consecutive", "bincount", "repeat_interleave"}


def _reading_index(index) -> bool:
    """A boolean mask, a 0-d tensor (read as an int), or a slice with tensor bounds: indexing that reads values."""
    items = index if isinstance(index, tuple | list) else (index,)
    bounds = [b for i in items if isinstance(i, slice) for b in (i.start, i.stop, i.step)]
    return any(isinstance(i, torch.Tensor) and (i.dtype == torch.bool or i.dim() == 0) for i in (*items, *bounds))


def _mirror(tensor) -> bool:
    return isinstance(tensor, torch.Tensor) and getattr(tensor, "_host_mirror", False)


class SyncCounter(TorchFunctionMode):
    """Counts host reads by kind while active; `peeks` counts reads of host mirrors (non-blocking on CUDA)."""

    def __init__(self):
        super().__init__()
        self.reads: Counter = Counter()
        self.peeks = 0

    @property
    def total(self) -> int:
        return sum(self.reads.values())

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in READS or (name in ("__getitem__", "__setitem__", "index_put_") and _reading_index(args[1])):
            if args and _mirror(args[0]):
                self.peeks += 1
            else:
                self.reads[name] += 1
        return func(*args, **kwargs)
