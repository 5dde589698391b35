#include "capture/tracer.h"

#include <stdexcept>

#include "capture/frame.h"
#include "capture/saved_error.h"

namespace dv::capture {

namespace {

Tracer* from_capsule(PyObject* capsule) { return static_cast<Tracer*>(PyCapsule_GetPointer(capsule, "dv.Tracer")); }

PyObject* new_tuple(const std::vector<PyObject*>& items) {
  PyObject* t = PyTuple_New(static_cast<Py_ssize_t>(items.size()));
  if (t == nullptr) return nullptr;
  for (std::size_t i = 0; i < items.size(); ++i) {
    Py_INCREF(items[i]);
    PyTuple_SET_ITEM(t, static_cast<Py_ssize_t>(i), items[i]);
  }
  return t;
}

long long as_long(PyObject* tuple, Py_ssize_t i) { return PyLong_AsLongLong(PyTuple_GET_ITEM(tuple, i)); }

}  // namespace

Tracer::Tracer(PyObject* monitor, PyObject* null_marker) : monitor_(monitor), null_marker_(null_marker) {
  Py_INCREF(monitor_);
  Py_INCREF(null_marker_);
  on_instruction_ = PyObject_GetAttrString(monitor_, "on_instruction");
  code_table_ = PyObject_GetAttrString(monitor_, "code_table");
  capsule_ = PyCapsule_New(this, "dv.Tracer", nullptr);
  if (on_instruction_ == nullptr || code_table_ == nullptr || capsule_ == nullptr)
    throw std::runtime_error("Tracer: the monitor needs on_instruction and code_table");
}

Tracer::~Tracer() {
  if (running_) stop();
  for (auto& f : frames_) clear_pending(f);
  for (auto& [code, info] : codes_) {
    Py_XDECREF(info.code);
    Py_XDECREF(info.table);
  }
  Py_XDECREF(on_instruction_);
  Py_XDECREF(code_table_);
  Py_XDECREF(capsule_);
  Py_XDECREF(null_marker_);
  Py_XDECREF(monitor_);
}

bool Tracer::start_monitoring() {
  if (on_instruction_ == nullptr) throw std::runtime_error("Tracer: closed");
  if (running_) return events_.running();
  frames_.clear();
  suspended_ = 0;
  if (!events_.start()) return false;
  running_ = true;
  return true;
}

void Tracer::start() {
  if (on_instruction_ == nullptr) throw std::runtime_error("Tracer: closed");
  if (running_) return;
  frames_.clear();
  suspended_ = 0;
  running_ = true;
  // The program's own trace function (a debugger, coverage) pauses for the
  // capture and comes back at stop().
  PyThreadState* thread = PyThreadState_Get();
  replaced_trace_ = thread->c_tracefunc;
  replaced_trace_arg_ = thread->c_traceobj;
  Py_XINCREF(replaced_trace_arg_);
  PyEval_SetTrace(&Tracer::trace, capsule_);
}

void Tracer::stop() {
  if (events_.running()) {
    events_.stop();
    for (auto& [code, info] : codes_) info.monitored = false;
  } else {
    PyEval_SetTrace(replaced_trace_, replaced_trace_arg_);
    replaced_trace_ = nullptr;
    Py_CLEAR(replaced_trace_arg_);
  }
  running_ = false;
  for (auto& f : frames_) clear_pending(f);
  frames_.clear();
}

void Tracer::close() {
  if (running_) stop();
  Py_CLEAR(on_instruction_);
  Py_CLEAR(code_table_);
  Py_CLEAR(monitor_);
}

int Tracer::trace(PyObject* self, PyFrameObject* frame, int what, PyObject* arg) {
  Tracer* t = from_capsule(self);
  if (t == nullptr) {
    PyErr_Clear();
    return 0;
  }
  switch (what) {
    case PyTrace_OPCODE: t->on_opcode(frame, PyFrame_GetLasti(frame) / static_cast<int>(sizeof(_Py_CODEUNIT))); break;
    case PyTrace_CALL: t->on_call(frame); break;
    case PyTrace_RETURN: t->on_return(frame); break;
    case PyTrace_EXCEPTION:  // arg: (type, value, traceback)
      t->on_exception(frame, arg != nullptr && PyTuple_Check(arg) && PyTuple_GET_SIZE(arg) > 0
                                 ? PyTuple_GET_ITEM(arg, 0) : nullptr);
      break;
    default: break;  // lines and C calls: nothing to do
  }
  return 0;
}

Tracer::CodeInfo* Tracer::code_info(PyCodeObject* code) {
  PyObject* key = reinterpret_cast<PyObject*>(code);
  auto it = codes_.find(key);
  if (it != codes_.end()) return &it->second;
  CodeInfo info;
  info.code = key;
  Py_INCREF(key);
  SavedError saved;
  // code_table(code) -> None (excluded), a table (read_table) or
  // ("summarized", a table).
  PyObject* table = PyObject_CallOneArg(code_table_, key);
  if (table == nullptr) {
    keep_error();
  } else if (PyTuple_Check(table) && PyTuple_GET_SIZE(table) == 2 && PyUnicode_Check(PyTuple_GET_ITEM(table, 0))) {
    // ("summarized", the table that steps it when the monitor declines the summary)
    info.table = table;
    info.summarized = true;
    read_table(info, PyTuple_GET_ITEM(table, 1));
  } else if (table != Py_None) {
    info.table = table;
    read_table(info, table);
  } else {
    Py_DECREF(table);
  }
  return &codes_.emplace(key, std::move(info)).first->second;
}

void Tracer::read_table(CodeInfo& info, PyObject* table) {
  // (depths: bytes of int16, entries: list of (unit, kind, n_in, n_out, flags, aux, arg), cell slots)
  PyObject* depths = PyTuple_GetItem(table, 0);
  PyObject* entries = PyTuple_GetItem(table, 1);
  PyObject* cells = PyTuple_GetItem(table, 2);
  if (cells != nullptr && PyList_Check(cells))
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(cells); ++i)
      info.cell_slots.push_back(static_cast<int>(PyLong_AsLong(PyList_GET_ITEM(cells, i))));
  if (depths == nullptr || entries == nullptr || !PyBytes_Check(depths) || !PyList_Check(entries)) {
    PyErr_Clear();
    error_ = error_.empty() ? "code_table returned a malformed table" : error_;
    return;
  }
  info.traced = true;
  const auto* d = reinterpret_cast<const std::int16_t*>(PyBytes_AS_STRING(depths));
  std::size_t units = static_cast<std::size_t>(PyBytes_GET_SIZE(depths)) / sizeof(std::int16_t);
  info.depths.assign(d, d + units);
  info.instrs.resize(units);
  for (Py_ssize_t i = 0; i < PyList_GET_SIZE(entries); ++i) {
    PyObject* e = PyList_GET_ITEM(entries, i);
    auto unit = static_cast<std::size_t>(as_long(e, 0));
    if (unit >= units) continue;
    Instr& in = info.instrs[unit];
    in.kind = static_cast<std::uint8_t>(as_long(e, 1));
    in.n_in = static_cast<std::uint8_t>(as_long(e, 2));
    in.n_out = static_cast<std::uint8_t>(as_long(e, 3));
    in.flags = static_cast<std::uint8_t>(as_long(e, 4));
    in.aux = static_cast<int>(as_long(e, 5));
    in.arg = PyTuple_GET_ITEM(e, 6);
  }
}

