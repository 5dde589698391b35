#include "capture/graph_cache.h"

namespace dv::capture {

namespace {
std::vector<at::Tensor> with_constants(const std::vector<at::Tensor>& arguments, const std::vector<at::Tensor>& constants) {
  std::vector<at::Tensor> all;
  all.reserve(arguments.size() + constants.size());
  all.insert(all.end(), arguments.begin(), arguments.end());
  all.insert(all.end(), constants.begin(), constants.end());
  return all;
}
}  // namespace

void GraphCache::add(std::shared_ptr<runtime::Executor> executor, const std::vector<at::Tensor>& arguments,
                     std::vector<at::Tensor> constants) {
  Entry e;
  e.guards = GuardSet::from_tensors(with_constants(arguments, constants));
  e.executor = std::move(executor);
  e.constants = std::move(constants);
  entries_.push_back(std::move(e));
}

std::optional<std::pair<int, std::vector<at::Tensor>>> GraphCache::run(const std::vector<at::Tensor>& arguments) {
  for (std::size_t i = 0; i < entries_.size(); ++i) {
    Entry& e = entries_[i];
    if (!e.guards.check(arguments, e.constants)) continue;
    auto outputs = e.constants.empty() ? e.executor->run(arguments) : e.executor->run(with_constants(arguments, e.constants));
    return std::make_pair(static_cast<int>(i), std::move(outputs));
  }
  return std::nullopt;
}

std::vector<std::string> GraphCache::explain_miss(const std::vector<at::Tensor>& arguments) const {
  std::vector<std::string> out;
  for (const auto& e : entries_) out.push_back(e.guards.explain_failure(with_constants(arguments, e.constants)));
  return out;
}

}  // namespace dv::capture
