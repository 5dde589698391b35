// Guards: the conditions under which a captured plan is valid, checked in C++
// on every call.
//
// A GuardProgram is compiled from the Python-state monitor's nodes
// (python/deepvisor/_guards.py). It has two parts:
//
// - Argument steps, run on every call: load an argument (or an attribute or
//   item of an argument-derived value) into a register, then check it: its
//   value, type, identity, or, for a tensor, its metadata (the tensor then
//   becomes one of the plan's inputs).
// - Pinned groups: the checks on one pre-existing object (the module, a
//   submodule, a dict, a closure cell...). A group whose object is unchanged
//   since the last call that passed (same type and type version, same
//   instance dict and dict version) is skipped: CPython gives every
//   dict mutation a new version tag and every type change a new type
//   version. Otherwise its checks run one by one and, if they pass, the
//   versions are remembered again. Where the interpreter can watch dicts and
//   types (CPython 3.12), a program whose watched objects have not changed
//   since its last passing check skips its groups altogether.
//
// Global torch state (grad mode, default dtype, autocast...) is checked too.
// Everything runs with the GIL held.
#pragma once

#include <Python.h>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace dv::capture {

struct TensorGuard {
  // In sizes or strides: any value (a symbolic size of a dynamic-shape plan).
  static constexpr std::int64_t kAnyInt = -1;
  c10::ScalarType dtype;
  c10::Device device;
  std::vector<std::int64_t> sizes;
  std::vector<std::int64_t> strides;
  bool aligned16;      // the plan assumes a 16-byte aligned data pointer
  bool requires_grad;
  // Whether requires_grad matters: only when the plan was captured with grad
  // mode on (the global state guard pins grad mode), so that under no_grad
  // the check skips the autograd metadata (a cache line per parameter).
  bool check_requires_grad = true;
  static TensorGuard of(const at::Tensor& t);
  // "" if `t` satisfies the guard, else the first difference.
  std::string mismatch(const at::Tensor& t) const;
  bool matches(const at::Tensor& t) const;
};

// What a check reads from a value.
enum class Accessor : std::uint8_t {
  Self,      // the value itself
  Attr,      // getattr(v, key)
  Item,      // v[key]
  Cell,      // v.cell_contents
  Len,       // len(v)
  Truth,     // bool(v)
  Contains,  // key in v
  HasAttr,   // hasattr(v, key)
  Keys,      // tuple(v.keys()) for a dict
  Content,   // frozenset(v) or tuple(v) for a set
  Type,      // type(v)
};

// What the read must give.
enum class Expect : std::uint8_t {
  Value,   // equal, with the same exact type (recursively for tuples; floats bit for bit)
  Id,      // the same object
  Type,    // an object of exactly this type
  Raises,  // the read raises an instance of this exception type
  Method,  // a bound method of this function and this self (expected: (func, self); a builtin method: func is one)
  Ids,     // a tuple whose items are these objects, in order
  Tensor,  // a tensor (its own node checks it)
  Same,    // the same object as register `other`
};