void Tracer::on_call(PyFrameObject* frame) {
  FrameState state;
  state.frame = frame;
  if (suspended_ == 0) {
    PyCodeObject* code = PyFrame_GetCode(frame);  // a new reference; the table keeps its own
    CodeInfo* info = code_info(code);
    Py_DECREF(code);
    if (info->summarized) {
      ++calls_;  // Python ran: the instruction that called it reports kPythonRan
      state.summarized = summarize(frame);
      if (!state.summarized && info->traced) state.code = info;  // declined: stepped
    } else if (info->traced) {
      state.code = info;
      ++calls_;
    }
  }
  // Excluded code: nothing it calls is stepped either. A summarized frame's
  // own instructions are not stepped; the frames it calls are.
  if (state.code == nullptr && !state.summarized) ++suspended_;
  if (events_.running()) {
    if (state.code != nullptr) step_instructions(*state.code);
  } else {
    dv_frame_trace_instructions(frame, state.code != nullptr);
  }
  frames_.push_back(std::move(state));
}

void Tracer::step_instructions(CodeInfo& info) {
  if (info.monitored) return;
  info.monitored = true;
  events_.step(info.code);
}

PyObject* Tracer::call_stepped(PyObject* fn, PyObject* args, PyObject* kwargs) {
  // The excluded frames below stay on the stack; the frames of this call
  // (pushed and popped in pairs) are stepped as if user code had called it.
  const int suspended = suspended_;
  suspended_ = 0;
  PyObject* result = PyObject_Call(fn, args, kwargs);
  suspended_ = suspended;
  return result;
}

void Tracer::on_return(PyFrameObject* frame) {
  while (!frames_.empty()) {
    FrameState& top = frames_.back();
    bool match = top.frame == frame;
    if (top.code == nullptr && !top.summarized) --suspended_;
    clear_pending(top);
    frames_.pop_back();
    if (match) break;
  }
}

void Tracer::on_exception(PyFrameObject* frame, PyObject* exception_type) {
  if (frames_.empty() || frames_.back().frame != frame) return;
  FrameState& state = frames_.back();
  if (!state.has_pending || state.pending.failed) return;
  state.pending.failed = true;
  state.pending.exception = exception_type;
  Py_XINCREF(exception_type);
}

