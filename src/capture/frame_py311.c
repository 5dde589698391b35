// Frame access for CPython 3.11 (see frame.h).
//
// 3.11 saves the stack pointer into the interpreter frame before it calls a
// trace function (ceval.c, DO_TRACING), so the depth is read, not computed.
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define Py_BUILD_CORE 1
#include <internal/pycore_frame.h>
#undef Py_BUILD_CORE

#include "capture/frame.h"

#if PY_VERSION_HEX < 0x030B0000 || PY_VERSION_HEX >= 0x030C0000
#error "frame_py311.c is for CPython 3.11"
#endif

PyObject** dv_frame_localsplus(PyFrameObject* frame) { return frame->f_frame->localsplus; }

int dv_frame_stack_depth(PyFrameObject* frame, int static_depth) {
  (void)static_depth;
  _PyInterpreterFrame* f = frame->f_frame;
  return f->stacktop - f->f_code->co_nlocalsplus;
}

PyObject* dv_frame_function(PyFrameObject* frame) { return (PyObject*)frame->f_frame->f_func; }

void dv_frame_trace_instructions(PyFrameObject* frame, int on) {
  frame->f_trace_lines = 0;
  frame->f_trace_opcodes = on ? 1 : 0;
}

// 3.11 has no dict or type watchers.
int dv_watch_init(void (*callback)(PyObject* watched)) {
  (void)callback;
  return -1;
}
int dv_watch_dict(PyObject* dict) {
  (void)dict;
  return -1;
}
int dv_watch_type(PyObject* type) {
  (void)type;
  return -1;
}
