"""What the CPython 3.11 opcodes that touch Python state take and leave on the
stack (see _bytecode.py for the kinds and the opcodes both versions share).
The 3.12 twin is _opcodes_py312.py."""

from . import _bytecode as B

# 3.11 does not trace the instruction after an EXTENDED_ARG: the event for it
# comes at the first prefix (ceval.c, TARGET(EXTENDED_ARG)).
EVENT_AT_PREFIX = True

_TRUTH = {"POP_JUMP_FORWARD_IF_TRUE", "POP_JUMP_FORWARD_IF_FALSE", "POP_JUMP_BACKWARD_IF_TRUE",
          "POP_JUMP_BACKWARD_IF_FALSE", "JUMP_IF_TRUE_OR_POP", "JUMP_IF_FALSE_OR_POP", "UNARY_NOT"}
_USE_ONE = {"LIST_EXTEND", "SET_UPDATE", "DICT_UPDATE", "DICT_MERGE", "BEFORE_WITH", "GET_LEN",
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
    if ins.opname == "LOAD_ATTR":
        return (B.ATTR, 1, 1, 0, 0, ins.argval)
    if ins.opname == "LOAD_METHOD":
        return (B.METHOD, 1, 2, 0, 0, ins.argval)
    return B.describe_common(ins, code, lambda: _kw_names(instructions, k, code), _TRUTH, _USE_ONE, _USE_TWO)


def enable_opcode_events():
    pass
