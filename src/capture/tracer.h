// The instruction stepper of the Python-state monitor.
//
// During a capture run the Tracer receives the thread's execution events
// (through sys.monitoring on Python 3.12, monitoring_events.h; else as its
// C-level trace function). It steps every frame of the program (except
// excluded code: deepvisor's own Python, logging...) instruction by
// instruction, and hands the instructions
// that read or write Python state to a Python monitor object, with the values
// they took from the stack before they ran and the values they left on it
// after. Which instructions matter, how many stack values they read and leave,
// and the stack depth at each instruction come from a per-code table that the
// monitor builds (python/deepvisor/_bytecode.py).
//
// Only instructions with a tracked operand (an object the monitor registered
// with track(): pre-existing state and the call's arguments) or marked
// `always` reach Python, so a run over fresh objects costs one table lookup
// an instruction.
#pragma once

#include <Python.h>
#include <frameobject.h>

#include <cstdint>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "capture/monitoring_events.h"

namespace dv::capture {

// Bits of the status passed to the monitor with each instruction.
enum InstructionStatus : int {
  kPythonRan = 1,  // Python frames ran while the instruction executed
  kFailed = 2,     // it raised
  kBefore = 8,     // reported before the instruction ran (no results)
};

// Bits of an instruction table entry's flags.
enum InstructionFlags : int {
  kAlways = 1,        // report even when no operand is tracked
  kReportBefore = 2,  // report before it runs, not after
  kCellOperand = 4,   // the operand is the cell in fast-locals slot `aux`
};

// The kind reported, at a frame's first instruction, for each cell the frame
// made for its own variables (python/deepvisor/_bytecode.py: NEW_CELL).
constexpr int kNewCellKind = 24;
// The kind reported when a frame of a summarized code starts (its code table
// is ("summarized", table)): the monitor records what the function reads at
// once and the frame's own instructions are not stepped (the frames it calls
// are), unless the monitor returns False: then the frame is stepped with the
// table (python/deepvisor/_monitor.py: SUMMARIES).
constexpr int kSummaryKind = 26;
// The kind reported at a stepped frame's first instruction when its function
// has defaults that are not plain constants (a dict, a list, an object): the
// parameters left to them hold objects that no instruction read
// (python/deepvisor/_bytecode.py: DEFAULTS).
constexpr int kDefaultsKind = 27;

class Tracer : public EventSink {
 public:
  // monitor: has code_table(code) and on_instruction(kind, arg, frame,
  // operands, results, status); null_marker stands for a NULL stack slot.
  Tracer(PyObject* monitor, PyObject* null_marker);
  ~Tracer() override;
  Tracer(const Tracer&) = delete;
  Tracer& operator=(const Tracer&) = delete;

  // Starts delivering the calling thread's events through sys.monitoring
  // (monitoring_events.h): false where it cannot (Python 3.11, no free tool
  // id), and then start() installs the legacy trace function instead.
  bool start_monitoring();
  void start();
  // Stops either.
  void stop();
  // Drops the references to the monitor (they form a cycle with it).
  void close();

  void track(PyObject* object) { tracked_.insert(object); }
  bool is_tracked(PyObject* object) const { return tracked_.count(object) != 0; }
  // Tracked, or a slice or tuple (to `depth` levels) holding a tracked object:
  // a size the program read (_shapes.SizeInt) reaches `lst[:n]` or
  // `f((b, n))` inside one.
  bool holds_tracked(PyObject* object, int depth) const;
  // A builtin method bound to a tracked object (d.get, super().__getattribute__
  // on Python 3.11): calling it reads or changes that object, though no
  // operand of the call is the object itself.
  bool binds_tracked(PyObject* object) const;

  // fn(*args, **kwargs) with its frames stepped though its caller is
  // excluded code (deepvisor's own: a compiled function called inside a
  // capture runs its Python as part of the capture). A new reference, or
  // nullptr with the error set.
  PyObject* call_stepped(PyObject* fn, PyObject* args, PyObject* kwargs);

