// A capture's execution events through sys.monitoring (PEP 669, CPython 3.12).
//
// The tracer needs, on the capturing thread, every Python frame's start and
// end, the exceptions raised in it, and an event before each instruction of
// the frames it steps. CPython 3.12 builds its legacy trace function on
// sys.monitoring, but once any frame asks for instruction events the legacy
// layer turns on instruction, line and jump events in every code object, so
// all Python that runs during a capture (torch's, and the monitor's own
// handlers) runs instrumented at each instruction. Here the frame events are
// global and instruction events are set per code object, only in the codes
// the tracer steps (step()).
//
// Events come from every thread while the tool is active: those of other
// threads are ignored. Each active source holds one of sys.monitoring's six
// tool ids; start() returns false when none is free, and the tracer then uses
// the legacy trace function.
#pragma once

#include <Python.h>
#include <frameobject.h>

#include <vector>

namespace dv::capture {

// What the events are delivered to (the tracer).
class EventSink {
 public:
  virtual ~EventSink() = default;
  virtual void on_call(PyFrameObject* frame) = 0;
  virtual void on_return(PyFrameObject* frame) = 0;
  virtual void on_exception(PyFrameObject* frame, PyObject* exception_type) = 0;
  // Before the instruction at code unit `unit` of the frame runs.
  virtual void on_opcode(PyFrameObject* frame, int unit) = 0;
};

class MonitoringEvents {
 public:
  // True where this Python has sys.monitoring (3.12 and later).
  static bool supported();

  explicit MonitoringEvents(EventSink& sink) : sink_(sink) {}
  ~MonitoringEvents();
  MonitoringEvents(const MonitoringEvents&) = delete;
  MonitoringEvents& operator=(const MonitoringEvents&) = delete;

  // Claims a tool id and turns the frame events on for the calling thread;
  // false (nothing changed, no error set) when no tool id is free or the
  // interpreter refuses.
  bool start();
  // Instruction events in every frame of this code until stop().
  void step(PyObject* code);
  // Turns every event off, forgets the codes stepped and frees the tool id.
  void stop();
  bool running() const { return tool_ >= 0; }

  // The callbacks registered with sys.monitoring (self is this object's capsule).
  static PyObject* frame_started(PyObject* self, PyObject* const* args, Py_ssize_t n);
  static PyObject* frame_ended(PyObject* self, PyObject* const* args, Py_ssize_t n);
  static PyObject* raised(PyObject* self, PyObject* const* args, Py_ssize_t n);
  static PyObject* instruction(PyObject* self, PyObject* const* args, Py_ssize_t n);

 private:
  // The frame of the current event, when it comes from the capturing thread.
  PyFrameObject* own_frame() const;
  // sys.monitoring.<name>(args...), each argument a new reference it
  // consumes: false on error (cleared).
  bool call(const char* name, std::vector<PyObject*> args);
  bool claim_tool_id();
  // Registers `callback` for events.<event>: the event's bit, or 0 on failure.
  long register_callback(PyObject* events, const char* event, PyMethodDef* callback);
  void unregister_callbacks();

  EventSink& sink_;
  PyObject* monitoring_ = nullptr;  // strong: sys.monitoring
  PyObject* capsule_ = nullptr;     // strong: the callbacks' self
  std::vector<PyObject*> callbacks_;  // strong
  std::vector<PyObject*> stepped_;    // strong: codes given instruction events
  PyThreadState* thread_ = nullptr;
  long instruction_bit_ = 0;  // sys.monitoring.events.INSTRUCTION
  int tool_ = -1;
};

}  // namespace dv::capture
