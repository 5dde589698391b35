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

static void (*watch_callback)(PyObject*) = NULL;
static int dict_watcher = -1;
static int type_watcher = -1;

static int on_dict_event(PyDict_WatchEvent event, PyObject* dict, PyObject* key, PyObject* new_value) {
  (void)event;
  (void)key;
  (void)new_value;
  if (watch_callback != NULL) watch_callback(dict);
  return 0;
}

static int on_type_event(PyTypeObject* type) {
  if (watch_callback != NULL) watch_callback((PyObject*)type);
  return 0;
}

int dv_watch_init(void (*callback)(PyObject* watched)) {
  watch_callback = callback;
  if (dict_watcher < 0) dict_watcher = PyDict_AddWatcher(on_dict_event);
  if (type_watcher < 0) type_watcher = PyType_AddWatcher(on_type_event);
  if (dict_watcher < 0 || type_watcher < 0) {
    PyErr_Clear();
    return -1;
  }
  return 0;
}

int dv_watch_dict(PyObject* dict) {
  if (dict_watcher < 0 || PyDict_Watch(dict_watcher, dict) < 0) {
    PyErr_Clear();
    return -1;
  }
  return 0;
}

int dv_watch_type(PyObject* type) {
  if (type_watcher < 0 || PyType_Watch(type_watcher, type) < 0) {
    PyErr_Clear();
    return -1;
  }
  return 0;
}
