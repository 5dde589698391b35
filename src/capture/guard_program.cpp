#include "capture/guard_program.h"

#include <ATen/Context.h>
#include <ATen/PythonTorchFunctionTLS.h>
#include <ATen/autocast_mode.h>
#include <ATen/core/grad_mode.h>
#include <c10/core/DefaultDtype.h>
#include <c10/core/InferenceMode.h>
#include <torch/csrc/Device.h>
#include <torch/csrc/PyInterpreter.h>
#include <torch/csrc/autograd/python_variable.h>

#include <algorithm>
#include <cstring>
#include <iterator>
#include <unordered_map>

#include "capture/frame.h"

namespace dv::capture {

namespace {

bool is_aligned16(const at::Tensor& t) { return reinterpret_cast<std::uintptr_t>(t.data_ptr()) % 16 == 0; }

std::string shape_text(c10::IntArrayRef v) {
  std::string s = "[";
  for (std::size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
  return s + "]";
}

// `value` is a method bound to `self`: a Python method of function `func`, or
// a builtin method (obj.__reduce_ex__: a new object on every read) of the
// same C function as `func`, a builtin method read at the capture.
bool is_bound_method(PyObject* value, PyObject* func, PyObject* self) {
  if (PyMethod_Check(value)) return PyMethod_GET_FUNCTION(value) == func && PyMethod_GET_SELF(value) == self;
  return PyCFunction_Check(value) && PyCFunction_Check(func) && PyCFunction_GET_SELF(value) == self &&
         PyCFunction_GET_FUNCTION(value) == PyCFunction_GET_FUNCTION(func) &&
         PyCFunction_GET_FLAGS(value) == PyCFunction_GET_FLAGS(func);
}

// Equal values of exactly the same type; floats compared bit for bit (so NaN
// equals NaN and -0.0 differs from 0.0), tuples item by item.
bool values_equal(PyObject* a, PyObject* b) {
  if (a == b) return true;
  if (Py_TYPE(a) != Py_TYPE(b)) return false;
  if (PyFloat_CheckExact(a)) {
    double x = PyFloat_AS_DOUBLE(a), y = PyFloat_AS_DOUBLE(b);
    return std::memcmp(&x, &y, sizeof x) == 0;
  }
  if (PyTuple_Check(a)) {
    Py_ssize_t n = PyTuple_GET_SIZE(a);
    if (n != PyTuple_GET_SIZE(b)) return false;
    for (Py_ssize_t i = 0; i < n; ++i)
      if (!values_equal(PyTuple_GET_ITEM(a, i), PyTuple_GET_ITEM(b, i))) return false;
    return true;
  }
  int r = PyObject_RichCompareBool(a, b, Py_EQ);
  if (r < 0) {
    PyErr_Clear();
    return false;
  }
  return r == 1;
}

// The item stored under `key` (a new reference, or null with an error set).
// In a dict, whatever its type, the stored one: a subclass's __getitem__ may
// run Python that makes a new object each time (transformers' ACT2FN makes
// the activation module it names), and the monitor records the items the
// program read without running Python, so a guard that ran it would never
// hold (and would run the program's code on every call).
PyObject* stored_item(PyObject* from, PyObject* key) {
  if (!PyDict_Check(from)) return PyObject_GetItem(from, key);
  PyObject* v = PyDict_GetItemWithError(from, key);
  if (v == nullptr) {
    if (!PyErr_Occurred()) PyErr_SetObject(PyExc_KeyError, key);
    return nullptr;
  }
  Py_INCREF(v);
  return v;
}

PyObject* as_bool(int r) {
  if (r < 0) return nullptr;
  PyObject* b = r ? Py_True : Py_False;
  Py_INCREF(b);
  return b;
}

std::string current_error() {
  PyObject *type, *value, *traceback;
  PyErr_Fetch(&type, &value, &traceback);
  std::string out = type ? reinterpret_cast<PyTypeObject*>(type)->tp_name : "error";
  Py_XDECREF(type);
  Py_XDECREF(value);
  Py_XDECREF(traceback);
  return out;
}

#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#endif
std::uint64_t dict_version(PyObject* dict) { return reinterpret_cast<PyDictObject*>(dict)->ma_version_tag; }
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

// A type's version tag, assigned first if it has none yet (a lookup through
// the method cache assigns one). 0 if the type cannot have one.
unsigned int type_version(PyTypeObject* type) {
  if (type->tp_version_tag == 0) {
    static PyObject* name = PyUnicode_InternFromString("__dv_version__");
    _PyType_Lookup(type, name);
  }
  return type->tp_version_tag;
}

// Watched dicts and types -> the programs that skip checks while they are
// unchanged. Touched only with the GIL held.
std::unordered_map<PyObject*, std::vector<GuardProgram*>>& watchers() {
  static auto* map = new std::unordered_map<PyObject*, std::vector<GuardProgram*>>();
  return *map;
}

bool watching_available() {
  static const bool ok = dv_watch_init(&GuardProgram::on_change) == 0;
  return ok;
}

}  // namespace

void GuardProgram::on_change(PyObject* watched) {
  auto& map = watchers();
  auto it = map.find(watched);
  if (it == map.end()) return;
  for (GuardProgram* p : it->second) p->dirty_ = true;
}

void GuardProgram::watch(Group& g, PyObject* object) {
  if (!watching_available() || g.watched || !g.versioned) return;
  std::vector<PyObject*> targets;
  if (PyDict_Check(object)) {
    targets.push_back(object);
  } else if (g.dict != nullptr && g.type_version != 0) {
    targets.push_back(g.dict);
    targets.push_back(reinterpret_cast<PyObject*>(g.type));
  } else {
    return;
  }
  for (PyObject* t : targets) {
    int rc = PyType_Check(t) ? dv_watch_type(t) : dv_watch_dict(t);
    if (rc != 0) return;
  }
  for (PyObject* t : targets) {
    auto& programs = watchers()[t];
    if (std::find(programs.begin(), programs.end(), this) == programs.end()) programs.push_back(this);
    watching_.push_back(t);
  }
  g.watched = true;
  unwatched_valid_ = false;
}

TensorGuard TensorGuard::of(const at::Tensor& t) {
  return {t.scalar_type(), t.device(), t.sizes().vec(), t.strides().vec(), is_aligned16(t), t.requires_grad()};
}

namespace {
// Small int arrays compared inline (memcmp through the PLT cost more than the
// comparison for the 1-4 sizes of most tensors). An expected kAnyInt matches
// any value: a symbolic size (or a stride that depends on one), which the
// plan's shape guards check instead.
inline bool same_ints(c10::IntArrayRef a, const std::vector<std::int64_t>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < b.size(); ++i)
    if (a[i] != b[i] && b[i] != TensorGuard::kAnyInt) return false;
  return true;
}
}  // namespace

bool TensorGuard::matches(const at::Tensor& t) const {
  if (!t.defined()) return false;
  const c10::TensorImpl* impl = t.unsafeGetTensorImpl();
  if (impl->dtype() != c10::scalarTypeToTypeMeta(dtype) || impl->device() != device) return false;
  if (!same_ints(impl->sizes(), sizes) || !same_ints(impl->strides(), strides)) return false;
  if (aligned16) {
    const c10::Storage& storage = impl->unsafe_storage();
    if (!storage) return false;
    auto address = reinterpret_cast<std::uintptr_t>(storage.unsafeGetStorageImpl()->data_ptr().get()) +
                   static_cast<std::uintptr_t>(impl->storage_offset()) * impl->itemsize();
    if (address % 16 != 0) return false;
  }
  return !check_requires_grad || impl->requires_grad() == requires_grad;
}

std::string TensorGuard::mismatch(const at::Tensor& t) const {
  if (!t.defined()) return "undefined tensor";
  if (t.scalar_type() != dtype) return std::string("dtype ") + c10::toString(t.scalar_type());
  if (t.device() != device) return "device " + t.device().str();
  if (!same_ints(t.sizes(), sizes)) return "sizes " + shape_text(t.sizes()) + " vs " + shape_text(sizes);
  if (!same_ints(t.strides(), strides))
    return "strides " + shape_text(t.strides()) + " vs " + shape_text(strides);
  if (aligned16 && !is_aligned16(t)) return "data pointer not 16-byte aligned";
  if (check_requires_grad && t.requires_grad() != requires_grad) return "requires_grad";
  return "";
}

namespace {

struct Fp32Setting {
  at::Float32Backend backend;
  at::Float32Op op;
  const char* flag;  // what a user sets it with
};

// Every (backend, op) pair ATen keeps a float32 precision for.
constexpr Fp32Setting kFp32Settings[] = {
    {at::Float32Backend::GENERIC, at::Float32Op::ALL, "torch.backends.fp32_precision"},
    {at::Float32Backend::CUDA, at::Float32Op::ALL, "torch.backends.cudnn.fp32_precision"},
    {at::Float32Backend::CUDA, at::Float32Op::CONV, "torch.backends.cudnn.conv.fp32_precision (allow_tf32)"},
    {at::Float32Backend::CUDA, at::Float32Op::RNN, "torch.backends.cudnn.rnn.fp32_precision (allow_tf32)"},
    {at::Float32Backend::CUDA, at::Float32Op::MATMUL,
     "torch.backends.cuda.matmul.fp32_precision (allow_tf32, set_float32_matmul_precision)"},
    {at::Float32Backend::MKLDNN, at::Float32Op::ALL, "torch.backends.mkldnn.fp32_precision"},
    {at::Float32Backend::MKLDNN, at::Float32Op::CONV, "torch.backends.mkldnn.conv.fp32_precision"},
    {at::Float32Backend::MKLDNN, at::Float32Op::RNN, "torch.backends.mkldnn.rnn.fp32_precision"},
    {at::Float32Backend::MKLDNN, at::Float32Op::MATMUL,
     "torch.backends.mkldnn.matmul.fp32_precision (set_float32_matmul_precision)"},
};
static_assert(std::size(kFp32Settings) == std::tuple_size_v<decltype(GlobalState::fp32_precision)>);

// The device of the topmost DeviceContext among the `modes` torch function
// modes on the stack (torch.set_default_device, `with torch.device(...)`),
// if there is one. (torch.utils._device.CURRENT_DEVICE would not do: the
// context manager of torch.device pushes its mode without setting it.)
std::optional<c10::Device> default_device_of(std::int64_t modes) {
  if (modes == 0) return std::nullopt;
  static PyObject* device_context = nullptr;  // torch.utils._device.DeviceContext, held for the process
  static PyObject* device_name = PyUnicode_InternFromString("device");
  if (device_context == nullptr) {
    PyObject* module = PyImport_ImportModule("torch.utils._device");
    device_context = module != nullptr ? PyObject_GetAttrString(module, "DeviceContext") : nullptr;
    Py_XDECREF(module);
    if (device_context == nullptr || !PyType_Check(device_context)) {  // (torch always has it)
      PyErr_Clear();
      Py_CLEAR(device_context);
      return std::nullopt;
    }
  }
  for (std::int64_t i = modes - 1; i >= 0; --i) {
    PyObject* mode = at::impl::PythonTorchFunctionTLS::get_stack_at(i)->ptr(getPyInterpreter());
    if (!PyObject_TypeCheck(mode, reinterpret_cast<PyTypeObject*>(device_context))) continue;
    PyObject* device = PyObject_GetAttr(mode, device_name);
    std::optional<c10::Device> found;
    if (device != nullptr && THPDevice_Check(device)) found = reinterpret_cast<THPDevice*>(device)->device;
    if (device == nullptr) PyErr_Clear();
    Py_XDECREF(device);
    return found;
  }
  return std::nullopt;
}

// The attention backends allowed, a bit each (GlobalState::sdp_backends).
std::uint8_t sdp_backends_of(const at::Context& ctx) {
  const bool allowed[] = {ctx.userEnabledMathSDP(),         ctx.userEnabledFlashSDP(),
                          ctx.userEnabledFA3SDP(),          ctx.userEnabledMemEfficientSDP(),
                          ctx.userEnabledCuDNNSDP(),        ctx.userEnabledOverrideableSDP(),
                          ctx.allowFP16BF16ReductionMathSDP()};
  std::uint8_t bits = 0;
  for (std::size_t i = 0; i < std::size(allowed); ++i)
    if (allowed[i]) bits |= static_cast<std::uint8_t>(1u << i);
  return bits;
}

}  // namespace

GlobalState GlobalState::now() {
  GlobalState s;
  s.grad_enabled = at::GradMode::is_enabled();
  s.inference_mode = c10::InferenceMode::is_enabled();
  s.default_dtype = c10::get_default_dtype_as_scalartype();
  s.deterministic = at::globalContext().deterministicAlgorithms();
  s.autocast_cpu = at::autocast::is_autocast_enabled(at::kCPU);
  s.autocast_cuda = at::autocast::is_autocast_enabled(at::kCUDA);
  s.autocast_cpu_dtype = at::autocast::get_autocast_dtype(at::kCPU);
  s.autocast_cuda_dtype = at::autocast::get_autocast_dtype(at::kCUDA);
  at::Context& ctx = at::globalContext();
  for (std::size_t i = 0; i < std::size(kFp32Settings); ++i)
    s.fp32_precision[i] =
        static_cast<std::uint8_t>(ctx.float32Precision(kFp32Settings[i].backend, kFp32Settings[i].op));
  s.cublas_f16_reduction = static_cast<std::uint8_t>(ctx.allowFP16ReductionCuBLAS());
  s.cublas_bf16_reduction = static_cast<std::uint8_t>(ctx.allowBF16ReductionCuBLAS());
  s.cublas_f16_accumulation = ctx.allowFP16AccumulationCuBLAS();
  s.cudnn_deterministic = ctx.deterministicCuDNN();
  s.cudnn_enabled = ctx.userEnabledCuDNN();
  s.cudnn_benchmark = ctx.benchmarkCuDNN();
  s.mkldnn_enabled = ctx.userEnabledMkldnn();
  s.sdp_backends = sdp_backends_of(ctx);
  const auto order = ctx.sDPPriorityOrder();
  static_assert(std::tuple_size_v<decltype(order)> == std::tuple_size_v<decltype(s.sdp_priority)>);
  for (std::size_t i = 0; i < order.size(); ++i) s.sdp_priority[i] = static_cast<std::int8_t>(order[i]);
  s.torch_function_modes = at::impl::PythonTorchFunctionTLS::stack_len();
  s.default_device = default_device_of(s.torch_function_modes);
  return s;
}

std::string GlobalState::difference(const GlobalState& o) const {
  if (grad_enabled != o.grad_enabled) return "torch.is_grad_enabled()";
  if (inference_mode != o.inference_mode) return "torch.is_inference_mode_enabled()";
  if (default_dtype != o.default_dtype) return "torch.get_default_dtype()";
  if (deterministic != o.deterministic) return "torch.are_deterministic_algorithms_enabled()";
  if (autocast_cpu != o.autocast_cpu || autocast_cpu_dtype != o.autocast_cpu_dtype) return "autocast (cpu)";
  if (autocast_cuda != o.autocast_cuda || autocast_cuda_dtype != o.autocast_cuda_dtype) return "autocast (cuda)";
  for (std::size_t i = 0; i < std::size(kFp32Settings); ++i)
    if (fp32_precision[i] != o.fp32_precision[i]) return kFp32Settings[i].flag;
  if (cublas_f16_reduction != o.cublas_f16_reduction)
    return "torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction";
  if (cublas_bf16_reduction != o.cublas_bf16_reduction)
    return "torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction";
  if (cublas_f16_accumulation != o.cublas_f16_accumulation) return "torch.backends.cuda.matmul.allow_fp16_accumulation";
  if (cudnn_deterministic != o.cudnn_deterministic) return "torch.backends.cudnn.deterministic";
  if (cudnn_enabled != o.cudnn_enabled) return "torch.backends.cudnn.enabled";
  if (cudnn_benchmark != o.cudnn_benchmark) return "torch.backends.cudnn.benchmark";
  if (mkldnn_enabled != o.mkldnn_enabled) return "torch.backends.mkldnn.enabled";
  if (sdp_backends != o.sdp_backends || sdp_priority != o.sdp_priority)
    return "the scaled_dot_product_attention backends (torch.nn.attention.sdpa_kernel, torch.backends.cuda.enable_*_sdp)";
  if (default_device != o.default_device) return "the default device (torch.set_default_device, torch.device(...))";
  if (torch_function_modes != o.torch_function_modes) return "the torch function modes active";
  return "";
}

GuardProgram::GuardProgram() = default;

GuardProgram::~GuardProgram() {
  for (auto& l : loads_) Py_XDECREF(l.key);
  for (auto& c : checks_) {
    Py_XDECREF(c.key);
    Py_XDECREF(c.expected);
  }
  for (PyObject* p : pinned_) Py_XDECREF(p);
  for (PyObject* k : keywords_) Py_XDECREF(k);
  auto& map = watchers();
  for (PyObject* t : watching_) {
    auto it = map.find(t);
    if (it == map.end()) continue;
    auto& v = it->second;
    v.erase(std::remove(v.begin(), v.end(), this), v.end());
    if (v.empty()) map.erase(it);
  }
}

void GuardProgram::set_arguments(int positional, std::vector<std::string> keywords) {
  positional_ = positional;
  for (PyObject* k : keywords_) Py_XDECREF(k);
  keywords_.clear();
  for (const auto& k : keywords) keywords_.push_back(PyUnicode_InternFromString(k.c_str()));
}

int GuardProgram::add_load(Load load) {
  Py_XINCREF(load.key);
  loads_.push_back(load);
  load_register_.push_back(num_registers_);
  pinned_.push_back(nullptr);
  steps_.push_back({Step::Kind::Load, static_cast<int>(loads_.size()) - 1});
  return num_registers_++;
}

int GuardProgram::load_arg(int index) { return add_load({Load::Kind::Arg, index}); }

int GuardProgram::load_kwarg(PyObject* name) { return add_load({Load::Kind::Kwarg, 0, -1, Accessor::Self, name}); }

int GuardProgram::load_pinned(PyObject* object) {
  Py_INCREF(object);
  pinned_.push_back(object);
  return num_registers_++;
}

int GuardProgram::load_access(int from, Accessor accessor, PyObject* key) {
  return add_load({Load::Kind::Access, 0, from, accessor, key});
}

void GuardProgram::begin_group(int reg, bool versioned) {
  Group g;
  g.reg = reg;
  g.versioned = versioned;
  g.first_check = g.end_check = static_cast<int>(checks_.size());
  groups_.push_back(g);
  open_group_ = static_cast<int>(groups_.size()) - 1;
}

void GuardProgram::end_group() {
  if (open_group_ < 0) return;
  groups_[open_group_].end_check = static_cast<int>(checks_.size());
  open_group_ = -1;
}

void GuardProgram::add_check(int reg, Accessor accessor, PyObject* key, Expect expect, PyObject* expected, int other,
                             std::string description) {
  Py_XINCREF(key);
  Py_XINCREF(expected);
  checks_.push_back({reg, accessor, key, expect, expected, other, std::move(description)});
  if (open_group_ < 0) steps_.push_back({Step::Kind::Check, static_cast<int>(checks_.size()) - 1});
}

void GuardProgram::add_tensor(int reg, int input, TensorGuard guard, std::string description) {
  if (pinned_[reg] == nullptr) argument_inputs_.push_back(input);
  at::Tensor pinned;
  if (pinned_[reg] != nullptr && THPVariable_Check(pinned_[reg])) pinned = THPVariable_Unpack(pinned_[reg]);
  const bool is_pinned = pinned.defined();
  tensors_.push_back({reg, input, std::move(guard), std::move(description), std::move(pinned)});
  // Pinned tensors (parameters, buffers) are checked in a loop of their own,
  // after the arguments; argument tensors where their load puts them.
  if (is_pinned) pinned_tensors_.push_back(static_cast<int>(tensors_.size()) - 1);
  else steps_.push_back({Step::Kind::Tensor, static_cast<int>(tensors_.size()) - 1});
  num_inputs_ = std::max(num_inputs_, input + 1);
}

void GuardProgram::release_arguments(std::vector<at::Tensor>& inputs) const {
  for (int k : argument_inputs_)
    if (k < static_cast<int>(inputs.size())) inputs[k].reset();
}

void GuardProgram::add_distinct_inputs(std::vector<int> inputs) { distinct_ = std::move(inputs); }

bool GuardProgram::check(PyObject* args, PyObject* kwargs, std::vector<at::Tensor>& inputs) {
  return run(args, kwargs, &inputs, nullptr);
}

std::string GuardProgram::explain_failure(PyObject* args, PyObject* kwargs) {
  std::string why;
  std::vector<at::Tensor> inputs;
  if (run(args, kwargs, &inputs, &why)) return "";
  return why.empty() ? "guard failed" : why;
}

bool GuardProgram::load(int index, PyObject* args, PyObject* kwargs, std::vector<PyObject*>& regs,
                        std::vector<PyObject*>& owned) {
  const Load& l = loads_[index];
  PyObject* v = nullptr;
  switch (l.kind) {
    case Load::Kind::Arg:
      if (args == nullptr || l.index >= PyTuple_GET_SIZE(args)) return false;
      v = PyTuple_GET_ITEM(args, l.index);
      break;
    case Load::Kind::Kwarg:
      if (kwargs == nullptr || kwargs == Py_None) return false;
      v = PyDict_GetItemWithError(kwargs, l.key);
      if (v == nullptr) {
        PyErr_Clear();
        return false;
      }
      break;
    case Load::Kind::Pinned: return true;
    case Load::Kind::Access: {
      PyObject* from = regs[l.from];
      if (from == nullptr) return false;
      if (l.accessor == Accessor::Attr) v = PyObject_GetAttr(from, l.key);
      else if (l.accessor == Accessor::Item) v = stored_item(from, l.key);
      else if (l.accessor == Accessor::Cell) {
        v = PyCell_Check(from) ? PyCell_GET(from) : nullptr;
        Py_XINCREF(v);
      }
      if (v == nullptr) {
        PyErr_Clear();
        return false;
      }
      owned.push_back(v);
      break;
    }
  }
  regs[load_register_[index]] = v;
  return true;
}

bool GuardProgram::run_check(const Check& c, const std::vector<PyObject*>& regs, std::string* why) {
  PyObject* v = regs[c.reg];
  if (v == nullptr) return false;
  PyObject* value = nullptr;  // new reference, or borrowed when owned == false
  bool owned = true;
  switch (c.accessor) {
    case Accessor::Self: value = v; owned = false; break;
    case Accessor::Type: value = reinterpret_cast<PyObject*>(Py_TYPE(v)); owned = false; break;
    case Accessor::Attr: value = PyObject_GetAttr(v, c.key); break;
    case Accessor::Item: value = stored_item(v, c.key); break;
    case Accessor::Cell:
      value = PyCell_Check(v) ? PyCell_GET(v) : nullptr;
      owned = false;
      if (value == nullptr) PyErr_SetString(PyExc_ValueError, "empty cell");
      break;
    case Accessor::Len: {
      Py_ssize_t n = PyObject_Size(v);
      value = n < 0 ? nullptr : PyLong_FromSsize_t(n);
      break;
    }
    case Accessor::Truth: value = as_bool(PyObject_IsTrue(v)); break;
    case Accessor::Contains: value = as_bool(PySequence_Contains(v, c.key)); break;
    case Accessor::HasAttr: value = as_bool(PyObject_HasAttr(v, c.key)); break;
    case Accessor::Keys:
      if (PyDict_CheckExact(v)) {
        PyObject* keys = PyDict_Keys(v);
        value = keys ? PyList_AsTuple(keys) : nullptr;
        Py_XDECREF(keys);
      } else if (PyDict_Check(v)) {
        // A subclass's own order (an OrderedDict's move_to_end leaves the dict's storage order).
        value = PySequence_Tuple(v);
      } else {
        PyErr_SetString(PyExc_TypeError, "not a dict");
      }
      break;
    case Accessor::Content: value = PyFrozenSet_New(v); break;
  }
  bool ok = false;
  if (value == nullptr) {
    ok = c.expect == Expect::Raises && PyErr_ExceptionMatches(c.expected);
    std::string err = current_error();
    if (!ok && why) *why = c.description + " (raised " + err + ")";
    return ok;
  }
  switch (c.expect) {
    case Expect::Value: ok = values_equal(value, c.expected); break;
    case Expect::Id: ok = value == c.expected; break;
    case Expect::Type: ok = reinterpret_cast<PyObject*>(Py_TYPE(value)) == c.expected; break;
    case Expect::Raises: ok = false; break;
    case Expect::Method: ok = is_bound_method(value, PyTuple_GET_ITEM(c.expected, 0), PyTuple_GET_ITEM(c.expected, 1)); break;
    case Expect::Ids: {
      PyObject* seq = PySequence_Fast(value, "");
      if (seq == nullptr) {
        PyErr_Clear();
        break;
      }
      Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
      ok = n == PyTuple_GET_SIZE(c.expected);
      if (ok && c.accessor == Accessor::Content) {
        for (Py_ssize_t i = 0; ok && i < n; ++i) ok = PySet_Contains(value, PyTuple_GET_ITEM(c.expected, i)) == 1;
      } else {
        for (Py_ssize_t i = 0; ok && i < n; ++i)
          ok = PySequence_Fast_GET_ITEM(seq, i) == PyTuple_GET_ITEM(c.expected, i);
      }
      PyErr_Clear();
      Py_DECREF(seq);
      break;
    }
    case Expect::Tensor: ok = THPVariable_Check(value); break;
    case Expect::Same: ok = value == regs[c.other]; break;
  }
  if (owned) Py_DECREF(value);
  if (!ok && why) *why = c.description;
  return ok;
}

bool GuardProgram::watched_instances_unchanged() const {
  for (const WatchedInstance& w : watched_instances_)
    if (Py_TYPE(w.object) != w.type || *w.dict_slot != w.dict) return false;
  return true;
}

bool GuardProgram::versions_unchanged() const {
  const std::size_t nd = fast_dicts_.size();
  for (std::size_t i = 0; i < nd; ++i) {
    if (i + 8 < nd) __builtin_prefetch(fast_dicts_[i + 8].dict);
    if (dict_version(fast_dicts_[i].dict) != fast_dicts_[i].version) return false;
  }
  const std::size_t ni = fast_instances_.size();
  for (std::size_t i = 0; i < ni; ++i) {
    if (i + 8 < ni) {
      __builtin_prefetch(fast_instances_[i + 8].object);
      __builtin_prefetch(fast_instances_[i + 8].dict);
    }
    const InstanceVersion& f = fast_instances_[i];
    if (Py_TYPE(f.object) != f.type || f.type->tp_version_tag != f.type_version || *f.dict_slot != f.dict ||
        dict_version(f.dict) != f.version)
      return false;
  }
  return true;
}

void GuardProgram::remember_fast_versions() {
  fast_dicts_.clear();
  fast_instances_.clear();
  slow_groups_.clear();
  watched_instances_.clear();
  for (std::size_t i = 0; i < groups_.size(); ++i) {
    const Group& g = groups_[i];
    PyObject* object = pinned_[g.reg];
    if (g.watched && !PyDict_Check(object)) {
      if (PyObject** slot = _PyObject_GetDictPtr(object)) watched_instances_.push_back({object, g.type, slot, g.dict});
    }
    if (!g.versioned || !g.validated) {
      slow_groups_.push_back(static_cast<int>(i));
    } else if (PyDict_Check(object)) {
      fast_dicts_.push_back({object, g.dict_version});
    } else if (g.dict != nullptr && g.type_version != 0) {
      PyObject** slot = _PyObject_GetDictPtr(object);
      if (slot == nullptr) {
        slow_groups_.push_back(static_cast<int>(i));
        continue;
      }
      fast_instances_.push_back({object, g.type, g.type_version, slot, g.dict, g.dict_version});
    } else {
      slow_groups_.push_back(static_cast<int>(i));
    }
  }
  fast_valid_ = true;
}

bool GuardProgram::group_unchanged(const Group& g, PyObject* object) const {
  if (!g.versioned || !g.validated || Py_TYPE(object) != g.type) return false;
  if (PyDict_Check(object)) return dict_version(object) == g.dict_version;
  if (g.type_version == 0 || g.type->tp_version_tag != g.type_version || g.dict == nullptr) return false;
  PyObject** dict = _PyObject_GetDictPtr(object);
  return dict != nullptr && *dict == g.dict && dict_version(g.dict) == g.dict_version;
}

void GuardProgram::remember_versions(Group& g, PyObject* object) {
  g.type = Py_TYPE(object);
  g.dict = nullptr;
  g.validated = true;
  if (PyDict_Check(object)) {
    g.dict_version = dict_version(object);
    return;
  }
  g.type_version = type_version(g.type);
  PyObject** dict = _PyObject_GetDictPtr(object);
  if (dict != nullptr && *dict != nullptr && PyDict_CheckExact(*dict)) {
    g.dict = *dict;
    g.dict_version = dict_version(*dict);
  }
}

GuardProgram::HitProfile GuardProgram::hit_profile() const {
  int watched = 0;
  for (const Group& g : groups_) watched += g.watched ? 1 : 0;
  return {static_cast<int>(pinned_tensors_.size()), watched, static_cast<int>(groups_.size()) - watched,
          static_cast<int>(slow_groups_.size()), dirty_};
}

bool GuardProgram::check_pinned_tensors(std::vector<at::Tensor>& inputs, std::string* why) {
  const std::size_t n = pinned_tensors_.size();
  for (std::size_t i = 0; i < n; ++i) {
    // The tensors' metadata lie all over the heap: load ahead, the tensor
    // eight checks on, and the storage (its data pointer) of the one four on.
    if (i + 8 < n) {
      const c10::TensorImpl* ahead = tensors_[pinned_tensors_[i + 8]].pinned.unsafeGetTensorImpl();
      __builtin_prefetch(ahead);
      __builtin_prefetch(reinterpret_cast<const char*>(ahead) + 64);
      __builtin_prefetch(reinterpret_cast<const char*>(ahead) + 128);
    }
    if (i + 4 < n) {
      const c10::Storage& storage = tensors_[pinned_tensors_[i + 4]].pinned.unsafeGetTensorImpl()->unsafe_storage();
      if (storage) __builtin_prefetch(storage.unsafeGetStorageImpl());
    }
    const TensorCheck& t = tensors_[pinned_tensors_[i]];
    if (!t.guard.matches(t.pinned)) {
      if (why) *why = t.description + ": " + t.guard.mismatch(t.pinned);
      return false;
    }
    at::Tensor& slot = inputs[t.input];
    if (slot.unsafeGetTensorImpl() != t.pinned.unsafeGetTensorImpl()) slot = t.pinned;
  }
  return true;
}

bool GuardProgram::run(PyObject* args, PyObject* kwargs, std::vector<at::Tensor>* inputs, std::string* why) {
  if (global_) {
    GlobalState now = GlobalState::now();
    if (!(now == *global_)) {
      if (why) *why = now.difference(*global_) + " changed";
      return false;
    }
  }
  if (positional_ >= 0) {
    Py_ssize_t nkw = (kwargs == nullptr || kwargs == Py_None) ? 0 : PyDict_GET_SIZE(kwargs);
    bool same = args != nullptr && PyTuple_GET_SIZE(args) == positional_ &&
                nkw == static_cast<Py_ssize_t>(keywords_.size());
    for (std::size_t i = 0; same && i < keywords_.size(); ++i) same = PyDict_Contains(kwargs, keywords_[i]) == 1;
    if (!same) {
      PyErr_Clear();
      if (why) *why = "the call passes other arguments or keywords";
      return false;
    }
  }
  // The registers start as the pinned objects; argument registers are written
  // by the loads. A re-entrant check (a property that calls a compiled
  // function) takes a copy of its own.
  std::vector<PyObject*> local;
  if (busy_) local = pinned_;
  std::vector<PyObject*>& regs = busy_ ? local : registers_;
  if (regs.size() != pinned_.size()) regs = pinned_;
  struct Busy {
    bool& flag;
    bool was;
    ~Busy() { flag = was; }
  } busy{busy_, busy_};
  busy_ = true;
  std::vector<PyObject*> owned;
  struct Release {
    std::vector<PyObject*>& v;
    ~Release() {
      for (PyObject* p : v) Py_DECREF(p);
    }
  } release{owned};
  inputs->resize(num_inputs_);
  std::vector<PyObject*> input_objects(distinct_.empty() ? 0 : num_inputs_, nullptr);
  for (const Step& s : steps_) {
    switch (s.kind) {
      case Step::Kind::Load:
        if (!load(s.index, args, kwargs, regs, owned)) {
          if (why) *why = "an argument has a different structure";
          return false;
        }
        break;
      case Step::Kind::Check:
        if (!run_check(checks_[s.index], regs, why)) return false;
        break;
      case Step::Kind::Tensor: {
        const TensorCheck& t = tensors_[s.index];
        PyObject* v = regs[t.reg];
        if (!t.pinned.defined() && (v == nullptr || !THPVariable_Check(v))) {
          if (why) *why = t.description + ": not a tensor";
          return false;
        }
        const at::Tensor& tensor = t.pinned.defined() ? t.pinned : THPVariable_Unpack(v);
        if (!t.guard.matches(tensor)) {
          if (why) *why = t.description + ": " + t.guard.mismatch(tensor);
          return false;
        }
        // Copying a tensor that Python owns goes through the interpreter
        // (about 20 ns each way): a caller that reuses `inputs` keeps the
        // parameters' slots from call to call.
        at::Tensor& slot = (*inputs)[t.input];
        if (slot.unsafeGetTensorImpl() != tensor.unsafeGetTensorImpl()) slot = tensor;
        if (!input_objects.empty()) input_objects[t.input] = v;
        break;
      }
    }
  }
  if (!check_pinned_tensors(*inputs, why)) return false;
  for (std::size_t i = 0; i < distinct_.size(); ++i)
    for (std::size_t j = 0; j < i; ++j)
      if (input_objects[distinct_[i]] != nullptr && input_objects[distinct_[i]] == input_objects[distinct_[j]]) {
        if (why) *why = "the same tensor is passed where the capture had two";
        return false;
      }
  // Assigning an object's __class__ or __dict__ changes no watched dict or
  // type: the watched objects' own type and dict are compared each call.
  if (!dirty_ && !watched_instances_unchanged()) dirty_ = true;
  const bool clean = !dirty_ && why == nullptr;
  if (clean && unwatched_valid_ && watching_available()) {
    // Nothing watched changed: only the groups no watcher covers.
    for (int gi : unwatched_) {
      Group& g = groups_[gi];
      PyObject* object = pinned_[g.reg];
      if (group_unchanged(g, object)) continue;
      for (int c = g.first_check; c < g.end_check; ++c)
        if (!run_check(checks_[c], regs, why)) return false;
      remember_versions(g, object);
    }
    return true;
  }
  // Without watchers (CPython 3.11), or after a watched object changed: the
  // versions of all groups, from flat arrays read ahead of use.
  if (why == nullptr && fast_valid_ && versions_unchanged()) {
    for (int gi : slow_groups_) {
      Group& g = groups_[gi];
      for (int c = g.first_check; c < g.end_check; ++c)
        if (!run_check(checks_[c], regs, why)) return false;
    }
    dirty_ = false;
    return true;
  }
  const std::size_t n = groups_.size();
  for (std::size_t i = 0; i < n; ++i) {
    Group& g = groups_[i];
    if (clean && g.watched) continue;
    if (i + 8 < n) {
      // The objects are scattered over the heap: ask for later groups' memory
      // now, so that the loads overlap instead of waiting one by one.
      const Group& ahead = groups_[i + 8];
      __builtin_prefetch(pinned_[ahead.reg]);
      if (ahead.dict != nullptr) __builtin_prefetch(ahead.dict);
    }
    PyObject* object = pinned_[g.reg];
    if (g.validated && g.versioned && Py_TYPE(object) == g.type && PyDict_Check(object) &&
        dict_version(object) == g.dict_version)
      continue;  // the common case of group_unchanged, inline
    if (group_unchanged(g, object)) continue;
    for (int c = g.first_check; c < g.end_check; ++c)
      if (!run_check(checks_[c], regs, why)) return false;
    if (why == nullptr) {
      const PyObject* old_dict = g.dict;
      const PyTypeObject* old_type = g.type;
      remember_versions(g, object);
      if (g.watched && (g.dict != old_dict || g.type != old_type)) {
        g.watched = false;  // a new __dict__ or __class__: watch those instead
        unwatched_valid_ = false;
      }
      watch(g, object);
    }
  }
  if (why == nullptr) {
    dirty_ = false;
    remember_fast_versions();
    if (!unwatched_valid_) {
      unwatched_.clear();
      for (std::size_t i = 0; i < n; ++i)
        if (!groups_[i].watched) unwatched_.push_back(static_cast<int>(i));
      unwatched_valid_ = true;
    }
  }
  return true;
}

}  // namespace dv::capture
