"""Instruction tables for the tracer (src/capture/tracer.h).

For each code object the tracer steps, a table says which instructions read or
write Python state, how many values each takes from the stack before it runs
and leaves after, and the stack depth at every instruction. What an opcode
means differs between Python versions; that knowledge lives in one file per
version (_opcodes_py311.py, _opcodes_py312.py), and this file is the same for
both.
"""

import dis
import struct
import threading
import sys

# Instruction kinds, as the monitor receives them.
ATTR = 1          # obj.name                      operands (obj,)             results (value,)
METHOD = 2        # obj.name for a call           (obj,)                      (method or NULL, self or value)
ITEM = 3          # c[key]                        (c, key)                    (value,)
SLICE = 4         # c[a:b]                        (c, a, b)                   (value,)
GLOBAL = 5        # a global or builtin name      ()                          (value,)
DEREF = 6         # a free variable's cell        (cell, function)            (value,)
CONTAINS = 7      # key in c                      (key, c)                    (bool,)
ITER = 8          # iter(x)                       (x,)                        (iterator,)
UNPACK = 10       # a, b = x                      (x,)                        values, last first
CALL = 11         # f(*args, **kw)                (NULL or f, f or self, *args) (result,); arg: kw names
CALL_EX = 12      # f(*args, **kwargs)            (NULL, f, args[, kwargs])   (result,)
TRUTH = 13        # if x / not x                  (x,)                        before
STORE_ATTR = 14   # obj.name = v                  (v, obj)                    before
DELETE_ATTR = 15  # del obj.name                  (obj,)                      before
STORE_ITEM = 16   # c[key] = v                    (v, c, key)                 before
DELETE_ITEM = 17  # del c[key]                    (c, key)                    before
STORE_GLOBAL = 18 # global name = v               (v,)                        before
DELETE_GLOBAL = 19
STORE_DEREF = 20  # nonlocal name = v             (v, cell, function)         before
USE = 21          # any other use of a value: operators, comparisons, f-strings, *x, **x
STORE_SLICE = 22  # c[a:b] = v                    (v, c, a, b)                before
SUPER_ATTR = 23   # super().name                  (super, class, self)        before
NEW_CELL = 24     # a cell made for a local        ()                          (cell,)
ARITH = 25        # an operator                   (a, b) or (a,)              (result,); arg: the operator
SUMMARY = 26      # a summarized function starts  ()                          None (its frame: _monitor.SUMMARIES)
DEFAULTS = 27     # a frame starts whose function has defaults that are not plain constants
                  #                               (function,)                 None
IDENTITY = 28     # a is b / a is not b           (a, b)                      (bool,); arg: 1 for `is not`

KIND_NAMES = {v: k for k, v in globals().items() if k.isupper() and isinstance(v, int)}

# Entry flags (tracer.h: InstructionFlags).
ALWAYS = 1
BEFORE = 2
CELL_OPERAND = 4

# The version-specific opcode knowledge (imported after the kinds it uses).
if sys.version_info[:2] == (3, 11):
    from . import _opcodes_py311 as _opcodes
elif sys.version_info[:2] == (3, 12):
    from . import _opcodes_py312 as _opcodes
else:  # pragma: no cover
    raise ImportError(f"deepvisor supports CPython 3.11 and 3.12, not {sys.version.split()[0]}")

_TERMINAL = {"RETURN_VALUE", "RETURN_CONST", "RAISE_VARARGS", "RERAISE", "JUMP_FORWARD", "JUMP_BACKWARD",
             "JUMP_BACKWARD_NO_INTERRUPT"}
_JUMPS = set(dis.hasjrel) | set(dis.hasjabs)


