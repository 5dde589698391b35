#include "capture/plan_cache.h"

#include <algorithm>

namespace dv::capture {

int PlanCache::add(std::shared_ptr<GuardProgram> guards, std::shared_ptr<runtime::Executor> executor) {
  Entry e;
  e.id = next_id_++;
  e.guards = std::move(guards);
  e.executor = std::move(executor);
  entries_.push_back(std::move(e));
  return entries_.back().id;
}

PlanCache::Entry* PlanCache::find(int id) {
  for (Entry& e : entries_)
    if (e.id == id) return &e;
  return nullptr;
}

void PlanCache::remove(int id) {
  // A run on another thread holds what it uses by shared_ptr (see run()).
  entries_.erase(std::remove_if(entries_.begin(), entries_.end(), [id](const Entry& e) { return e.id == id; }),
                 entries_.end());
}

void PlanCache::make_eager(int id) {
  Entry* e = find(id);
  if (e == nullptr) return;
  e->executor = nullptr;
  e->dynamic_positions.clear();  // (the caller finds the plan's eager reason)
  e->instances->clear();
}

void PlanCache::set_dynamic(int id, std::vector<int> positions) {
  if (Entry* e = find(id)) e->dynamic_positions = std::move(positions);
}

void PlanCache::add_instance(int id, const std::vector<at::Tensor>& inputs,
                             std::shared_ptr<runtime::Executor> executor) {
  Entry* e = find(id);
  if (e == nullptr || e->dynamic_positions.empty()) return;
  (*e->instances)[layout_key(e->dynamic_positions, inputs)] = std::move(executor);
}

namespace {

// One dynamic input's part of a layout key: its rank, sizes and strides.
void append_layout(std::vector<std::int64_t>& key, c10::IntArrayRef sizes, c10::IntArrayRef strides) {
  key.push_back(static_cast<std::int64_t>(sizes.size()));
  key.insert(key.end(), sizes.begin(), sizes.end());
  key.insert(key.end(), strides.begin(), strides.end());
}

}  // namespace

void PlanCache::forget_instance(int id, const Layout& layout) {
  Entry* e = find(id);
  if (e == nullptr) return;
  std::vector<std::int64_t> key;
  for (const auto& [sizes, strides] : layout) append_layout(key, sizes, strides);
  e->instances->erase(key);
}

std::vector<std::int64_t> PlanCache::layout_key(const std::vector<int>& positions,
                                                const std::vector<at::Tensor>& inputs) {
  std::vector<std::int64_t> key;
  for (int p : positions) append_layout(key, inputs.at(p).sizes(), inputs.at(p).strides());
  return key;
}

std::optional<PlanCache::Hit> PlanCache::run(PyObject* args, PyObject* kwargs, std::size_t start) {
  failed_id_ = -1;
  std::vector<at::Tensor> local;
  for (std::size_t i = start; i < entries_.size(); ++i) {
    Entry& e = entries_[i];
    // Another thread running this plan without the GIL holds its inputs.
    std::shared_ptr<bool> busy = e.busy;
    std::shared_ptr<std::vector<at::Tensor>> kept = e.inputs;
    std::vector<at::Tensor>& inputs = *busy ? local : *kept;
    if (!e.guards->check(args, kwargs, inputs)) continue;
    // What the run needs stays alive without the GIL, when another thread may
    // add a plan (and move `entries_`) meanwhile: never touch `e` after.
    std::shared_ptr<runtime::Executor> executor = e.executor;
    std::shared_ptr<GuardProgram> guards = e.guards;
    const int id = e.id;
    if (executor == nullptr && !e.dynamic_positions.empty()) {
      auto it = e.instances->find(layout_key(e.dynamic_positions, inputs));
      if (it != e.instances->end() && it->second == nullptr) {  // its shape guards reject these sizes
        e.guards->release_arguments(inputs);
        continue;
      }
      if (it != e.instances->end()) executor = it->second;
    }
    if (executor == nullptr) {  // a version that runs from Python (a tree, a new instance) or eagerly
      Hit hit{static_cast<int>(i), id, {}, inputs};
      e.guards->release_arguments(inputs);
      return hit;
    }
    const bool own = &inputs == kept.get();
    if (own) *busy = true;
    std::vector<at::Tensor> outputs;
    PyThreadState* saved = PyEval_SaveThread();
    try {
      outputs = executor->run(inputs);
    } catch (...) {
      PyEval_RestoreThread(saved);
      guards->release_arguments(inputs);
      if (own) *busy = false;
      failed_id_ = id;
      throw;
    }
    PyEval_RestoreThread(saved);
    guards->release_arguments(inputs);
    if (own) *busy = false;
    return Hit{static_cast<int>(i), id, std::move(outputs), {}, true};
  }
  return std::nullopt;
}

std::vector<std::string> PlanCache::explain_miss(PyObject* args, PyObject* kwargs) {
  std::vector<std::string> out;
  for (const auto& e : entries_) out.push_back(e.guards->explain_failure(args, kwargs));
  return out;
}

}  // namespace dv::capture