struct GlobalState {
  bool grad_enabled = false;
  bool inference_mode = false;
  c10::ScalarType default_dtype = c10::ScalarType::Float;
  bool deterministic = false;
  bool autocast_cpu = false;
  bool autocast_cuda = false;
  c10::ScalarType autocast_cpu_dtype = c10::ScalarType::BFloat16;
  c10::ScalarType autocast_cuda_dtype = c10::ScalarType::Half;
  // ATen's float32 precision for each (backend, op) pair it keeps one for
  // (torch.backends.*.fp32_precision; allow_tf32 and
  // set_float32_matmul_precision set them too): whether cuBLAS, cuDNN and
  // oneDNN may compute float32 in TF32 or bf16. Read per op, never through
  // the legacy allow_tf32 getter, which raises once conv and rnn differ.
  std::array<std::uint8_t, 9> fp32_precision{};
  // cuBLAS's reduced-precision reductions (f16, bf16: CuBLASReductionOption)
  // and f16 accumulation, which a captured GEMM keeps.
  std::uint8_t cublas_f16_reduction = 0, cublas_bf16_reduction = 0;
  bool cublas_f16_accumulation = false;
  bool cudnn_deterministic = false;  // passed to the convolutions a plan runs
  // Whether cuDNN and oneDNN may run, and cuDNN's benchmark mode: the
  // functional wrappers pass them to ATen as arguments (F.batch_norm's
  // cudnn_enabled), which a capture records, and programs branch on them.
  bool cudnn_enabled = true, cudnn_benchmark = false, mkldnn_enabled = true;
  // The scaled_dot_product_attention backends allowed (a bit each, and
  // the fp16/bf16 reduction of the math one) and their priority order: a
  // capture records the kernel eager chose under them (flash, efficient...),
  // which a plan then calls whatever they say (sdpa_kernel, enable_*_sdp).
  std::uint8_t sdp_backends = 0;
  std::array<std::int8_t, 5> sdp_priority{};
  // Torch function modes on the stack, and the default device that
  // factories without a device use (torch.set_default_device and
  // `with torch.device(...)`: a DeviceContext mode). A plan holds the
  // devices its factories ran on; under any other mode a call runs eagerly
  // (CompiledFunction.__call__).
  std::int64_t torch_function_modes = 0;
  std::optional<c10::Device> default_device;
  static GlobalState now();
  bool operator==(const GlobalState& o) const = default;
  std::string difference(const GlobalState& o) const;
};

class GuardProgram {
 public:
  GuardProgram();
  ~GuardProgram();
  GuardProgram(const GuardProgram&) = delete;
  GuardProgram& operator=(const GuardProgram&) = delete;

  // -- building (registers are numbered from 0 in order of creation) --------
  int load_arg(int index);
  int load_kwarg(PyObject* name);
  int load_pinned(PyObject* object);
  // A register holding `accessor` applied to register `from` (arguments only).
  int load_access(int from, Accessor accessor, PyObject* key);
  // Starts the group of checks on pinned register `reg`; checks added until
  // end_group() belong to it. `versioned`: all its reads are covered by the
  // object's type and instance dict (or, for a dict, its own version), so the
  // group may be skipped while those are unchanged.
  void begin_group(int reg, bool versioned);
  void end_group();
  void add_check(int reg, Accessor accessor, PyObject* key, Expect expect, PyObject* expected, int other,
                 std::string description);
  // Register `reg` holds graph input `input`, which must match `guard`.
  void add_tensor(int reg, int input, TensorGuard guard, std::string description);
  // Arguments-derived inputs that were distinct objects at capture must stay distinct.
  void add_distinct_inputs(std::vector<int> inputs);
  void set_global_state(GlobalState state) { global_ = state; }
  // The call passes `positional` arguments and exactly these keyword names.
  void set_arguments(int positional, std::vector<std::string> keywords);

  // -- running ---------------------------------------------------------------
  // True if the guards pass for this call; fills `inputs` (one per graph input).
  bool check(PyObject* args, PyObject* kwargs, std::vector<at::Tensor>& inputs);
  // Why check() fails for this call ("" if it passes). Does not update versions.
  std::string explain_failure(PyObject* args, PyObject* kwargs);

  // Drops the argument tensors from `inputs` (kept for the next call, the
  // parameters' slots must not hold the caller's tensors alive).
  void release_arguments(std::vector<at::Tensor>& inputs) const;

  int num_checks() const { return static_cast<int>(checks_.size() + tensors_.size()); }
  int num_inputs() const { return num_inputs_; }
  int num_groups() const { return static_cast<int>(groups_.size()); }
  // What a cache hit walks (for the guard benchmark): pinned tensors, groups
  // a watcher covers, groups checked on every hit, and whether a watched
  // object changed since the last passing check.
  struct HitProfile {
    int pinned_tensors, watched_groups, unwatched_groups, unversioned_groups;
    bool dirty;
  };
  HitProfile hit_profile() const;