void Tracer::on_opcode(PyFrameObject* frame, int unit) {
  if (frames_.empty() || frames_.back().frame != frame) return;
  FrameState& state = frames_.back();
  if (state.code == nullptr) return;
  if (!state.started) {
    state.started = true;
    if (!state.code->cell_slots.empty()) report_new_cells(state);
    report_defaults(state);
  }
  if (unit < 0 || static_cast<std::size_t>(unit) >= state.code->instrs.size()) return;
  if (state.has_pending) complete(state, unit);
  const Instr& instr = state.code->instrs[static_cast<std::size_t>(unit)];
  if (instr.kind != 0) begin(state, instr, unit);
}

namespace {

// None, a bool, a number or a string: a default no run can change.
bool plain_constant(PyObject* v) {
  return v == Py_None || PyBool_Check(v) || PyLong_CheckExact(v) || PyFloat_CheckExact(v) || PyUnicode_CheckExact(v) ||
         PyBytes_CheckExact(v);
}

bool has_state_defaults(PyObject* fn) {
  PyObject* defaults = PyFunction_GET_DEFAULTS(fn);
  if (defaults != nullptr && PyTuple_Check(defaults))
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(defaults); ++i)
      if (!plain_constant(PyTuple_GET_ITEM(defaults, i))) return true;
  PyObject* kwdefaults = PyFunction_GET_KW_DEFAULTS(fn);
  if (kwdefaults != nullptr && PyDict_Check(kwdefaults)) {
    Py_ssize_t pos = 0;
    PyObject* key = nullptr;
    PyObject* value = nullptr;
    while (PyDict_Next(kwdefaults, &pos, &key, &value))
      if (!plain_constant(value)) return true;
  }
  return false;
}

}  // namespace

void Tracer::report_defaults(FrameState& state) {
  PyObject* fn = dv_frame_function(state.frame);
  if (fn == nullptr || !PyFunction_Check(fn) || !has_state_defaults(fn)) return;
  Instr instr;
  instr.kind = kDefaultsKind;
  report(instr, state.frame, {fn}, Py_None, 0);
}

void Tracer::report_new_cells(FrameState& state) {
  Instr instr;
  instr.kind = kNewCellKind;
  PyObject** slots = dv_frame_localsplus(state.frame);
  for (int slot : state.code->cell_slots) {
    PyObject* cell = slots[slot];
    if (cell == nullptr || !PyCell_Check(cell)) continue;
    std::vector<PyObject*> one{cell};
    PyObject* results = new_tuple(one);
    if (results == nullptr) {
      keep_error();
      continue;
    }
    report(instr, state.frame, {}, results, 0);
    Py_DECREF(results);
  }
}

bool Tracer::binds_tracked(PyObject* object) const {
  if (PyCFunction_Check(object)) {
    PyObject* self = PyCFunction_GET_SELF(object);  // a module for a module's function
    return self != nullptr && !PyModule_Check(self) && is_tracked(self);
  }
  if (Py_IS_TYPE(object, &_PyMethodWrapper_Type)) {  // a slot of a builtin type, bound: its struct is private
    PyObject* self = PyObject_GetAttrString(object, "__self__");
    if (self == nullptr) {
      PyErr_Clear();
      return false;
    }
    const bool tracked = is_tracked(self);
    Py_DECREF(self);
    return tracked;
  }
  return false;
}

bool Tracer::holds_tracked(PyObject* object, int depth) const {
  if (is_tracked(object) || binds_tracked(object)) return true;
  if (depth == 0) return false;
  if (PySlice_Check(object)) {
    auto* slice = reinterpret_cast<PySliceObject*>(object);
    return holds_tracked(slice->start, depth - 1) || holds_tracked(slice->stop, depth - 1) ||
           holds_tracked(slice->step, depth - 1);
  }
  if (PyTuple_Check(object)) {
    const Py_ssize_t n = PyTuple_GET_SIZE(object);
    for (Py_ssize_t i = 0; i < n; ++i)
      if (holds_tracked(PyTuple_GET_ITEM(object, i), depth - 1)) return true;
  }
  return false;
}

