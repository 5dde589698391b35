// Access to a frame's fast locals and value stack while it is stopped in a
// trace event. The layout of CPython's interpreter frame differs between
// versions, so each supported version has its own small C file
// (frame_py311.c, frame_py312.c); the build compiles the one that matches the
// Python it builds for. Nothing else in deepvisor reads interpreter internals.
#pragma once

#include <Python.h>
#include <frameobject.h>

#ifdef __cplusplus
extern "C" {
#endif

// The frame's fast locals, cells and value stack, in one array: locals and
// cells first (co_nlocalsplus of them), then the stack. Borrowed pointers.
PyObject** dv_frame_localsplus(PyFrameObject* frame);

// The number of values on the frame's stack during an opcode trace event.
// `static_depth` is the depth the compiler's stack effects give for the
// instruction about to run; versions that save the stack pointer before
// tracing return the saved one instead.
int dv_frame_stack_depth(PyFrameObject* frame, int static_depth);

// Asks for (or stops) per-instruction trace events in this frame, and no
// per-line events.
void dv_frame_trace_instructions(PyFrameObject* frame, int on);

// The function object the frame runs (a borrowed reference), or NULL.
PyObject* dv_frame_function(PyFrameObject* frame);

// Watching dicts and types for changes (CPython 3.12's dict and type
// watchers). `callback` runs (with the GIL) before a watched dict changes, or
// when a watched type is modified; `watched` is the dict or type. Returns 0 on
// success, -1 where the interpreter has no watchers (3.11): callers fall
// back to comparing version tags.
int dv_watch_init(void (*callback)(PyObject* watched));
int dv_watch_dict(PyObject* dict);
int dv_watch_type(PyObject* type);

#ifdef __cplusplus
}
#endif
