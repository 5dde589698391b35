// The compiled plans of one compiled function: each a guard program and an
// executor. A call runs the first plan whose guards pass. Plans are named by
// ids that stay theirs while others are added or removed (a position would
// name another plan once an earlier one is evicted).
#pragma once

#include <Python.h>

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "capture/guard_program.h"
#include "runtime/executor.h"

namespace dv::capture {

class PlanCache {
 public:
  struct Entry {
    int id = -1;
    std::shared_ptr<GuardProgram> guards;
    std::shared_ptr<runtime::Executor> executor;  // null: calls that pass these guards run eagerly
    // The inputs of the last call, reused by the next (most are parameters,
    // the same tensors every call); `busy` while a run uses them without the GIL.
    std::shared_ptr<std::vector<at::Tensor>> inputs = std::make_shared<std::vector<at::Tensor>>();
    std::shared_ptr<bool> busy = std::make_shared<bool>(false);
    // A dynamic-shape plan of one segment: the graph input positions of its
    // dynamic arguments, and per layout of those (sizes and strides) the
    // executor of that instance, or null where its shape guards reject the
    // layout (the call goes on to the next plan). A layout not seen yet
    // returns to Python, which compiles the instance and adds it.
    std::vector<int> dynamic_positions;
    std::shared_ptr<std::map<std::vector<std::int64_t>, std::shared_ptr<runtime::Executor>>> instances =
        std::make_shared<std::map<std::vector<std::int64_t>, std::shared_ptr<runtime::Executor>>>();
  };

  // Adds a plan after the others; returns its id.
  int add(std::shared_ptr<GuardProgram> guards, std::shared_ptr<runtime::Executor> executor);
  // Drops plan `id` (evicted); an unknown id is ignored, here and below.
  void remove(int id);
  // Plan `id` runs eagerly from now on (its executor failed).
  void make_eager(int id);
  // Plan `id` (no executor of its own) is a dynamic-shape plan whose
  // instances follow the layouts of the inputs at `positions`.
  void set_dynamic(int id, std::vector<int> positions);
  // The instance of plan `id` for the layout of these inputs (null: rejected).
  void add_instance(int id, const std::vector<at::Tensor>& inputs, std::shared_ptr<runtime::Executor> executor);
  // Per dynamic input: its sizes and strides.
  using Layout = std::vector<std::pair<std::vector<std::int64_t>, std::vector<std::int64_t>>>;
  // Forgets plan `id`'s instance for this layout (Python dropped it).
  void forget_instance(int id, const Layout& layout);
  // The plan whose executor threw in the last run() that threw, or -1.
  int failed_id() const { return failed_id_; }

  // Checks the guards with the GIL held, then runs the first passing plan with
  // the GIL released: (its index, the outputs, the inputs it read), or nullopt
  // on a miss. Plans before `start` are skipped (the caller rejected an
  // earlier hit on a check of its own: a dynamic-shape plan's shape guards).
  struct Hit {
    int index;  // its position (where to go on from), then its id
    int id;
    std::vector<at::Tensor> outputs;
    std::vector<at::Tensor> inputs;
    bool ran = false;  // an executor ran (else the caller runs the plan from `inputs`)
  };
  std::optional<Hit> run(PyObject* args, PyObject* kwargs, std::size_t start = 0);

  // For logging a miss: why each plan rejected this call.
  std::vector<std::string> explain_miss(PyObject* args, PyObject* kwargs);

  std::size_t size() const { return entries_.size(); }
  const std::vector<Entry>& entries() const { return entries_; }

 private:
  static std::vector<std::int64_t> layout_key(const std::vector<int>& positions, const std::vector<at::Tensor>& inputs);
  Entry* find(int id);
  std::vector<Entry> entries_;
  int next_id_ = 0;
  int failed_id_ = -1;
};

}  // namespace dv::capture
