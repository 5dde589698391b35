"""The tracer's code tables kept on disk, so that a new process steps the code
that an earlier one stepped without decoding its bytecode again.

Decoding (_bytecode.code_table: dis over every instruction, a walk of the
stack depths) is most of what the first capture in a process adds to the
ones after it: BERT-base steps about 115 codes, 80 ms of decoding on
Python 3.12, whose legacy tracing slows the decoder itself while a capture
runs. A warm start (a new process on filled disk caches) is that first
capture.

A table is a pure function of its code object, of the interpreter's bytecode
format and of the files that decode it, so that is the key: SHA-256 of the
code object in marshal format 2 (no back references, so the same code gives
the same bytes in every process), the bytecode magic number and those
files' text. The tables live beside the kernels (DiskCache: checksummed,
published atomically), in the folder "code_tables"; DEEPVISOR_DISK_CACHE=0
turns them off with the other disk tiers.
"""

import hashlib
import importlib.util
import marshal
import os

from . import _C
from . import _bytecode as B

_EXTENSION = ".table"
_state = {}      # "dir": the store's folder ('' when off), "version": the key's prefix
_made = []       # (key, table) decoded in this process and not stored yet
counts = {"decoded": 0, "loaded": 0}  # tables made in this process / read from the disk


def _folder():
    if "dir" not in _state:
        root = _C.disk_cache_root()
        _state["dir"] = os.path.join(root, "code_tables") if root else ""
    return _state["dir"]


def _version():
    """What a table depends on besides its code: the bytecode format and the decoder's source."""
    if "version" not in _state:
        h = hashlib.sha256(importlib.util.MAGIC_NUMBER)
        for module in (B, B._opcodes):
            with open(module.__file__, "rb") as f:
                h.update(f.read())
        _state["version"] = h.digest()
    return _state["version"]


def _key(code):
    return hashlib.sha256(_version() + marshal.dumps(code, 2)).hexdigest()


def _well_formed(table):
    return (type(table) is tuple and len(table) == 3 and type(table[0]) is bytes and type(table[1]) is list
            and type(table[2]) is list)


def table_of(code):
    """B.code_table(code), from the disk when an earlier process decoded the same code."""
    folder = _folder()
    if not folder:
        return _decoded(code)
    try:
        key = _key(code)
    except ValueError:  # a constant marshal cannot write: decoded every time
        return _decoded(code)
    data = _C.disk_cache_load(folder, _EXTENSION, key)
    if data is not None:
        try:
            table = marshal.loads(data)
        except (ValueError, EOFError, TypeError):
            table = None
        if _well_formed(table):
            counts["loaded"] += 1
            return table
    table = _decoded(code)
    _made.append((key, table))
    return table


def _decoded(code):
    counts["decoded"] += 1
    return B.code_table(code)


def store_made():
    """Writes the tables decoded since the last call (after a capture, once the tracer stopped)."""
    folder = _folder()
    while _made:
        key, table = _made.pop()
        try:
            data = marshal.dumps(table)
        except ValueError:
            continue
        _C.disk_cache_store(folder, _EXTENSION, key, data)
