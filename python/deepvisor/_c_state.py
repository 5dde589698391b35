"""Objects whose state lives in a C layout that deepvisor does not follow.

A Python object's state is its dict and slots, which the monitor reads and
snapshots; containers, functions, classes, modules and tensors are followed
through modelled calls, stepped Python code or the tensor monitor. An
instance of any other C type (a numpy array's data, a random generator, an
lru_cache function's entries, a StringIO's text, a deque) keeps state that its
C methods, operators and the C functions given it read or change where no
instruction shows it: a replay could neither check nor repeat that, so the
monitor refuses such uses (the call runs eagerly, with the reason).
"""

import collections
import functools
import operator
import re
import sys
import types
import weakref

import torch

from ._attributes import HEAP_TYPE

_DESCRIPTORS = (types.MethodDescriptorType, types.WrapperDescriptorType, types.ClassMethodDescriptorType)

# C types whose state deepvisor follows, or whose instances cannot change
# (numbers, strings, dtypes, compiled patterns...).
_FOLLOWED_C_TYPES = frozenset({
    object, type, dict, list, tuple, set, frozenset, collections.OrderedDict, collections.defaultdict, str, bytes,
    int, float, complex, bool, type(None), type(NotImplemented), type(Ellipsis), slice, range, types.FunctionType,
    types.MethodType, types.BuiltinFunctionType, types.ModuleType, types.CodeType, types.CellType,
    *_DESCRIPTORS, types.MethodWrapperType, types.GetSetDescriptorType,
    types.MemberDescriptorType, property, staticmethod, classmethod, functools.partial, weakref.ref,
    operator.attrgetter, operator.itemgetter, operator.methodcaller, re.Pattern, torch.dtype,
    torch.device, torch.layout, torch.memory_format, torch.finfo, torch.iinfo, torch.Size, torch._C.TensorBase,
    torch.Tensor})
# Immutable bases: a C type deriving from one is a value (a struct sequence, an
# exception); one deriving from type is a metaclass (a class's state is its dict).
_IMMUTABLE_C_BASES = (tuple, frozenset, str, bytes, int, float, complex, BaseException, type)
_found = {}


def native_state_type(t):
    """The C type among t's bases whose state deepvisor does not follow, or None."""
    try:
        return _found[t]
    except KeyError:
        pass
    except TypeError:  # an unhashable type object
        return None
    found = next((c for c in t.__mro__ if not _followed(c)), None)
    _found[t] = found
    return found


def c_state_refusal(node, how):
    """Why `how` cannot use the monitor's node (its object keeps C state), or None."""
    if node.view is not None:
        return None  # a dict's keys, values or items: read through the dict
    obj = node.obj
    if native_state_type(type(obj)) is None or _is_typing_memo(obj):
        return None
    return f"{how} uses {node.name}, a {type(obj).__qualname__} whose state deepvisor does not follow"


def _is_typing_memo(obj):
    """typing's _tp_cache: an lru_cache over the making of generic aliases
    (`List[Tensor]`, in timm's torch.jit.annotate calls). Its entries are
    the aliases of their arguments, made again the same on a miss: no state
    that changes what the program computes."""
    return isinstance(obj, functools._lru_cache_wrapper) and \
        getattr(getattr(obj, "__wrapped__", None), "__module__", None) == "typing"


def _followed(c):
    if c in _FOLLOWED_C_TYPES or issubclass(c, _IMMUTABLE_C_BASES) or _is_python_class(c):
        return True
    np = sys.modules.get("numpy")
    return np is not None and issubclass(c, (np.generic, np.dtype, np.ufunc))


def _is_python_class(c):
    """Made by a class statement: a heap type with no C methods of its own (a
    C type's methods are method or slot descriptors of that type; a Python
    class may hold a base's, as torch.Tensor holds TensorBase's)."""
    if not c.__flags__ & HEAP_TYPE:
        return False
    return not any(isinstance(v, _DESCRIPTORS) and v.__objclass__ is c for v in vars(c).values())
