// The compiled plans of one compiled function: each a guard program and an
// executor. A call runs the first plan whose guards pass.
#pragma once

#include <Python.h>

#include <ATen/core/Tensor.h>

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
    std::shared_ptr<GuardProgram> guards;
    std::shared_ptr<runtime::Executor> executor;  // null: calls that pass these guards run eagerly
    // The inputs of the last call, reused by the next (most are parameters,
    // the same tensors every call); `busy` while a run uses them without the GIL.
    std::shared_ptr<std::vector<at::Tensor>> inputs = std::make_shared<std::vector<at::Tensor>>();
    std::shared_ptr<bool> busy = std::make_shared<bool>(false);
  };

  void add(std::shared_ptr<GuardProgram> guards, std::shared_ptr<runtime::Executor> executor);
  // Plan `index` runs eagerly from now on (its executor failed).
  void make_eager(int index);
  // The plan whose executor threw in the last run() that threw, or -1.
  int failed_index() const { return failed_index_; }

  // Checks the guards with the GIL held, then runs the first passing plan with
  // the GIL released: (its index, the outputs, the inputs it read), or nullopt
  // on a miss. Plans before `start` are skipped (the caller rejected an
  // earlier hit on a check of its own: a dynamic-shape plan's shape guards).
  struct Hit {
    int index;
    std::vector<at::Tensor> outputs;
    std::vector<at::Tensor> inputs;
  };
  std::optional<Hit> run(PyObject* args, PyObject* kwargs, std::size_t start = 0);

  // For logging a miss: why each plan rejected this call.
  std::vector<std::string> explain_miss(PyObject* args, PyObject* kwargs);

  std::size_t size() const { return entries_.size(); }
  const std::vector<Entry>& entries() const { return entries_; }

 private:
  std::vector<Entry> entries_;
  int failed_index_ = -1;
};

}  // namespace dv::capture
