"""An object's attributes as a capture snapshots them and a replay sets them.

A program's writes to attributes are side effects: the monitor snapshots the
attributes of each object it tracks and the replay sets the ones the run
changed. Where they live depends on the object:

- an instance: its __dict__ and the slots of its Python classes (__slots__);
- a class: its dict, read-only, so set through setattr;
- a function: its __dict__, and its defaults (__defaults__, __kwdefaults__);
- the program's own module: its __dict__.

A write that lands elsewhere (a C-level attribute such as a tensor's
requires_grad, a function's __code__, an object's __class__) has no snapshot
to replay it from: `replayable` says so, and the capture is refused.
"""

import types
import weakref

# A function's fields that a program may set and a replay sets again (through setattr).
FUNCTION_FIELDS = ("__defaults__", "__kwdefaults__")
HEAP_TYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE: every Python class (and a few C types, as functools.partial)
_slots_of_class = weakref.WeakKeyDictionary()


def slot_descriptors(cls):
    """{name: member descriptor} of the __slots__ of cls and of its Python bases."""
    try:
        return _slots_of_class[cls]
    except KeyError:
        pass
    slots = {}
    for klass in reversed(cls.__mro__):  # a subclass's slot of the same name wins, as lookup finds it
        # A Python class's member descriptors are its __slots__ (a C type's, as
        # functools.partial's, are its C fields, and it has no __slots__).
        if klass.__flags__ & HEAP_TYPE and "__slots__" in vars(klass):
            slots.update((name, d) for name, d in vars(klass).items() if isinstance(d, types.MemberDescriptorType))
    _slots_of_class[cls] = slots
    return slots


def _slot(obj, name):
    """The member descriptor of obj's slot `name`, or None."""
    return slot_descriptors(type(obj)).get(name) if type(obj).__flags__ & HEAP_TYPE else None


def _slot_items(obj):
    items = []
    for name, descriptor in slot_descriptors(type(obj)).items():
        try:
            items.append((name, descriptor.__get__(obj, type(obj))))
        except AttributeError:
            pass  # not set
    return items


def attribute_items(obj):
    """[(name, value)] of the attributes a replay can set on obj, or None
    where it keeps none (a builtin object, a tuple)."""
    if isinstance(obj, type):
        return list(vars(obj).items())
    if isinstance(obj, types.FunctionType):
        return list(vars(obj).items()) + [(f, getattr(obj, f)) for f in FUNCTION_FIELDS]
    d = getattr(obj, "__dict__", None)
    items = list(d.items()) if type(d) is dict else None
    if type(obj).__flags__ & HEAP_TYPE and slot_descriptors(type(obj)):
        items = (items or []) + _slot_items(obj)
    return items


def _class_attribute(cls, name):
    for klass in cls.__mro__:
        d = vars(klass)
        if name in d:
            return d[name]
    return None


def replayable(obj, name):
    """Whether a write of obj.name lands where attribute_items reads it (or
    runs Python code whose own writes are tracked: a property's setter)."""
    if isinstance(obj, types.FunctionType) and name in FUNCTION_FIELDS:
        return True
    if _slot(obj, name) is not None:
        return True
    descriptor = _class_attribute(type(obj), name)
    setter = getattr(type(descriptor), "__set__", None)
    return setter is None or isinstance(descriptor, property) or isinstance(setter, types.FunctionType)


def put(obj, name, value):
    """Sets obj.name as the run left it, without running a __setattr__ of the program's."""
    slot = _slot(obj, name)
    if slot is not None:
        slot.__set__(obj, value)
    elif isinstance(obj, type) or isinstance(obj, types.FunctionType) and name in FUNCTION_FIELDS:
        setattr(obj, name, value)  # a class's dict is read-only; a function's fields are not in its dict
    else:
        obj.__dict__[name] = value


def remove(obj, name):
    """Deletes obj.name, as the run did."""
    slot = _slot(obj, name)
    if slot is not None:
        try:
            slot.__delete__(obj)
        except AttributeError:
            pass
    elif isinstance(obj, type):
        if name in vars(obj):
            delattr(obj, name)
    else:
        obj.__dict__.pop(name, None)
