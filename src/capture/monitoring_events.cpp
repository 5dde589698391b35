#include "capture/monitoring_events.h"

#include <vector>

#include "capture/saved_error.h"

namespace dv::capture {
namespace {

MonitoringEvents* from_capsule(PyObject* capsule) {
  return static_cast<MonitoringEvents*>(PyCapsule_GetPointer(capsule, "dv.MonitoringEvents"));
}

// METH_FASTCALL functions are stored in a PyMethodDef as PyCFunction.
PyCFunction as_method(PyObject* (*fn)(PyObject*, PyObject* const*, Py_ssize_t)) {
  return reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(fn));
}

PyMethodDef kFrameStarted = {"dv_frame_started", as_method(&MonitoringEvents::frame_started),
                             METH_FASTCALL, nullptr};
PyMethodDef kFrameEnded = {"dv_frame_ended", as_method(&MonitoringEvents::frame_ended),
                           METH_FASTCALL, nullptr};
PyMethodDef kRaised = {"dv_raised", as_method(&MonitoringEvents::raised), METH_FASTCALL,
                       nullptr};
PyMethodDef kInstruction = {"dv_instruction", as_method(&MonitoringEvents::instruction),
                            METH_FASTCALL, nullptr};

// The events the legacy trace function maps to a call, a return and an
// exception (CPython's Python/legacy_tracing.c), each with its callback.
struct Registration {
  const char* event;
  PyMethodDef* callback;
};
constexpr Registration kFrameEvents[] = {
    {"PY_START", &kFrameStarted}, {"PY_RESUME", &kFrameStarted}, {"PY_THROW", &kFrameStarted},
    {"PY_RETURN", &kFrameEnded},  {"PY_YIELD", &kFrameEnded},    {"PY_UNWIND", &kFrameEnded},
    {"RAISE", &kRaised},          {"STOP_ITERATION", &kRaised},
};

// The tool ids tried, in order: those sys.monitoring reserves for
// debuggers (0), coverage (1) and profilers (2) last.
constexpr int kToolIds[] = {4, 3, 5, 2, 1, 0};

}  // namespace

bool MonitoringEvents::supported() { return PY_VERSION_HEX >= 0x030C0000; }

MonitoringEvents::~MonitoringEvents() {
  if (running()) stop();
}

bool MonitoringEvents::call(const char* name, std::vector<PyObject*> args) {
  bool complete = true;
  for (PyObject* a : args) complete = complete && a != nullptr;
  PyObject* fn = complete ? PyObject_GetAttrString(monitoring_, name) : nullptr;
  PyObject* r = fn != nullptr ? PyObject_Vectorcall(fn, args.data(), args.size(), nullptr) : nullptr;
  Py_XDECREF(fn);
  for (PyObject* a : args) Py_XDECREF(a);
  if (r == nullptr) {
    PyErr_Clear();
    return false;
  }
  Py_DECREF(r);
  return true;
}

bool MonitoringEvents::claim_tool_id() {
  for (int id : kToolIds) {
    if (call("use_tool_id", {PyLong_FromLong(id), PyUnicode_FromString("deepvisor")})) {
      tool_ = id;
      return true;
    }
  }
  return false;
}

long MonitoringEvents::register_callback(PyObject* events, const char* event, PyMethodDef* callback) {
  PyObject* bit = PyObject_GetAttrString(events, event);
  PyObject* fn = bit != nullptr ? PyCFunction_New(callback, capsule_) : nullptr;
  if (fn == nullptr) {
    Py_XDECREF(bit);
    PyErr_Clear();
    return 0;
  }
  const long value = PyLong_AsLong(bit);
  callbacks_.push_back(fn);
  Py_INCREF(fn);  // one reference held here, one given to the call
  return call("register_callback", {PyLong_FromLong(tool_), bit, fn}) ? value : 0;
}

