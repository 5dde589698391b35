#include "runtime/constant_steps.h"

#include <algorithm>
#include <atomic>
#include <sstream>
#include <string>

#include "codegen/kept_constants.h"
#include "runtime/log.h"

namespace dv::runtime {

namespace {
std::atomic<std::uint64_t> g_data_accesses{0};
}  // namespace

void note_data_access() { g_data_accesses.fetch_add(1, std::memory_order_relaxed); }
std::uint64_t data_accesses() { return g_data_accesses.load(std::memory_order_relaxed); }

using codegen::Slot;
using codegen::Step;

namespace {

// Slots the plan hands back or writes elsewhere after its steps: they must
// be computed on each call.
std::vector<bool> slots_used_after_the_steps(const codegen::Program& p) {
  std::vector<bool> used(p.slots.size(), false);
  for (int s : p.output_slots)
    if (s >= 0) used[s] = true;
  for (auto [in, value] : p.mutation_slots) used[in] = used[value] = true;
  for (int s : p.restride_slots) used[s] = true;
  return used;
}

// How many steps write each slot.
std::vector<int> writers_of_slots(const codegen::Program& p) {
  std::vector<int> writers(p.slots.size(), 0);
  for (const Step& step : p.steps)
    for (int s : codegen::step_slots(p, step, /*written=*/true)) ++writers[s];
  return writers;
}

}  // namespace

ConstantSteps::ConstantSteps(const codegen::Program& p, const std::vector<bool>& constant_inputs,
                             bool within_eager_memory, codegen::PoolReservation pool)
    : program_(&p), within_eager_memory_(within_eager_memory), pool_(pool) {
  const std::vector<bool> used_after = slots_used_after_the_steps(p);
  const std::vector<int> writers = writers_of_slots(p);
  std::vector<bool> constant_slot(p.slots.size(), false);
  for (std::size_t s = 0; s < p.slots.size(); ++s) {
    const Slot& slot = p.slots[s];
    const auto gi = static_cast<std::size_t>(slot.graph_input);
    constant_slot[s] = slot.origin == Slot::Origin::GraphInput && gi < constant_inputs.size() && constant_inputs[gi];
  }
  constant_.assign(p.steps.size(), false);
  for (std::size_t i = 0; i < p.steps.size(); ++i) {  // steps come in dependency order
    const Step& step = p.steps[i];
    if (step.kind != Step::Kind::Kernel) continue;
    const ir::Kernel& k = p.kernels[step.kernel];
    bool qualifies = true;
    for (std::size_t b = 0; b < step.buffer_slots.size() && qualifies; ++b) {
      const int s = step.buffer_slots[b];
      if (k.buffers[b].read && !constant_slot[s]) qualifies = false;
      if (k.buffers[b].written && (used_after[s] || writers[s] != 1 || p.slots[s].origin != Slot::Origin::Kernel))
        qualifies = false;
    }
    if (!qualifies) continue;
    constant_[i] = true;
    for (std::size_t b = 0; b < step.buffer_slots.size(); ++b)
      if (k.buffers[b].written) constant_slot[step.buffer_slots[b]] = true;
  }
  adopt();
}

void ConstantSteps::adopt() {
  const codegen::Program& p = *program_;
  steps_ = 0;
  slots_.clear();
  sources_.clear();
  std::vector<int> sources;
  for (std::size_t i = 0; i < p.steps.size(); ++i) {
    if (!constant_[i]) continue;
    ++steps_;
    const Step& step = p.steps[i];
    const ir::Kernel& k = p.kernels[step.kernel];
    for (std::size_t b = 0; b < step.buffer_slots.size(); ++b) {
      const int s = step.buffer_slots[b];
      if (k.buffers[b].written) slots_.push_back(s);
      else if (p.slots[s].origin == Slot::Origin::GraphInput) sources.push_back(p.slots[s].graph_input);
    }
  }
  std::sort(sources.begin(), sources.end());
  sources.erase(std::unique(sources.begin(), sources.end()), sources.end());
  for (int gi : sources) sources_.push_back({gi});
  kept_.assign(slots_.size(), at::Tensor());
}

namespace {

bool is_float32_parameter(const at::Tensor& t) {
  return t.defined() && t.scalar_type() == at::kFloat && t.requires_grad() && t.is_leaf() && !t.is_view();
}

// Whether eager holds step `i`'s result from its first use to the end of the
// call: autocast's cache keeps the f16/bf16 cast of a float32 leaf that
// requires grad until its region ends (the plan records the cast at each use,
// with the cache off).
bool eager_holds_to_end(const codegen::Program& p, const Step& step, const std::vector<at::Tensor>& inputs) {
  const ir::Kernel& k = p.kernels[step.kernel];
  bool reads_parameter = false;
  for (std::size_t b = 0; b < step.buffer_slots.size(); ++b) {
    const Slot& slot = p.slots[step.buffer_slots[b]];
    if (k.buffers[b].written && slot.dtype != ir::DType::BFloat16 && slot.dtype != ir::DType::Float16) return false;
    if (!k.buffers[b].read) continue;
    if (slot.origin != Slot::Origin::GraphInput) return false;  // reads another constant step's result
    const auto gi = static_cast<std::size_t>(slot.graph_input);
    if (gi >= inputs.size() || !is_float32_parameter(inputs[gi])) return false;
    reads_parameter = true;
  }
  return reads_parameter;
}

std::string megabytes(std::int64_t bytes) {
  std::ostringstream os;
  os.precision(1);
  os << std::fixed << static_cast<double>(bytes) / (1 << 20) << " MB";
  return os.str();
}

}  // namespace

void ConstantSteps::choose(const std::vector<at::Tensor>& inputs) {
  if (chosen_) return;
  chosen_ = true;
  if (!within_eager_memory_ || steps_ == 0) return;
  const codegen::Program& p = *program_;
  std::vector<bool> holds(p.steps.size(), false);
  for (std::size_t i = 0; i < p.steps.size(); ++i)
    if (constant_[i]) holds[i] = eager_holds_to_end(p, p.steps[i], inputs);
  const codegen::KeptConstants choice = codegen::keep_within_eager_memory(p, constant_, holds, pool_);
  const std::size_t before = steps_;
  constant_ = choice.kept;
  adopt();
  not_kept_ = before - steps_;
  if (not_kept_ > 0)
    log_event("decisions", "constant kernels: " + std::to_string(not_kept_) + " of " + std::to_string(before) +
                               " run on every call, their results not kept, to hold the plan's estimated peak at " +
                               megabytes(choice.peak_bytes) + " (all kept: " + megabytes(choice.peak_bytes_all_kept) +
                               ", eager: " + megabytes(choice.eager_peak_bytes) + ")" +
                               (pool_.held_elsewhere > 0
                                    ? "; " + megabytes(pool_.held_elsewhere) +
                                          " of it held beside the pool (earlier segments' pools, their results' "
                                          "copies)"
                                    : std::string()));
}

bool ConstantSteps::stale(const std::vector<at::Tensor>& inputs) {
  const std::uint64_t accesses = data_accesses();
  bool changed = !computed_ || accesses != seen_data_accesses_;
  seen_data_accesses_ = accesses;
  for (Seen& seen : sources_) {
    const at::Tensor& t = inputs.at(seen.graph_input);
    // An inference tensor counts no versions: it may have changed unseen.
    if (t.defined() && t.is_inference()) changed = true;
    const void* data = t.defined() ? t.data_ptr() : nullptr;
    const std::int64_t version = t.defined() && !t.is_inference() ? static_cast<std::int64_t>(t._version()) : -1;
    if (data != seen.data || version != seen.version) changed = true;
    seen.data = data;
    seen.version = version;
  }
  computed_ = true;
  return changed;
}

// Each kept step's kernel (its text: loop IR with its sizes), where each of
// its buffers comes from (a graph input, or a kept result by position), then
// each kept result's dtype and layout.
std::string ConstantSteps::description() const {
  const codegen::Program& p = *program_;
  std::ostringstream out;
  for (std::size_t i = 0; i < p.steps.size(); ++i) {
    if (!constant_[i]) continue;
    const Step& step = p.steps[i];
    out << ir::to_string(p.kernels[step.kernel]) << "buffers:";
    for (int s : step.buffer_slots) {
      const auto kept = std::find(slots_.begin(), slots_.end(), s);
      if (kept != slots_.end()) out << " k" << (kept - slots_.begin());
      else out << " i" << p.slots[s].graph_input;
    }
    out << "\n";
  }
  for (int s : slots_) {
    const Slot& slot = p.slots[s];
    out << "kept " << ir::dtype_name(slot.dtype);
    for (auto n : slot.sizes) out << " " << n;
    out << " /";
    for (auto n : slot.strides) out << " " << n;
    out << "\n";
  }
  return out.str();
}

SharedConstants::Sources ConstantSteps::sources_now() const {
  SharedConstants::Sources out;
  for (const Seen& seen : sources_) out.emplace_back(seen.data, seen.version);
  return out;
}

namespace {

// An inference tensor counts no versions (-1): results from it are never shared.
bool versions_counted(const SharedConstants::Sources& sources) {
  return std::none_of(sources.begin(), sources.end(), [](const auto& s) { return s.second < 0; });
}

}  // namespace

bool ConstantSteps::adopt_from(SharedConstants& shared) {
  if (description_.empty()) description_ = description();
  const SharedConstants::Sources now = sources_now();
  return versions_counted(now) && shared.adopt(description_, now, seen_data_accesses_, kept_, written_);
}

void ConstantSteps::offer_to(SharedConstants& shared) const {
  const SharedConstants::Sources now = sources_now();
  if (!description_.empty() && versions_counted(now)) shared.offer(description_, now, seen_data_accesses_, kept_, written_);
}

bool SharedConstants::adopt(const std::string& key, const Sources& now, std::uint64_t data_accesses,
                            std::vector<at::Tensor>& kept, WrittenOnStream& written) {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto it = entries_.find(key);
  if (it == entries_.end() || it->second.sources != now || it->second.data_accesses != data_accesses ||
      it->second.kept.size() != kept.size())
    return false;
  kept = it->second.kept;
  written = it->second.written;
  return true;
}

void SharedConstants::offer(const std::string& key, Sources now, std::uint64_t data_accesses,
                            const std::vector<at::Tensor>& kept, const WrittenOnStream& written) {
  std::lock_guard<std::mutex> lock(mutex_);
  entries_[key] = Entry{std::move(now), data_accesses, kept, written};
}

std::vector<at::Tensor> ConstantSteps::kept_copy() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return kept_;
}

}  // namespace dv::runtime