void Tracer::begin(FrameState& state, const Instr& instr, int unit) {
  PyFrameObject* frame = state.frame;
  PyObject** slots = dv_frame_localsplus(frame);
  PyCodeObject* code = reinterpret_cast<PyCodeObject*>(state.code->code);
  int depth = dv_frame_stack_depth(frame, state.code->depths[static_cast<std::size_t>(unit)]);
  if (depth < instr.n_in) return;  // should not happen; never read below the stack
  PyObject** top = slots + code->co_nlocalsplus + depth;
  std::vector<PyObject*> operands;
  operands.reserve(instr.n_in + 1);
  bool tracked = (instr.flags & kAlways) != 0;
  for (int i = instr.n_in; i > 0; --i) {
    PyObject* v = top[-i];
    if (v == nullptr) v = null_marker_;
    tracked = tracked || holds_tracked(v, 2);
    operands.push_back(v);
  }
  if (instr.flags & kCellOperand) {
    PyObject* cell = slots[instr.aux];
    operands.push_back(cell != nullptr ? cell : null_marker_);
    PyObject* fn = dv_frame_function(frame);
    operands.push_back(fn != nullptr ? fn : null_marker_);
  }
  if (!tracked) return;
  if (instr.flags & kReportBefore) {
    PyObject* none = Py_None;
    Py_INCREF(none);
    report(instr, frame, operands, none, kBefore);
    Py_DECREF(none);
    return;
  }
  for (PyObject* v : operands) Py_INCREF(v);
  state.pending.instr = &instr;
  state.pending.operands = std::move(operands);
  state.pending.calls_before = calls_;
  state.pending.failed = false;
  state.has_pending = true;
}

void Tracer::complete(FrameState& state, int unit) {
  Pending& p = state.pending;
  const Instr& instr = *p.instr;
  int status = calls_ != p.calls_before ? kPythonRan : 0;
  PyObject* results = nullptr;
  if (p.failed) {
    status |= kFailed;
    results = p.exception != nullptr ? p.exception : Py_None;
    Py_INCREF(results);
  } else {
    PyObject** slots = dv_frame_localsplus(state.frame);
    PyCodeObject* code = reinterpret_cast<PyCodeObject*>(state.code->code);
    int depth = dv_frame_stack_depth(state.frame, state.code->depths[static_cast<std::size_t>(unit)]);
    int n = depth >= instr.n_out ? instr.n_out : 0;
    std::vector<PyObject*> out;
    PyObject** top = slots + code->co_nlocalsplus + depth;
    for (int i = n; i > 0; --i) out.push_back(top[-i] != nullptr ? top[-i] : null_marker_);
    results = new_tuple(out);
  }
  if (results != nullptr) {
    report(instr, state.frame, p.operands, results, status);
    Py_DECREF(results);
  }
  clear_pending(state);
}

void Tracer::report(const Instr& instr, PyFrameObject* frame, const std::vector<PyObject*>& operands,
                    PyObject* results, int status) {
  Py_XDECREF(call_monitor(instr, frame, operands, results, status));
}

bool Tracer::summarize(PyFrameObject* frame) {
  Instr summary;
  summary.kind = kSummaryKind;
  PyObject* r = call_monitor(summary, frame, {}, Py_None, 0);
  const bool declined = r == Py_False;
  Py_XDECREF(r);
  return !declined;
}

PyObject* Tracer::call_monitor(const Instr& instr, PyFrameObject* frame, const std::vector<PyObject*>& operands,
                               PyObject* results, int status) {
  SavedError saved;
  ++reported_;
  PyObject* ops = new_tuple(operands);
  PyObject* kind = PyLong_FromLong(instr.kind);
  PyObject* st = PyLong_FromLong(status);
  PyObject* arg = instr.arg != nullptr ? instr.arg : Py_None;
  PyObject* r = nullptr;
  if (ops == nullptr || kind == nullptr || st == nullptr) {
    keep_error();
  } else {
    PyObject* args[] = {kind, arg, reinterpret_cast<PyObject*>(frame), ops, results, st};
    r = PyObject_Vectorcall(on_instruction_, args, 6, nullptr);
    if (r == nullptr) keep_error();
  }
  Py_XDECREF(ops);
  Py_XDECREF(kind);
  Py_XDECREF(st);
  return r;
}

void Tracer::clear_pending(FrameState& state) {
  if (!state.has_pending) return;
  for (PyObject* v : state.pending.operands) Py_DECREF(v);
  state.pending.operands.clear();
  Py_CLEAR(state.pending.exception);
  state.pending.failed = false;
  state.has_pending = false;
}

void Tracer::keep_error() {
  PyObject *type, *value, *traceback;
  PyErr_Fetch(&type, &value, &traceback);
  if (error_.empty()) {
    error_ = "monitor error";
    if (value != nullptr) {
      PyObject* s = PyObject_Str(value);
      if (s != nullptr) {
        const char* c = PyUnicode_AsUTF8(s);
        if (c != nullptr) error_ = std::string(type ? reinterpret_cast<PyTypeObject*>(type)->tp_name : "") + ": " + c;
        Py_DECREF(s);
      }
    }
  }
  PyErr_Clear();
  Py_XDECREF(type);
  Py_XDECREF(value);
  Py_XDECREF(traceback);
}

}  // namespace dv::capture