bool MonitoringEvents::start() {
  if (!supported() || running()) return false;
  SavedError saved;
  PyObject* sys = PyImport_ImportModule("sys");
  monitoring_ = sys != nullptr ? PyObject_GetAttrString(sys, "monitoring") : nullptr;
  Py_XDECREF(sys);
  if (monitoring_ == nullptr || !claim_tool_id()) {
    PyErr_Clear();
    Py_CLEAR(monitoring_);
    return false;
  }
  thread_ = PyThreadState_Get();
  capsule_ = PyCapsule_New(this, "dv.MonitoringEvents", nullptr);
  PyObject* events = capsule_ != nullptr ? PyObject_GetAttrString(monitoring_, "events") : nullptr;
  bool ok = events != nullptr;
  long mask = 0;
  for (const Registration& r : kFrameEvents) {
    const long bit = ok ? register_callback(events, r.event, r.callback) : 0;
    ok = bit != 0;
    mask |= bit;
  }
  instruction_bit_ = ok ? register_callback(events, "INSTRUCTION", &kInstruction) : 0;
  Py_XDECREF(events);
  if (instruction_bit_ == 0 || !call("set_events", {PyLong_FromLong(tool_), PyLong_FromLong(mask)})) {
    PyErr_Clear();
    stop();
    return false;
  }
  return true;
}

void MonitoringEvents::step(PyObject* code) {
  if (!running()) return;
  SavedError saved;
  Py_INCREF(code);
  if (call("set_local_events", {PyLong_FromLong(tool_), code, PyLong_FromLong(instruction_bit_)})) {
    Py_INCREF(code);
    stepped_.push_back(code);
  }
}

void MonitoringEvents::unregister_callbacks() {
  PyObject* events = PyObject_GetAttrString(monitoring_, "events");
  if (events == nullptr) {
    PyErr_Clear();
    return;
  }
  std::vector<const char*> names;
  for (const Registration& r : kFrameEvents) names.push_back(r.event);
  names.push_back("INSTRUCTION");
  for (const char* name : names) {
    PyObject* bit = PyObject_GetAttrString(events, name);
    if (bit == nullptr) {
      PyErr_Clear();
      continue;
    }
    Py_INCREF(Py_None);
    call("register_callback", {PyLong_FromLong(tool_), bit, Py_None});
  }
  Py_DECREF(events);
}

void MonitoringEvents::stop() {
  if (!running()) return;
  SavedError saved;
  call("set_events", {PyLong_FromLong(tool_), PyLong_FromLong(0)});
  for (PyObject* code : stepped_) call("set_local_events", {PyLong_FromLong(tool_), code, PyLong_FromLong(0)});
  stepped_.clear();  // each reference went to its call
  unregister_callbacks();
  call("free_tool_id", {PyLong_FromLong(tool_)});
  tool_ = -1;
  for (PyObject* c : callbacks_) Py_DECREF(c);
  callbacks_.clear();
  Py_CLEAR(capsule_);
  Py_CLEAR(monitoring_);
  thread_ = nullptr;
}

PyFrameObject* MonitoringEvents::own_frame() const {
  if (PyThreadState_Get() != thread_) return nullptr;
  return PyEval_GetFrame();
}

PyObject* MonitoringEvents::frame_started(PyObject* self, PyObject* const*, Py_ssize_t) {
  MonitoringEvents* m = from_capsule(self);
  if (PyFrameObject* frame = m != nullptr ? m->own_frame() : nullptr) m->sink_.on_call(frame);
  Py_RETURN_NONE;
}

PyObject* MonitoringEvents::frame_ended(PyObject* self, PyObject* const*, Py_ssize_t) {
  MonitoringEvents* m = from_capsule(self);
  if (PyFrameObject* frame = m != nullptr ? m->own_frame() : nullptr) m->sink_.on_return(frame);
  Py_RETURN_NONE;
}

PyObject* MonitoringEvents::raised(PyObject* self, PyObject* const* args, Py_ssize_t n) {
  MonitoringEvents* m = from_capsule(self);
  if (PyFrameObject* frame = m != nullptr ? m->own_frame() : nullptr)
    m->sink_.on_exception(frame, n >= 3 ? reinterpret_cast<PyObject*>(Py_TYPE(args[2])) : nullptr);
  Py_RETURN_NONE;
}

PyObject* MonitoringEvents::instruction(PyObject* self, PyObject* const* args, Py_ssize_t n) {
  MonitoringEvents* m = from_capsule(self);
  PyFrameObject* frame = m != nullptr ? m->own_frame() : nullptr;
  if (frame != nullptr && n >= 2) {
    const long offset = PyLong_AsLong(args[1]);  // in bytes
    if (offset >= 0) m->sink_.on_opcode(frame, static_cast<int>(offset / static_cast<long>(sizeof(_Py_CODEUNIT))));
    else PyErr_Clear();
  }
  Py_RETURN_NONE;
}

}  // namespace dv::capture