def describe_common(ins, code, kw_names, truth, use_one, use_two):
    """(kind, n_in, n_out, flags, aux, arg) for the opcodes that take and leave
    the same on both Python versions, or None. The version files pass what
    differs: the CALL's keyword names, and the names of the conditional jumps
    and other operators that use a value."""
    op = ins.opname
    if op == "LOAD_GLOBAL":
        return (GLOBAL, 0, 1, ALWAYS, 0, ins.argval)
    if op in ("LOAD_DEREF", "LOAD_CLASSDEREF") and ins.argval in code.co_freevars:
        return (DEREF, 0, 1, ALWAYS | CELL_OPERAND, ins.arg, ins.argval)
    if op == "STORE_DEREF" and ins.argval in code.co_freevars:
        return (STORE_DEREF, 1, 0, ALWAYS | CELL_OPERAND | BEFORE, ins.arg, ins.argval)
    simple = {
        "BINARY_SUBSCR": (ITEM, 2, 1, 0), "STORE_SUBSCR": (STORE_ITEM, 3, 0, BEFORE),
        "DELETE_SUBSCR": (DELETE_ITEM, 2, 0, BEFORE), "GET_ITER": (ITER, 1, 1, 0),
        "GET_YIELD_FROM_ITER": (ITER, 1, 1, 0),
    }
    if op in simple:
        kind, n_in, n_out, flags = simple[op]
        return (kind, n_in, n_out, flags, 0, None)
    named = {"STORE_ATTR": (STORE_ATTR, 2, BEFORE), "DELETE_ATTR": (DELETE_ATTR, 1, BEFORE),
             "STORE_GLOBAL": (STORE_GLOBAL, 1, ALWAYS | BEFORE), "DELETE_GLOBAL": (DELETE_GLOBAL, 0, ALWAYS | BEFORE)}
    if op in named:
        kind, n_in, flags = named[op]
        return (kind, n_in, 0, flags, 0, ins.argval)
    if op == "CONTAINS_OP":
        return (CONTAINS, 2, 1, 0, 0, ins.arg)
    if op == "IS_OP":
        return (IDENTITY, 2, 1, 0, 0, ins.arg)
    if op == "UNPACK_SEQUENCE":
        return (UNPACK, 1, ins.arg, 0, 0, ins.arg)
    if op == "CALL":
        return (CALL, ins.arg + 2, 1, 0, 0, kw_names())
    if op == "CALL_FUNCTION_EX":
        return (CALL_EX, 3 + (ins.arg & 1), 1, 0, 0, None)
    if op == "BINARY_OP":
        return (ARITH, 2, 1, 0, 0, ins.arg)
    if op in truth:
        return (TRUTH, 1, 0, BEFORE, 0, None)
    if op == "COMPARE_OP":  # the operator rides along: an escaped number's comparison is decided (_scalars.py)
        return (USE, 2, 0, BEFORE, 0, f"{op} {ins.argval}")
    if op == "UNARY_NEGATIVE":  # an operator with one operand: an escaped number's `-s` stays symbolic
        return (ARITH, 1, 1, 0, 0, "neg")
    if op in use_two:
        return (USE, 2, 0, BEFORE, 0, op)
    if op in use_one:
        return (USE, 1, 0, BEFORE, 0, op)
    if op == "FORMAT_VALUE":
        return (USE, 2 if (ins.arg & 0x04) else 1, 0, BEFORE, 0, op)
    return None


def stack_depths(code, instructions):
    """The stack depth before each instruction, by offset, from the compiler's
    own stack effects: a walk over the jumps and the exception table."""
    index = {ins.offset: k for k, ins in enumerate(instructions)}
    depths = {}
    work = [(0, 0)]
    for entry in dis._parse_exception_table(code):
        work.append((entry.target, entry.depth + int(entry.lasti) + 1))
    while work:
        offset, depth = work.pop()
        k = index.get(offset)
        while k is not None and k < len(instructions):
            ins = instructions[k]
            if ins.offset in depths:
                break
            depths[ins.offset] = depth
            arg = ins.arg if ins.opcode >= dis.HAVE_ARGUMENT else None
            if ins.opcode in _JUMPS:
                work.append((ins.argval, depth + dis.stack_effect(ins.opcode, arg, jump=True)))
            if ins.opname in _TERMINAL:
                break
            depth += dis.stack_effect(ins.opcode, arg, jump=False)
            if ins.opname == "RETURN_GENERATOR":
                # A generator's frame resumes here with the value sent in on the
                # stack (None), which the next POP_TOP drops; dis says 0 for it,
                # as the compiler adds this prologue after counting depths.
                depth += 1
            k += 1
    return depths


def code_table(code):
    """(depths, entries, cell_slots) for the tracer: depths is the static stack
    depth at every code unit (int16, native order); entries are (unit, kind,
    n_in, n_out, flags, aux, arg) for the instructions that matter;
    cell_slots are the fast-locals slots of the cells the frame makes for its
    own variables (MAKE_CELL runs before the first traced instruction, so the
    tracer reports these cells, as made by the run, at the frame's first
    event)."""
    instructions = list(dis.get_instructions(code))
    cell_slots = [ins.arg for ins in instructions if ins.opname == "MAKE_CELL"]
    depths = stack_depths(code, instructions)
    units = len(code.co_code) // 2
    depth_at = [0] * units
    entries = []
    prefix_start = None  # where a run of EXTENDED_ARG prefixes began: the event comes there
    for k, ins in enumerate(instructions):
        unit = ins.offset // 2
        d = depths.get(ins.offset, 0)
        depth_at[unit] = d
        if ins.opname == "EXTENDED_ARG":
            prefix_start = unit if prefix_start is None else prefix_start
            continue
        spec = _opcodes.describe(ins, instructions, k, code)
        event_unit = prefix_start if (prefix_start is not None and _opcodes.EVENT_AT_PREFIX) else unit
        if prefix_start is not None:
            for u in range(prefix_start, unit):
                depth_at[u] = d
        prefix_start = None
        if spec is None:
            continue
        kind, n_in, n_out, flags, aux, arg = spec
        entries.append((event_unit, kind, n_in, n_out, flags, aux, arg))
    depths_bytes = struct.pack(f"{units}h", *[max(-32768, min(32767, d)) for d in depth_at])
    return depths_bytes, entries, cell_slots


_opcode_events_lock = threading.Lock()
_opcode_events_set = False


def set_opcode_events():
    """Python 3.12 turns on per-instruction trace events only once some frame
    asked for them through f_trace_opcodes (a flag of the interpreter); 3.11
    needs nothing. Asked once per process: asking again while another
    thread's capture traces crashed CPython 3.12.3."""
    global _opcode_events_set
    with _opcode_events_lock:
        if not _opcode_events_set:
            _opcodes.enable_opcode_events()
            _opcode_events_set = True