 private:
  struct Load {
    enum class Kind : std::uint8_t { Arg, Kwarg, Pinned, Access } kind;
    int index = 0;
    int from = -1;
    Accessor accessor = Accessor::Self;
    PyObject* key = nullptr;  // strong
  };
  struct Check {
    int reg;
    Accessor accessor;
    PyObject* key;       // strong or null
    Expect expect;
    PyObject* expected;  // strong or null
    int other;
    std::string description;
  };
  struct TensorCheck {
    int reg;
    int input;
    TensorGuard guard;
    std::string description;
    at::Tensor pinned;  // the tensor itself when the register is pinned (no Python object to go through)
  };
  // A step of the argument part: a load, its checks, its tensors.
  struct Step {
    enum class Kind : std::uint8_t { Load, Check, Tensor } kind;
    int index;
  };
  struct Group {
    int reg;
    int first_check, end_check;  // [first, end) in checks_
    // The versions seen when the group last passed (0: not yet).
    PyObject* dict = nullptr;  // borrowed: the object's instance dict (held by the object)
    std::uint64_t dict_version = 0;
    PyTypeObject* type = nullptr;
    unsigned int type_version = 0;
    bool validated = false;
    bool versioned = true;
    bool watched = false;  // its dict (and type) are watched: a change marks the program dirty
  };

  bool run(PyObject* args, PyObject* kwargs, std::vector<at::Tensor>* inputs, std::string* why);
  int add_load(Load load);
  bool load(int index, PyObject* args, PyObject* kwargs, std::vector<PyObject*>& regs,
            std::vector<PyObject*>& owned);
  bool run_check(const Check& c, const std::vector<PyObject*>& regs, std::string* why);
  bool group_unchanged(const Group& g, PyObject* object) const;
  bool check_pinned_tensors(std::vector<at::Tensor>& inputs, std::string* why);
  void remember_versions(Group& g, PyObject* object);

  std::vector<Load> loads_;
  std::vector<int> load_register_;  // loads_[i] writes register load_register_[i]
  int num_registers_ = 0;
  std::vector<Check> checks_;
  std::vector<TensorCheck> tensors_;
  std::vector<Step> steps_;
  std::vector<Group> groups_;
  std::vector<PyObject*> pinned_;  // register -> pinned object (strong), nullptr otherwise
  std::vector<PyObject*> registers_;  // reused by check(): the pinned objects and this call's values
  bool busy_ = false;
  int open_group_ = -1;
  bool dirty_ = true;  // a watched object may have changed since the last passing check
  std::vector<int> unwatched_;    // the groups no watcher covers (valid after a full pass)
  bool unwatched_valid_ = false;
  std::vector<int> pinned_tensors_;  // tensors_ indices of pinned tensors
  // The versions every versioned group passed with, in flat arrays, so that
  // an unchanged state is confirmed by one tight loop (without watchers).
  struct DictVersion {
    PyObject* dict;
    std::uint64_t version;
  };
  struct InstanceVersion {
    PyObject* object;
    PyTypeObject* type;
    unsigned int type_version;
    PyObject** dict_slot;
    PyObject* dict;
    std::uint64_t version;
  };
  std::vector<DictVersion> fast_dicts_;
  std::vector<InstanceVersion> fast_instances_;
  // The watched instances' type and dict, which no watcher covers (valid with fast_valid_).
  struct WatchedInstance {
    PyObject* object;
    PyTypeObject* type;
    PyObject** dict_slot;
    PyObject* dict;
  };
  std::vector<WatchedInstance> watched_instances_;
  bool watched_instances_unchanged() const;
  std::vector<int> slow_groups_;  // groups no version covers
  bool fast_valid_ = false;
  bool versions_unchanged() const;
  void remember_fast_versions();
  std::vector<PyObject*> watching_;  // objects this program is registered on

 public:
  // A watched dict or type is about to change (called by the interpreter's watchers).
  static void on_change(PyObject* watched);

 private:
  void watch(Group& g, PyObject* object);
  int num_inputs_ = 0;
  std::vector<int> distinct_;
  std::vector<int> argument_inputs_;  // inputs read from the arguments (not pinned)
  std::optional<GlobalState> global_;
  int positional_ = -1;
  std::vector<PyObject*> keywords_;  // strong (interned str)
};

}  // namespace dv::capture
