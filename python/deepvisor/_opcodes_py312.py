"""What the CPython 3.12 opcodes that touch Python state take and leave on the
stack (see _bytecode.py for the kinds and the opcodes both versions share).
The 3.11 twin is _opcodes_py311.py."""

import sys

from . import _bytecode as B

# 3.12 reports an instruction with EXTENDED_ARG prefixes at the first prefix.
EVENT_AT_PREFIX = True

_TRUTH = {"POP_JUMP_IF_TRUE", "POP_JUMP_IF_FALSE", "UNARY_NOT"}
_USE_ONE = {"LIST_EXTEND", "SET_UPDATE", "DICT_UPDATE", "DICT_MERGE", "BEFORE_WITH", "GET_LEN",
            "UNARY_INVERT", "UNPACK_EX", "GET_AWAITABLE", "MATCH_MAPPING", "MATCH_SEQUENCE", "CALL_INTRINSIC_1"}
_USE_TWO = {"COMPARE_OP"}


def _kw_names(instructions, k, code):
    """The keyword names of the CALL at k: a KW_NAMES just before it."""
    for j in range(k - 1, max(-1, k - 3), -1):
        if instructions[j].opname == "KW_NAMES":
            return code.co_consts[instructions[j].arg]  # dis does not resolve this constant
        if instructions[j].opname not in ("EXTENDED_ARG", "CACHE"):
            break
    return ()


def describe(ins, instructions, k, code):
    """(kind, n_in, n_out, flags, aux, arg) for an instruction that matters, else None."""
    op = ins.opname
    if op == "LOAD_ATTR":  # the low bit of the argument asks for a method
        return (B.METHOD, 1, 2, 0, 0, ins.argval) if ins.arg & 1 else (B.ATTR, 1, 1, 0, 0, ins.argval)
    if op == "LOAD_SUPER_ATTR":
        return (B.SUPER_ATTR, 3, 0, B.BEFORE, 0, ins.argval)
    if op == "BINARY_SLICE":
        return (B.SLICE, 3, 1, 0, 0, None)
    if op == "STORE_SLICE":
        return (B.STORE_SLICE, 4, 0, B.BEFORE, 0, None)
    return B.describe_common(ins, code, lambda: _kw_names(instructions, k, code), _TRUTH, _USE_ONE, _USE_TWO)


def enable_opcode_events():
    # Setting f_trace_opcodes through the frame attribute marks the interpreter
    # as wanting instruction events; PyEval_SetTrace then turns them on.
    frame = sys._getframe()
    frame.f_trace_opcodes = True
    frame.f_trace_opcodes = False
