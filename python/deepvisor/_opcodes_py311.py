"""What the CPython 3.11 opcodes that touch Python state take and leave on the
stack (see _bytecode.py for the kinds). The 3.12 twin is _opcodes_py312.py."""

import sys

from . import _bytecode as B

# 3.11 does not trace the instruction after an EXTENDED_ARG: the event for it
# comes at the first prefix (ceval.c, TARGET(EXTENDED_ARG)).
EVENT_AT_PREFIX = True

_TRUTH = {"POP_JUMP_FORWARD_IF_TRUE", "POP_JUMP_FORWARD_IF_FALSE", "POP_JUMP_BACKWARD_IF_TRUE",
          "POP_JUMP_BACKWARD_IF_FALSE", "JUMP_IF_TRUE_OR_POP", "JUMP_IF_FALSE_OR_POP", "UNARY_NOT"}
_USE_ONE = {"LIST_EXTEND", "SET_UPDATE", "DICT_UPDATE", "DICT_MERGE", "BEFORE_WITH", "GET_LEN", "UNARY_NEGATIVE",
            "UNARY_INVERT", "UNARY_POSITIVE", "UNPACK_EX", "GET_AWAITABLE", "MATCH_MAPPING", "MATCH_SEQUENCE"}
_USE_TWO = {"COMPARE_OP"}


def _kw_names(instructions, k, code):
    """The keyword names of the CALL at k: a KW_NAMES before its PRECALL."""
    for j in range(k - 1, max(-1, k - 4), -1):
        if instructions[j].opname == "KW_NAMES":
            return code.co_consts[instructions[j].arg]  # dis does not resolve this constant
        if instructions[j].opname not in ("PRECALL", "EXTENDED_ARG", "CACHE"):
            break
    return ()


def describe(ins, instructions, k, code):
    """(kind, n_in, n_out, flags, aux, arg) for an instruction that matters, else None."""
    op = ins.opname
    if op == "LOAD_ATTR":
        return (B.ATTR, 1, 1, 0, 0, ins.argval)
    if op == "LOAD_METHOD":
        return (B.METHOD, 1, 2, 0, 0, ins.argval)
    if op == "LOAD_GLOBAL":
        return (B.GLOBAL, 0, 1, B.ALWAYS, 0, ins.argval)
    if op in ("LOAD_DEREF", "LOAD_CLASSDEREF") and ins.argval in code.co_freevars:
        return (B.DEREF, 0, 1, B.ALWAYS | B.CELL_OPERAND, ins.arg, ins.argval)
    if op == "STORE_DEREF" and ins.argval in code.co_freevars:
        return (B.STORE_DEREF, 1, 0, B.ALWAYS | B.CELL_OPERAND | B.BEFORE, ins.arg, ins.argval)
    if op == "MAKE_CELL":
        return (B.NEW_CELL, 0, 0, B.ALWAYS | B.CELL_RESULT, ins.arg, None)
    if op == "BINARY_SUBSCR":
        return (B.ITEM, 2, 1, 0, 0, None)
    if op == "STORE_SUBSCR":
        return (B.STORE_ITEM, 3, 0, B.BEFORE, 0, None)
    if op == "DELETE_SUBSCR":
        return (B.DELETE_ITEM, 2, 0, B.BEFORE, 0, None)
    if op == "STORE_ATTR":
        return (B.STORE_ATTR, 2, 0, B.BEFORE, 0, ins.argval)
    if op == "DELETE_ATTR":
        return (B.DELETE_ATTR, 1, 0, B.BEFORE, 0, ins.argval)
    if op == "STORE_GLOBAL":
        return (B.STORE_GLOBAL, 1, 0, B.ALWAYS | B.BEFORE, 0, ins.argval)
    if op == "DELETE_GLOBAL":
        return (B.DELETE_GLOBAL, 0, 0, B.ALWAYS | B.BEFORE, 0, ins.argval)
    if op == "CONTAINS_OP":
        return (B.CONTAINS, 2, 1, 0, 0, ins.arg)
    if op in ("GET_ITER", "GET_YIELD_FROM_ITER"):
        return (B.ITER, 1, 1, 0, 0, None)
    if op == "FOR_ITER":
        return (B.NEXT, 1, 1, B.ITER_STEP, 0, None)
    if op == "UNPACK_SEQUENCE":
        return (B.UNPACK, 1, ins.arg, 0, 0, ins.arg)
    if op == "CALL":
        return (B.CALL, ins.arg + 2, 1, 0, 0, _kw_names(instructions, k, code))
    if op == "CALL_FUNCTION_EX":
        return (B.CALL_EX, 3 + (ins.arg & 1), 1, 0, 0, None)
    if op == "BINARY_OP":
        return (B.ARITH, 2, 1, 0, 0, ins.arg)
    if op in _TRUTH:
        return (B.TRUTH, 1, 0, B.BEFORE, 0, None)
    if op in _USE_TWO:
        return (B.USE, 2, 0, B.BEFORE, 0, op)
    if op in _USE_ONE:
        return (B.USE, 1, 0, B.BEFORE, 0, op)
    if op == "FORMAT_VALUE":
        return (B.USE, 2 if (ins.arg & 0x04) else 1, 0, B.BEFORE, 0, op)
    return None


def enable_opcode_events():
    pass
