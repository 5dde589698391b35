"""Writes through `tensor.data` seen by the plans' kept constants.

A plan keeps what it computed from parameters alone (runtime/constant_steps.h:
a weight cast to bf16 under autocast) while each parameter keeps its address
and version counter. `p.data.mul_(2)` changes the parameter without moving
its counter (`.data` is another tensor, with a counter of its own), so every
access to `.data` is counted, and kept results are computed again on the
next call after any. Nothing else about `.data` changes.
"""

import torch

from . import _C

_DATA = torch._C.TensorBase.data  # the getset descriptor torch.Tensor inherits


def _get(self):
    _C.note_data_access()
    return _DATA.__get__(self)


def _set(self, value):
    _C.note_data_access()
    _DATA.__set__(self, value)


def install():
    if "data" not in torch.Tensor.__dict__:
        torch.Tensor.data = property(_get, _set, doc=_DATA.__doc__)
