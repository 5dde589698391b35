// The in-memory cache of compiled plans for one compiled function and one
// shape of its non-tensor arguments: entries are tried in order, the first
// whose guards pass runs.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "capture/guards.h"
#include "runtime/executor.h"

namespace dv::capture {

class GraphCache {
 public:
  struct Entry {
    GuardSet guards;  // over the arguments followed by the constants
    std::shared_ptr<runtime::Executor> executor;
    std::vector<at::Tensor> constants;  // tensors the program read that were not arguments
  };

  // Adds a plan valid for `arguments` (and the entry's constants as they are now).
  void add(std::shared_ptr<runtime::Executor> executor, const std::vector<at::Tensor>& arguments,
           std::vector<at::Tensor> constants);

  // Runs the first entry whose guards pass: (its index, the outputs); nullopt on a miss.
  std::optional<std::pair<int, std::vector<at::Tensor>>> run(const std::vector<at::Tensor>& arguments);

  // For logging a miss: why each entry rejected these arguments.
  std::vector<std::string> explain_miss(const std::vector<at::Tensor>& arguments) const;

  std::size_t size() const { return entries_.size(); }
  const std::vector<Entry>& entries() const { return entries_; }

 private:
  std::vector<Entry> entries_;
};

}  // namespace dv::capture
