// Frame access for CPython 3.12 (see frame.h).
//
// 3.12 runs trace functions through sys.monitoring and does not save the stack
// pointer before an instruction event (stacktop reads -1 there), so the depth
// is the compiler's static one for the instruction about to run. The stack's
// values themselves are in memory: only the pointer lives in a register.
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define Py_BUILD_CORE 1
#include <internal/pycore_frame.h>
#undef Py_BUILD_CORE

#include "capture/frame.h"

#if PY_VERSION_HEX < 0x030C0000 || PY_VERSION_HEX >= 0x030D0000
#error "frame_py312.c is for CPython 3.12"
#endif

PyObject** dv_frame_localsplus(PyFrameObject* frame) { return frame->f_frame->localsplus; }

int dv_frame_stack_depth(PyFrameObject* frame, int static_depth) {
  (void)frame;
  return static_depth;
}

PyObject* dv_frame_function(PyFrameObject* frame) { return frame->f_frame->f_funcobj; }

void dv_frame_trace_instructions(PyFrameObject* frame, int on) {
  frame->f_trace_lines = 0;
  frame->f_trace_opcodes = on ? 1 : 0;
}