  // The first error the monitor raised (its callbacks must never break the
  // program, so errors are kept here), or "".
  const std::string& error() const { return error_; }
  std::int64_t instructions_reported() const { return reported_; }

 private:
  struct Instr {
    std::uint8_t kind = 0;   // 0: not interesting
    std::uint8_t n_in = 0;   // stack values read before it runs (from the top)
    std::uint8_t n_out = 0;  // stack values it leaves (from the top)
    std::uint8_t flags = 0;
    int aux = 0;             // fast-locals slot of a cell operand
    PyObject* arg = nullptr; // passed to the monitor as is (borrowed from the table)
  };
  struct CodeInfo {
    PyObject* code = nullptr;  // strong
    PyObject* table = nullptr; // strong: keeps the args alive
    bool traced = false;
    bool summarized = false;  // reported once at its start; stepped only if the monitor declines
    bool monitored = false;   // its instruction events are on (sys.monitoring: per code, until stop())
    std::vector<Instr> instrs;         // indexed by code unit
    std::vector<std::int16_t> depths;  // static stack depth at each unit
    std::vector<int> cell_slots;       // fast-locals slots of the cells the frame makes
  };
  struct Pending {
    const Instr* instr = nullptr;
    std::vector<PyObject*> operands;  // strong
    std::int64_t calls_before = 0;
    bool failed = false;
    PyObject* exception = nullptr;  // strong, when failed
  };
  struct FrameState {
    PyFrameObject* frame = nullptr;
    CodeInfo* code = nullptr;  // nullptr: not traced
    Pending pending;
    bool has_pending = false;
    bool started = false;  // its first instruction event came (its own cells exist)
    bool summarized = false;  // the monitor summarized it: not stepped, but what it calls is
  };

  static int trace(PyObject* self, PyFrameObject* frame, int what, PyObject* arg);
  void on_call(PyFrameObject* frame) override;
  void on_return(PyFrameObject* frame) override;
  void on_exception(PyFrameObject* frame, PyObject* exception_type) override;
  void on_opcode(PyFrameObject* frame, int unit) override;
  // Asks sys.monitoring for instruction events in a code the tracer steps.
  void step_instructions(CodeInfo& info);
  CodeInfo* code_info(PyCodeObject* code);
  void read_table(CodeInfo& info, PyObject* table);
  void complete(FrameState& state, int unit);
  void begin(FrameState& state, const Instr& instr, int unit);
  void report_new_cells(FrameState& state);
  void report_defaults(FrameState& state);
  void report(const Instr& instr, PyFrameObject* frame, const std::vector<PyObject*>& operands,
              PyObject* results, int status);
  // Reports a summarized frame's start: false when the monitor declines (the frame is stepped).
  bool summarize(PyFrameObject* frame);
  // on_instruction's result (a new reference), or nullptr after an error (kept).
  PyObject* call_monitor(const Instr& instr, PyFrameObject* frame, const std::vector<PyObject*>& operands,
                         PyObject* results, int status);
  void clear_pending(FrameState& state);
  void keep_error();

  PyObject* monitor_;      // strong
  PyObject* on_instruction_ = nullptr;  // strong
  PyObject* code_table_ = nullptr;      // strong
  PyObject* null_marker_;  // strong
  PyObject* capsule_;      // strong: the trace function's argument
  std::unordered_map<PyObject*, CodeInfo> codes_;
  std::unordered_set<PyObject*> tracked_;
  std::vector<FrameState> frames_;
  int suspended_ = 0;        // excluded frames on the stack
  std::int64_t calls_ = 0;   // traced frames entered so far
  std::int64_t reported_ = 0;
  std::string error_;
  bool running_ = false;
  MonitoringEvents events_{*this};  // running while sys.monitoring delivers the events
  Py_tracefunc replaced_trace_ = nullptr;  // the thread's trace function before start(), restored by stop()
  PyObject* replaced_trace_arg_ = nullptr;  // strong
};

}  // namespace dv::capture
